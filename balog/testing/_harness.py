"""Running an engine in a test until something has happened, or a deadline has passed.

From plain tests, :class:`EngineHarness` drains or runs the engine; from async tests (an
``async def`` test, or code already inside an event loop), its ``await_*`` methods serve the
engine on the running loop, so async consumers run there, and wait without blocking it::

    async with EngineHarness(engine, raise_errors=True) as harness:
        events = await harness.await_events(3)
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import threading
import time
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any

from balog.consumers import Consumer, ConsumerOperator
from balog.engines.base import Engine, TransportEngine
from balog.events import EventDict
from balog.exceptions import ConfigurationError, ConsumerError
from balog.transports.base import DeadLetter, Transport

__all__ = [
    "EngineHarness",
    "Processed",
    "await_dead_letters",
    "await_events",
    "drain",
    "run_until",
    "wait_for_dead_letters",
    "wait_for_events",
]

DEFAULT_TIMEOUT = 10.0


@dataclasses.dataclass(frozen=True)
class Processed:
    """One successful consumer call: which consumer, which event, at what ``time.monotonic()``."""

    consumer: Consumer
    event: EventDict
    at: float


class _RecordingOperator:
    """Wraps the engine's consumer operator; records every call's outcome."""

    def __init__(self, inner: ConsumerOperator, harness: EngineHarness) -> None:
        self.inner = inner
        self.harness = harness

    def get_topic(self, consumer: Consumer) -> str:
        return self.inner.get_topic(consumer)

    def process_event(self, consumer: Consumer, event: dict[str, Any]) -> Any:
        try:
            result = self.inner.process_event(consumer, event)
        except BaseException as exc:
            self.harness._record_error(exc)
            raise
        if inspect.isawaitable(result):
            # An async consumer has done nothing yet: record it once it has run.
            return self._finished(consumer, event, result)
        self.harness._record(Processed(consumer, event, time.monotonic()))
        return result

    async def _finished(self, consumer: Consumer, event: dict[str, Any], result: Any) -> Any:
        try:
            value = await result
        except BaseException as exc:
            self.harness._record_error(exc)
            raise
        self.harness._record(Processed(consumer, event, time.monotonic()))
        return value


class EngineHarness:
    """Drives an engine in a test and records what its consumers did.

    While the harness is open, the engine's consumer operator is wrapped so that every successful
    consumer call lands in :attr:`processed` and every exception a consumer raised in
    :attr:`errors`. A :class:`~balog.engines.base.TransportEngine` is driven in the calling thread
    with :meth:`~balog.engines.base.TransportEngine.drain` (deterministic); any other engine runs
    its :meth:`~balog.engines.base.Engine.run` in a background thread (``threaded=True`` forces
    that for a TransportEngine too). With ``raise_errors``, a consumer's exception is re-raised in
    the test as :class:`~balog.exceptions.ConsumerError` (the original is its ``__cause__``) by
    the next wait, and when the harness closes::

        with EngineHarness(engine, raise_errors=True) as harness:
            events = harness.wait_for_events(3)
    """

    def __init__(
        self,
        engine: Engine,
        *,
        raise_errors: bool = False,
        threaded: bool | None = None,
        transport: Transport | None = None,
    ) -> None:
        if not isinstance(engine, Engine):
            raise ConfigurationError(f"engine must be an Engine, not {type(engine).__name__}")
        self.engine = engine
        self.raise_errors = raise_errors
        self.threaded = not isinstance(engine, TransportEngine) if threaded is None else threaded
        found = transport if transport is not None else getattr(engine, "transport", None)
        self.transport: Transport | None = found if isinstance(found, Transport) else None
        self.processed: list[Processed] = []
        self.errors: list[BaseException] = []
        self._lock = threading.Lock()
        self._inner = engine.consumer_operator
        self._thread: threading.Thread | None = None
        self._serving: asyncio.Task[None] | None = None
        self._run_error: BaseException | None = None
        self._raised = 0
        self._closed = False
        engine.consumer_operator = _RecordingOperator(self._inner, self)

    def __repr__(self) -> str:
        return f"EngineHarness({self.engine!r}, processed={len(self.processed)})"

    # -- records ------------------------------------------------------------------------------

    def _record(self, item: Processed) -> None:
        with self._lock:
            self.processed.append(item)

    def _record_error(self, exc: BaseException) -> None:
        with self._lock:
            self.errors.append(exc)

    @property
    def events(self) -> list[EventDict]:
        """The events of :attr:`processed`, in the order the consumers finished them."""
        with self._lock:
            return [p.event for p in self.processed]

    def _check(self) -> None:
        serving = self._serving
        if serving is not None and serving.done() and not serving.cancelled():
            if serving.exception() is not None and self._run_error is None:
                self._run_error = serving.exception()
            self._serving = None
        if self._run_error is not None:
            error, self._run_error = self._run_error, None
            raise ConsumerError(
                f"the engine's run() raised {type(error).__name__}: {error}"
            ) from error
        if not self.raise_errors:
            return
        with self._lock:
            pending = self.errors[self._raised :]
            self._raised = len(self.errors)
        if pending:
            first = pending[0]
            raise ConsumerError(f"a consumer raised {type(first).__name__}: {first}") from first

    # -- driving ------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the engine's ``run()`` in a background thread (threaded mode; idempotent)."""
        if self._thread is not None:
            return

        def target() -> None:
            try:
                self.engine.run()
            except BaseException as exc:  # surfaced by the next wait, in the test's thread
                self._run_error = exc

        self._thread = threading.Thread(target=target, name="balog-test-engine", daemon=True)
        self._thread.start()

    def _step(self, remaining: float) -> int:
        """Make progress once; return how many messages were handled (drain mode) or 0."""
        if self.threaded:
            self.start()
            return 0
        engine = self.engine
        assert isinstance(engine, TransportEngine)
        return engine.drain(timeout=max(remaining, 0.01))

    def _timed_out(
        self, condition: Callable[[], object], timeout: float, message: str | None
    ) -> AssertionError:
        what = message or getattr(condition, "__name__", "the condition")
        return AssertionError(
            f"{what} did not hold within {timeout:g} s "
            f"({len(self.processed)} consumer call(s) succeeded, {len(self.errors)} raised)"
        )

    def run_until(
        self,
        condition: Callable[[], object],
        *,
        timeout: float = DEFAULT_TIMEOUT,
        interval: float = 0.02,
        message: str | None = None,
    ) -> None:
        """Run the engine until ``condition()`` is true; ``AssertionError`` after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while True:
            handled = self._step(deadline - time.monotonic())
            self._check()
            if condition():
                return
            if time.monotonic() >= deadline:
                raise self._timed_out(condition, timeout, message)
            if not handled:
                time.sleep(interval)

    def drain(self, *, timeout: float = DEFAULT_TIMEOUT, quiet: float = 0.5) -> int:
        """Process what is available now; return how many consumer calls succeeded meanwhile.

        In drain mode this is one :meth:`TransportEngine.drain` call; in threaded mode it waits
        until no consumer call has finished for ``quiet`` seconds (or ``timeout`` passed).
        """
        before = len(self.processed)
        if not self.threaded:
            engine = self.engine
            assert isinstance(engine, TransportEngine)
            engine.drain(timeout=timeout)
            self._check()
            return len(self.processed) - before
        self.start()
        deadline = time.monotonic() + timeout
        last_count, last_change = -1, time.monotonic()
        while time.monotonic() < deadline:
            self._check()
            count = len(self.processed) + len(self.errors)
            now = time.monotonic()
            if count != last_count:
                last_count, last_change = count, now
            elif now - last_change >= quiet:
                break
            time.sleep(0.02)
        self._check()
        return len(self.processed) - before

    def wait_for_events(self, count: int, *, timeout: float = DEFAULT_TIMEOUT) -> list[EventDict]:
        """Run until ``count`` consumer calls have succeeded; return their events."""
        self.run_until(
            lambda: len(self.processed) >= count,
            timeout=timeout,
            message=f"{count} successful consumer call(s)",
        )
        return self.events

    def wait_for_dead_letters(
        self, topic: str, count: int = 1, *, timeout: float = DEFAULT_TIMEOUT
    ) -> list[DeadLetter]:
        """Run until ``topic`` has at least ``count`` dead letters; return them."""
        transport = self._dead_letter_transport()
        found: list[DeadLetter] = []

        def enough() -> bool:
            found[:] = transport.dead_letters(topic, limit=max(count, 100))
            return len(found) >= count

        self.run_until(
            enough,
            timeout=timeout,
            interval=0.05,
            message=f"{count} dead letter(s) on {topic!r}",
        )
        return list(found)

    # -- from async code ------------------------------------------------------------------------

    def _serve(self) -> None:
        if self._serving is None:
            self._serving = asyncio.get_running_loop().create_task(self.engine.serve())

    async def await_until(
        self,
        condition: Callable[[], object | Awaitable[object]],
        *,
        timeout: float = DEFAULT_TIMEOUT,
        interval: float = 0.02,
        message: str | None = None,
    ) -> None:
        """:meth:`run_until` for async code: serve the engine on the running loop (async
        consumers run there) until ``condition()`` (which may be async) holds."""
        self._serve()
        deadline = time.monotonic() + timeout
        while True:
            self._check()
            held = condition()
            if inspect.isawaitable(held):
                held = await held
            if held:
                return
            if time.monotonic() >= deadline:
                raise self._timed_out(condition, timeout, message)
            await asyncio.sleep(interval)

    async def await_events(
        self, count: int, *, timeout: float = DEFAULT_TIMEOUT
    ) -> list[EventDict]:
        """:meth:`wait_for_events` for async code."""
        await self.await_until(
            lambda: len(self.processed) >= count,
            timeout=timeout,
            message=f"{count} successful consumer call(s)",
        )
        return self.events

    async def await_dead_letters(
        self, topic: str, count: int = 1, *, timeout: float = DEFAULT_TIMEOUT
    ) -> list[DeadLetter]:
        """:meth:`wait_for_dead_letters` for async code (the transport is read in a thread)."""
        transport = self._dead_letter_transport()
        found: list[DeadLetter] = []

        async def enough() -> bool:
            found[:] = await asyncio.to_thread(transport.dead_letters, topic, limit=max(count, 100))
            return len(found) >= count

        await self.await_until(
            enough, timeout=timeout, interval=0.05, message=f"{count} dead letter(s) on {topic!r}"
        )
        return list(found)

    async def aclose(self) -> None:
        """Stop an engine served by the ``await_*`` methods and wait for it; unwrap the
        operator."""
        serving, self._serving = self._serving, None
        if serving is not None:
            self.engine.stop()
            try:
                await serving
            except BaseException as exc:
                if self._run_error is None:
                    self._run_error = exc
        self.stop()

    async def __aenter__(self) -> EngineHarness:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
        if exc_type is None:
            self._check()

    def _dead_letter_transport(self) -> Transport:
        if self.transport is None:
            raise ConfigurationError(
                "this engine has no .transport; pass transport= to the harness"
            )
        return self.transport

    def stop(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Stop a running engine and wait for ``run()`` to return; unwrap the operator."""
        if self._closed:
            return
        if self._serving is not None:
            raise RuntimeError("the engine is being served: use 'await harness.aclose()'")
        self._closed = True
        thread = self._thread
        if thread is not None:
            self.engine.stop()
            thread.join(timeout)
            if thread.is_alive():
                raise AssertionError(f"engine did not return from run() within {timeout:g} s")
        self.engine.consumer_operator = self._inner

    def __enter__(self) -> EngineHarness:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
        if exc_type is None:
            self._check()


