"""The engine contract, and :class:`TransportEngine`: the one engine every backend runs on.

:class:`Engine` is what a backend must provide: :meth:`~Engine.run` and :meth:`~Engine.stop`
(and :meth:`~Engine.serve` for applications that run an event loop, which by default runs
:meth:`~Engine.run` in a thread). :class:`TransportEngine` implements them over any
:class:`~balog.transports.base.Transport`, so a package that ships only a transport gets a working
engine; every built-in engine is a *named configuration* of it (the transport class it builds,
and a few defaults), never a fork of its pipeline.

Inside, three parts keep their own state:

- the **pipeline** (``_pipeline.py``): decode, validate, upcast, route, call the consumers
  through the operator (awaiting async ones), and decide an outcome;
- the **settler** (``_settler.py``): the one path by which an outcome reaches the transport (ack,
  batched through ``ack_many`` where the transport has a batch call; nack with a delay; dead
  letter with the reason), counting each outcome once done;
- the **lease keeper** (``_leases.py``): every delivery the engine holds, running or waiting,
  keeps its lease until it is settled, through :meth:`~Engine.stop` too.

The workers that drive them, one or more threads per topic, are in ``_runner.py``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import random
import signal
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from types import FrameType, MappingProxyType, TracebackType
from typing import TYPE_CHECKING, Any, ClassVar

from balog import _plugins
from balog._options import unknown_option
from balog.consumers import Consumer, ConsumerHub, ConsumerOperator, DefaultConsumerOperator
from balog.engines._leases import LeaseKeeper
from balog.engines._pipeline import Pipeline, describe
from balog.engines._settler import Counts, EngineStats
from balog.events import DEFAULT_MAX_DEPTH, EventDict, SchemaRegistry
from balog.exceptions import BalogError, ConfigurationError, ConsumerError, TransportError
from balog.transports.base import Transport

if TYPE_CHECKING:
    from balog.engines._runner import Worker

__all__ = ["Backoff", "Engine", "EngineStats", "TransportEngine"]

logger = logging.getLogger("balog.engine")

DefaultEventHandler = Callable[[EventDict], Any]

_DEFAULT: Any = object()
"""Marks an option the caller did not give (``None`` can be a value of its own)."""


@dataclasses.dataclass(frozen=True)
class Backoff:
    """Delay before attempt ``n + 1`` after ``n`` failures: ``base * factor ** (n - 1)``.

    Capped at ``maximum`` seconds, then spread by up to ``jitter`` (a fraction) either way so that
    failed messages do not come back in lockstep.
    """

    base: float = 1.0
    factor: float = 2.0
    maximum: float = 300.0
    jitter: float = 0.1

    def delay(self, failures: int) -> float:
        raw = min(self.maximum, self.base * self.factor ** max(failures - 1, 0))
        if self.jitter:
            raw *= random.uniform(1.0 - self.jitter, 1.0 + self.jitter)
        return max(0.0, raw)


class Engine(ABC):
    """Runs the consumers of a :class:`~balog.consumers.ConsumerHub` against a backend.

    ``consumer_operator`` decides each consumer's topic and how it is called; it defaults to
    :class:`~balog.consumers.DefaultConsumerOperator`.
    """

    def __init__(self, hub: ConsumerHub, consumer_operator: ConsumerOperator | None = None) -> None:
        if not isinstance(hub, ConsumerHub):
            raise ConfigurationError(f"hub must be a ConsumerHub, not {type(hub).__name__}")
        self.hub = hub
        self.consumer_operator: ConsumerOperator = consumer_operator or DefaultConsumerOperator()

    @abstractmethod
    def run(self) -> None:
        """Process events until :meth:`stop`, SIGTERM or Ctrl-C; return once in-flight work ends.

        Raises a fatal :class:`~balog.exceptions.BalogError` (one whose class has ``fatal``
        set) when the backend refuses what retrying cannot fix.
        """

    @abstractmethod
    def stop(self) -> None:
        """Ask :meth:`run` to return. Thread-safe; returns at once, without waiting. A stop that
        arrives before :meth:`run` starts makes that run return at once."""

    async def serve(self) -> None:
        """Run inside an application's event loop until :meth:`stop` or cancellation.

        The default runs :meth:`run` in a thread; :class:`TransportEngine` also runs async
        consumers on the caller's loop.
        """
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(None, self.run)
        try:
            await asyncio.shield(future)
        except asyncio.CancelledError:
            self.stop()
            await future
            raise

    def close(self) -> None:
        """Release the engine's resources. Idempotent."""

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    async def __aenter__(self) -> Engine:
        """``async with engine:`` serves in the background for the block's duration."""
        self._serving = asyncio.get_running_loop().create_task(self.serve())
        await asyncio.sleep(0)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        task: asyncio.Task[None] | None = getattr(self, "_serving", None)
        self.stop()
        try:
            if task is not None:
                await task
        finally:
            self.close()


def _number(name: str, value: Any, *, minimum: float, integer: bool = False) -> Any:
    """``value`` checked to be a number (an int where ``integer``) of at least ``minimum``."""
    kind = "a whole number" if integer else "a number"
    ok = isinstance(value, int if integer else (int, float)) and not isinstance(value, bool)
    if not ok or (isinstance(value, float) and math.isnan(value)):
        raise ConfigurationError(f"{name} must be {kind}, not {value!r}")
    if value < minimum:
        raise ConfigurationError(f"{name} must be at least {minimum:g}, not {value!r}")
    return value


class TransportEngine(Engine):
    """An engine over any transport: one or more workers per topic, one pipeline.

    ``transport`` is a :class:`~balog.transports.base.Transport`, or a transport name built with
    ``transport_options`` and the keyword options the engine does not take itself; a named
    engine (``SQSEngine``, ``KombuEngine``, ...) builds its :attr:`transport_class` from them. The
    engine closes a transport it built, never one it was given. An option neither the engine nor
    the transport takes is a :class:`~balog.exceptions.ConfigurationError` naming the nearest
    valid one; ``lease`` goes to both.

    Options: ``max_attempts`` receives before a failing message is dead-lettered (default 5);
    ``backoff`` the retry delays; ``batch_size`` messages per receive (10); ``wait`` seconds a
    receive may wait (1); ``lease`` seconds each delivery is leased for (30), kept while the
    engine holds it; ``concurrency`` worker threads per topic (1); ``max_in_flight`` events of a
    topic processed at once by each worker (1: one after another; more: async consumers run
    together on the worker's event loop, sync ones on a pool of that many threads);
    ``default_event_handler`` called with events no consumer matched; ``max_event_size`` /
    ``max_depth`` limits on bodies; ``registry`` the payload schemas; ``handle_signals`` install
    SIGTERM/SIGINT handlers in :meth:`run` (main thread only); ``ack_delay`` ack processed
    messages together with :meth:`~balog.transports.base.Transport.ack_many`, at the latest this
    many seconds after the first (default: a quarter of the lease, at most 1 s, where the
    transport declares ``batch_ack``; ``None``: each at once); ``startup_timeout`` seconds
    :meth:`run` may spend retrying a backend it cannot reach before it raises (10).
    """

    transport_class: ClassVar[type[Transport] | None] = None
    """The transport a named engine builds from its keyword options."""

    max_attempts: int
    batch_size: int
    wait: float
    concurrency: int
    max_in_flight: int
    startup_timeout: float

    defaults: ClassVar[Mapping[str, Any]] = MappingProxyType({})
    """Engine option defaults of a named engine; the caller's options win, and these win over
    the transport's :attr:`~balog.transports.base.Transport.engine_defaults`."""

    def __init__(
        self,
        hub: ConsumerHub,
        consumer_operator: ConsumerOperator | None = None,
        *,
        transport: Transport | str | None = None,
        transport_options: Mapping[str, Any] | None = None,
        max_attempts: int = _DEFAULT,
        backoff: Backoff | None = _DEFAULT,
        batch_size: int = _DEFAULT,
        wait: float = _DEFAULT,
        lease: float = _DEFAULT,
        concurrency: int = _DEFAULT,
        max_in_flight: int = _DEFAULT,
        default_event_handler: DefaultEventHandler | None = None,
        max_event_size: int | None = None,
        max_depth: int = DEFAULT_MAX_DEPTH,
        registry: SchemaRegistry | None = None,
        handle_signals: bool = True,
        ack_delay: float | None = _DEFAULT,
        startup_timeout: float = _DEFAULT,
        **transport_kwargs: Any,
    ) -> None:
        super().__init__(hub, consumer_operator)
        if lease is _DEFAULT:
            lease = self.defaults.get("lease", 30.0)
        self.lease = float(_number("lease", lease, minimum=0))
        self.transport, self._owns_transport = self._build_transport(
            transport, transport_options, transport_kwargs
        )
        self._set_options(
            max_attempts=max_attempts,
            backoff=backoff,
            batch_size=batch_size,
            wait=wait,
            concurrency=concurrency,
            max_in_flight=max_in_flight,
            ack_delay=ack_delay,
            startup_timeout=startup_timeout,
        )
        if default_event_handler is not None and not callable(default_event_handler):
            raise ConfigurationError("default_event_handler must be callable")
        self.default_event_handler = default_event_handler
        limit = self.transport.capabilities.max_body_size
        self.max_event_size = _number(
            "max_event_size", max_event_size or limit or 256 * 1024, minimum=1, integer=True
        )
        self.max_depth = _number("max_depth", max_depth, minimum=1, integer=True)
        self.registry = registry
        self.handle_signals = handle_signals
        self._stopping = threading.Event()  # the current run's; a new one for each run
        self._stop_pending = False  # a stop() that came when no run was active
        self._running = False
        self._lock = threading.Lock()
        self._counts: dict[str, list[Counts]] = {}
        self._drain_counts: dict[str, Counts] = {}
        self._keeper = LeaseKeeper(self.transport, lease=self.lease)
        self._fatal_error: BaseException | None = None
        self._handler_loop: asyncio.AbstractEventLoop | None = None
        self._workers: list[Worker] = []  # of the last run, until close() has seen them end
        self._closed = False

    # -- construction -------------------------------------------------------------------------

    _NUMBERS: ClassVar[dict[str, tuple[float, float, bool]]] = {
        # option: (built-in default, minimum, whole number)
        "max_attempts": (5, 1, True),
        "batch_size": (10, 1, True),
        "wait": (1.0, 0, False),
        "concurrency": (1, 1, True),
        "max_in_flight": (1, 1, True),
        "startup_timeout": (10.0, 0, False),
    }

    def _set_options(self, **given: Any) -> None:
        """Each option from the caller, else the named engine's ``defaults``, else the
        transport's ``engine_defaults``, else the built-in default; checked, and set."""

        def option(name: str, fallback: Any) -> Any:
            value = given[name]
            if value is not _DEFAULT:
                return value
            if name in self.defaults:
                return self.defaults[name]
            return self.transport.engine_defaults.get(name, fallback)

        for name, (fallback, minimum, whole) in self._NUMBERS.items():
            value = _number(name, option(name, fallback), minimum=minimum, integer=whole)
            setattr(self, name, value if whole else float(value))
        self.backoff = option("backoff", None) or Backoff()
        if not isinstance(self.backoff, Backoff):
            raise ConfigurationError(f"backoff must be a Backoff, not {self.backoff!r}")
        caps = self.transport.capabilities
        if caps.max_batch is not None and self.batch_size > caps.max_batch:
            raise ConfigurationError(
                f"batch_size must be at most {caps.max_batch} on {self.transport!r}"
            )
        if caps.max_wait is not None and self.wait > caps.max_wait:
            raise ConfigurationError(
                f"wait must be at most {caps.max_wait:g} seconds on {self.transport!r}"
            )
        delay = option("ack_delay", _DEFAULT)
        if delay is _DEFAULT:  # batched where the transport has a batch call
            delay = min(1.0, self.lease / 4) if caps.batch_ack else None
        self.ack_delay: float | None = (
            None if delay is None else float(_number("ack_delay", delay, minimum=0))
        )

    @classmethod
    def option_names(cls) -> frozenset[str]:
        """The options the engine itself takes (every other keyword is the transport's)."""
        names, _ = _plugins.parameters(TransportEngine.__init__)
        return frozenset(names - {"self", "hub", "consumer_operator"})

    def _build_transport(
        self,
        transport: Transport | str | None,
        transport_options: Mapping[str, Any] | None,
        kwargs: dict[str, Any],
    ) -> tuple[Transport, bool]:
        what = f"engine {type(self).__name__}"
        cls = self.transport_class
        if isinstance(transport, Transport):
            if cls is not None and not isinstance(transport, cls):
                raise ConfigurationError(f"{what} runs on a {cls.__name__}, not {transport!r}")
            if kwargs or transport_options:
                name = next(iter(kwargs or transport_options or {}))
                raise unknown_option(
                    f"{what} given a transport instance", name, self.option_names()
                )
            return transport, False
        options = dict(kwargs)
        if cls is not None:
            if transport is not None:
                names, _ = _plugins.parameters(cls)
                shown = ", ".join(f"{n}=" for n in sorted(names - {"self"}))
                raise ConfigurationError(
                    f"{what} builds its own {cls.__name__}: give its options ({shown}), "
                    "not transport="
                )
            if transport_options is not None:
                options["transport_options"] = transport_options
            factory: Any = cls
        else:
            if transport is None:
                transport = "memory"
            if not isinstance(transport, str):
                raise ConfigurationError(
                    f"transport must be a name or a Transport, not {transport!r}"
                )
            what = f"transport {transport!r}"
            factory = _plugins.load(_plugins.TRANSPORTS, transport)
            overlap = set(options) & set(transport_options or {})
            if overlap:
                raise ConfigurationError(
                    f"option {sorted(overlap)[0]!r} given twice, in transport_options and as a "
                    "keyword"
                )
            options.update(transport_options or {})
        names, anything = _plugins.parameters(factory)
        if not anything:
            for name in options:
                if name not in names:
                    raise unknown_option(what, name, names | self.option_names())
        if "lease" in names and "lease" not in options:
            options["lease"] = self.lease  # the engine's lease reaches the transport
        try:
            built = factory(**options)
        except TypeError as exc:
            if "unexpected keyword argument" in str(exc) or "required" in str(exc):
                raise ConfigurationError(f"bad options for {what}: {exc}") from exc
            raise
        if not isinstance(built, Transport):
            raise ConfigurationError(f"{what} did not build a Transport")
        return built, True

    def __repr__(self) -> str:
        return f"{type(self).__name__}(transport={self.transport!r}, hub={self.hub!r})"

    # -- topics and stats ---------------------------------------------------------------------

    def routes(self) -> dict[str, list[Consumer]]:
        """The consumers of the hub by the topic the operator gives each."""
        return self.hub.by_topic(self.consumer_operator)

    def stats(self) -> dict[str, EngineStats]:
        """A snapshot of the counts per topic."""
        with self._lock:
            slots = {topic: list(counts) for topic, counts in self._counts.items()}
        out: dict[str, EngineStats] = {}
        for topic, counts in slots.items():
            total = EngineStats()
            for c in counts:
                for field in dataclasses.fields(EngineStats):
                    name = field.name
                    setattr(total, name, getattr(total, name) + getattr(c, name))
            out[topic] = total
        return out

    def _new_counts(self, topic: str) -> Counts:
        counts = Counts()
        with self._lock:
            self._counts.setdefault(topic, []).append(counts)
        return counts

    def _drained(self, topic: str) -> Counts:
        """The counts every :meth:`drain` call adds to for ``topic``."""
        counts = self._drain_counts.get(topic)
        if counts is None:
            counts = self._drain_counts[topic] = self._new_counts(topic)
        return counts

    def _pipeline(self) -> Pipeline:
        return Pipeline(
            self.consumer_operator,
            max_attempts=self.max_attempts,
            backoff=self.backoff.delay,
            max_event_size=self.max_event_size,
            max_depth=self.max_depth,
            registry=self.registry,
            default_event_handler=self.default_event_handler,
            receive_limit=self.transport.max_receive_count,
        )

    # -- running ------------------------------------------------------------------------------

    @property
    def stopping(self) -> bool:
        """Whether :meth:`stop` was asked and :meth:`run` has not yet returned."""
        return self._stopping.is_set()

    def stop(self) -> None:
        with self._lock:
            self._stop_pending = not self._running
            self._stopping.set()

    def _fatal(self, exc: BaseException) -> None:
        """A fatal error met by a worker or the settler: keep the first, stop the engine."""
        with self._lock:
            if self._fatal_error is None:
                self._fatal_error = exc
                logger.error("stopping: %s", describe(exc))
        self.stop()

    def run(self) -> None:
        self._run(self.handle_signals)

    async def serve(self) -> None:
        """Run inside the caller's event loop until :meth:`stop` or cancellation.

        Transport calls run in the engine's worker threads, never on the loop; async consumers
        run on the loop (so they can use what the application set up on it, a database pool
        say), sync consumers in the worker threads. No signal handlers are installed: the
        application owns them. Cancelling the task that awaits this stops the engine, lets
        in-flight events finish, then re-raises the cancellation.
        """
        loop = asyncio.get_running_loop()
        finished: asyncio.Future[None] = loop.create_future()

        def target() -> None:
            try:
                self._run(False)
            except BaseException as exc:
                loop.call_soon_threadsafe(_settle_future, finished, exc)
            else:
                loop.call_soon_threadsafe(_settle_future, finished, None)

        self._handler_loop = loop
        thread = threading.Thread(target=target, name="balog-engine", daemon=True)
        thread.start()
        try:
            await asyncio.shield(finished)
        except asyncio.CancelledError:
            self.stop()
            await finished
            raise
        finally:
            self._handler_loop = None

    def _run(self, handle_signals: bool) -> None:
        with self._lock:
            if self._stop_pending:
                self._stop_pending = False  # a stop that came before the run: honoured, used up
                return
            self._stopping = threading.Event()
            self._running = True
        try:
            self._run_once(handle_signals)
        finally:
            with self._lock:
                self._running = False

    def _run_once(self, handle_signals: bool) -> None:
        from balog.engines._runner import Worker

        routes = self.routes()
        if not routes:
            raise ConfigurationError("the hub has no consumers to run")
        with self._lock:
            self._fatal_error = None
        restore = self._install_signal_handlers() if handle_signals else _nothing
        workers: list[Worker] = []
        try:
            self._verify(routes)
            if not self._stopping.is_set():
                self._keeper.start()
                workers = [
                    Worker(self, topic, consumers, index)
                    for topic, consumers in routes.items()
                    for index in range(self.concurrency)
                ]
                self._workers = workers
                for worker in workers:
                    worker.start()
                logger.info("engine running on %d topic(s): %s", len(routes), ", ".join(routes))
                while not self._stopping.wait(0.2):
                    pass
        except KeyboardInterrupt:
            self.stop()
        finally:
            self.stop()
            for worker in workers:
                worker.join(self.wait)
            self._keeper.stop()
            restore()
            if workers:
                logger.info("engine stopped")
        with self._lock:
            fatal, self._fatal_error = self._fatal_error, None
        if fatal is not None:
            raise fatal

    def _verify(self, topics: Iterable[str]) -> None:
        """Check every topic at start-up; retry what may pass for ``startup_timeout`` seconds."""
        deadline = time.monotonic() + self.startup_timeout
        for topic in topics:
            pause = 0.25
            warned = False
            while not self._stopping.is_set():
                try:
                    self.transport.verify(topic)
                    break
                except BalogError as exc:
                    if exc.fatal:
                        raise
                    error: BaseException = exc
                except Exception as exc:  # a transport that leaked its backend's error
                    error = exc
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    if isinstance(error, BalogError):
                        raise error
                    raise TransportError(
                        f"{self.transport!r} could not be used for {topic!r}: {describe(error)}"
                    ) from error
                if not warned:
                    logger.warning(
                        "cannot use %s yet (%s); retrying for up to %.0f s",
                        topic,
                        describe(error),
                        remaining,
                    )
                    warned = True
                self._stopping.wait(min(pause, remaining))
                pause = min(pause * 2, 2.0)

    def _install_signal_handlers(self) -> Callable[[], None]:
        if threading.current_thread() is not threading.main_thread():
            return _nothing

        def on_signal(signum: int, frame: FrameType | None) -> None:
            logger.info("received signal %d; stopping after in-flight events", signum)
            self.stop()

        previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}

        def restore() -> None:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

        return restore

    def drain(self, *, raise_errors: bool = False, timeout: float | None = None) -> int:
        """Process every message available now on every topic, in the calling thread; return
        how many were handled.

        Messages delayed by a retry backoff are not "available now". With ``raise_errors``, the
        first exception a consumer raised is re-raised afterwards as
        :class:`~balog.exceptions.ConsumerError` (the message was still retried or
        dead-lettered as usual). ``timeout`` bounds the whole call.
        """
        from balog.engines._runner import Worker

        deadline = None if timeout is None else time.monotonic() + timeout
        errors: list[BaseException] = []
        workers = [
            Worker(self, topic, consumers, 0, errors=errors, counts=self._drained(topic))
            for topic, consumers in self.routes().items()
        ]
        self._keeper.start()
        try:
            if any(worker.any_async for worker in workers):
                # One pass of an event loop for the whole drain, not one per batch.
                loop = asyncio.new_event_loop()
                try:
                    handled = loop.run_until_complete(_drain_async(workers, deadline))
                finally:
                    loop.close()
            else:
                handled = _drain(workers, deadline)
        finally:
            for worker in workers:
                worker.finish()
            self._keeper.stop()
        if raise_errors and errors:
            raise ConsumerError(f"a consumer raised: {type(errors[0]).__name__}") from errors[0]
        return handled

    def close(self) -> None:
        """Stop, and close a transport the engine built. Returns at once: a worker still inside a
        long poll (SQS's 20 s) releases what that poll brings, and the transport is closed once it
        has (in a background thread, at most ``wait`` seconds later)."""
        if self._closed:
            return
        self._closed = True
        self.stop()
        polling, self._workers = [w for w in self._workers if w.alive], []
        if not self._owns_transport:
            return
        if not polling:
            self.transport.close()
            return

        def close_after_polls() -> None:
            for worker in polling:
                worker.join(0.0, timeout=self.wait + 5.0)
            self.transport.close()

        threading.Thread(target=close_after_polls, name="balog-engine-close", daemon=True).start()


def _nothing() -> None:
    return None


def _drain(workers: list[Worker], deadline: float | None) -> int:
    """Round after round over ``workers``, until none made progress or ``deadline`` passed."""
    handled = 0
    progress = True
    while progress:
        progress = False
        for worker in workers:
            done = worker.drain_once()
            handled += done
            progress = progress or (done > 0 and not worker.stalled)
            if deadline is not None and time.monotonic() >= deadline:
                return handled
    return handled


async def _drain_async(workers: list[Worker], deadline: float | None) -> int:
    """:func:`_drain` on an event loop, for topics with async consumers."""
    handled = 0
    progress = True
    while progress:
        progress = False
        for worker in workers:
            done = await worker.drain_once_async()
            handled += done
            progress = progress or (done > 0 and not worker.stalled)
            if deadline is not None and time.monotonic() >= deadline:
                return handled
    return handled


def _settle_future(future: asyncio.Future[None], exc: BaseException | None) -> None:
    if future.done():
        return
    if exc is None:
        future.set_result(None)
    else:
        future.set_exception(exc)