def drain(engine: Engine, *, raise_errors: bool = False, timeout: float = DEFAULT_TIMEOUT) -> int:
    """Process what is available now on ``engine``; return how many consumer calls succeeded."""
    with EngineHarness(engine, raise_errors=raise_errors) as harness:
        return harness.drain(timeout=timeout)


def run_until(
    engine: Engine,
    condition: Callable[[], object],
    *,
    raise_errors: bool = False,
    timeout: float = DEFAULT_TIMEOUT,
    message: str | None = None,
) -> None:
    """Run ``engine`` until ``condition()`` holds; ``AssertionError`` after ``timeout`` s."""
    with EngineHarness(engine, raise_errors=raise_errors) as harness:
        harness.run_until(condition, timeout=timeout, message=message)


def wait_for_events(
    engine: Engine, count: int, *, raise_errors: bool = False, timeout: float = DEFAULT_TIMEOUT
) -> list[EventDict]:
    """Run ``engine`` until its consumers have succeeded ``count`` times; return those events."""
    with EngineHarness(engine, raise_errors=raise_errors) as harness:
        return harness.wait_for_events(count, timeout=timeout)


def wait_for_dead_letters(
    engine: Engine,
    topic: str,
    count: int = 1,
    *,
    raise_errors: bool = False,
    timeout: float = DEFAULT_TIMEOUT,
) -> list[DeadLetter]:
    """Run ``engine`` until ``topic`` has ``count`` dead letters; return them."""
    with EngineHarness(engine, raise_errors=raise_errors) as harness:
        return harness.wait_for_dead_letters(topic, count, timeout=timeout)


async def await_events(
    engine: Engine, count: int, *, raise_errors: bool = False, timeout: float = DEFAULT_TIMEOUT
) -> list[EventDict]:
    """:func:`wait_for_events` for async code: serves ``engine`` on the running loop."""
    async with EngineHarness(engine, raise_errors=raise_errors) as harness:
        return await harness.await_events(count, timeout=timeout)


async def await_dead_letters(
    engine: Engine,
    topic: str,
    count: int = 1,
    *,
    raise_errors: bool = False,
    timeout: float = DEFAULT_TIMEOUT,
) -> list[DeadLetter]:
    """:func:`wait_for_dead_letters` for async code: serves ``engine`` on the running loop."""
    async with EngineHarness(engine, raise_errors=raise_errors) as harness:
        return await harness.await_dead_letters(topic, count, timeout=timeout)
