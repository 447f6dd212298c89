"""The workers of a :class:`~balog.engines.base.TransportEngine`: threads that drive the pipeline.

Each worker is one thread consuming one topic, with its own settler (so every delivery is
settled from the thread that received it) and, where it needs one, its own event loop:

- ``max_in_flight=1`` and no async consumer on the topic: receive a batch, then decide and
  settle each delivery in turn, in plain code (the fastest path);
- ``max_in_flight=1`` with async consumers: the same, but the whole batch runs in one pass of the
  worker's event loop, so awaiting a consumer costs about what calling it does;
- ``max_in_flight=N``: up to N events run at once on the worker's loop (async consumers there,
  sync ones on a pool of N threads); the worker keeps receiving while any run (without waiting,
  so the loop is never held), settles each as it finishes, and never runs two deliveries of one
  ordering group (:attr:`~balog.transports.base.Delivery.group`, an SQS FIFO message group) at
  once: they run one after the other, in the order received.

Under :meth:`~balog.engines.base.TransportEngine.serve`, async consumers run on the
application's loop instead, and the worker's loop only waits for them.

Nothing a consumer raises, not even ``SystemExit``, ends a worker: it is a failure of that event.
A worker that crashes anyway (a bug) gives back what it held, is counted in ``restarts`` and
starts again after a pause.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import inspect
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from balog.consumers import Consumer, ConsumerOperator
from balog.engines._pipeline import Decision, Prepared, describe
from balog.engines._settler import Counts, Settler
from balog.exceptions import BalogError, TransportError
from balog.transports.base import Delivery

if TYPE_CHECKING:
    from balog.engines.base import TransportEngine

__all__ = ["Worker", "is_async_consumer"]

logger = logging.getLogger("balog.engine")

REPORT_INTERVAL = 30.0
"""Seconds between two reports of a receive that keeps failing."""

LONG_WAIT = 1.0
"""A receive may wait longer than this (an SQS long poll): :meth:`Worker.join` does not wait
for a worker inside such a receive after a stop; it releases what that receive brings."""


def is_async_consumer(consumer: Consumer, operator: ConsumerOperator) -> bool:
    """Whether calling ``consumer`` through ``operator`` returns an awaitable, as far as can be
    told before calling it (a consumer that returns one anyway is still awaited)."""
    if inspect.iscoroutinefunction(getattr(operator, "process_event", None)):
        return True
    flag = getattr(consumer, "is_async", None)
    if isinstance(flag, bool):
        return flag
    func = consumer.func
    return inspect.iscoroutinefunction(func) or inspect.iscoroutinefunction(
        getattr(func, "__call__", None)  # noqa: B004 - a callable object's own __call__
    )


async def _await(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


class Worker:
    """One worker: a thread (or the caller of :meth:`drain_once`) consuming one topic."""

    def __init__(
        self,
        engine: TransportEngine,
        topic: str,
        consumers: list[Consumer],
        index: int,
        *,
        errors: list[BaseException] | None = None,
        counts: Counts | None = None,
    ) -> None:
        self.engine = engine
        # The stop of the run this worker belongs to: a worker that outlives its run (inside a
        # long poll) still sees it, whatever runs come after.
        self.stopping = engine._stopping
        self.transport = engine.transport
        self.topic = topic
        self.consumers = consumers
        self.name = f"balog-worker-{topic}-{index}"
        self.pipeline = engine._pipeline()
        self.pipeline.errors = errors
        self.counts = counts if counts is not None else engine._new_counts(topic)
        self.keeper = engine._keeper
        self.settler = Settler(
            self.transport,
            self.counts,
            self.keeper,
            ack_delay=engine.ack_delay,
            on_fatal=engine._fatal,
        )
        operator = engine.consumer_operator
        self.async_consumer = {id(c): is_async_consumer(c, operator) for c in consumers}
        self.any_async = any(self.async_consumer.values())
        self.receiving = False
        self.stalled = False
        self._draining = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._threads: concurrent.futures.ThreadPoolExecutor | None = None
        self._thread: threading.Thread | None = None
        self._failures = 0
        self._settle_failures = 0
        self._reported_at = 0.0

    # -- the thread -----------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._main, name=self.name, daemon=True)
        self._thread.start()

    @property
    def alive(self) -> bool:
        """Whether the worker's thread is still running (inside a long poll, after a stop)."""
        return self._thread is not None and self._thread.is_alive()

    def join(self, wait: float, *, timeout: float | None = None) -> None:
        """Wait for the worker to end, but not for one inside a receive that waits longer than
        :data:`LONG_WAIT` (``wait``); ``timeout`` bounds the whole wait."""
        thread = self._thread
        deadline = None if timeout is None else time.monotonic() + timeout
        while thread is not None and thread.is_alive():
            if self.receiving and wait > LONG_WAIT:
                return
            if deadline is not None and time.monotonic() >= deadline:
                return
            thread.join(0.05)

    def _main(self) -> None:
        pause = 0.5
        try:
            while True:
                try:
                    self._work()
                    return
                except BaseException as exc:
                    if self.engine.stopping:
                        logger.exception("worker %s ended with an error while stopping", self.name)
                        return
                    self.counts.restarts += 1
                    logger.error(
                        "worker %s crashed (%s); restarting it in %.1f s",
                        self.name,
                        describe(exc),
                        pause,
                        exc_info=(type(exc), exc, exc.__traceback__),
                    )
                    self.stopping.wait(pause)
                    pause = min(pause * 2, 30.0)
        finally:
            self.finish()

    def finish(self) -> None:
        """Settle what is still queued, give back held retries, release the thread's transport
        resources and close the worker's loop and threads. Called once the worker is done."""
        try:
            self.settler.close()
        except BaseException as exc:
            logger.warning("worker %s could not settle what it held: %s", self.name, describe(exc))
        try:
            self.transport.close_thread()
        except BaseException as exc:
            logger.warning("worker %s could not close its connection: %s", self.name, describe(exc))
        loop, self._loop = self._loop, None
        if loop is not None:
            loop.close()
        threads, self._threads = self._threads, None
        if threads is not None:
            threads.shutdown(wait=True)

    def _work(self) -> None:
        if self.engine.max_in_flight > 1:
            self._event_loop().run_until_complete(self._concurrent())
            return
        if self.any_async:
            # One pass of the loop for the worker's whole life: entering it per batch would
            # cost more than awaiting the consumers does.
            self._event_loop().run_until_complete(self._sequential_async())
            return
        stopping = self.stopping
        while not stopping.is_set():
            batch = self._receive(self._next_wait(), self.engine.batch_size)
            if batch:
                self._process(batch)
            else:
                self.settler.flush()
            self.stopping.wait(self._pause_after_trouble())

    async def _sequential_async(self) -> None:
        stopping = self.stopping
        while not stopping.is_set():
            # Nothing else runs on this loop meanwhile, so the blocking receive holds up nothing.
            batch = self._receive(self._next_wait(), self.engine.batch_size)
            if batch:
                await self._process_async(batch)
            else:
                self.settler.flush()
            pause = self._pause_after_trouble()
            if pause:
                await asyncio.get_running_loop().run_in_executor(None, stopping.wait, pause)

    def _pause_after_trouble(self) -> float:
        """Seconds to wait after settles that failed (longer each time it happens again), so
        that a broker refusing acks or nacks does not make the worker loop hot; 0 if none."""
        if not self.settler.trouble():
            self._settle_failures = 0
            return 0.0
        self._settle_failures += 1
        pause = min(30.0, 0.5 * 2.0 ** min(self._settle_failures - 1, 6))
        logger.warning(
            "worker %s pauses %.1f s after failed settles on %s", self.name, pause, self.topic
        )
        return pause

    def drain_once(self) -> int:
        """Receive what is there now and process it in the calling thread; return how many.
        :attr:`stalled` says whether a settle failed meanwhile (what failed may be back at
        once: a drain then stops, and a later one retries)."""
        self._draining = True
        batch = self._receive(0.0, self.engine.batch_size)
        if batch:
            self._process(batch)
        self.stalled = bool(self.settler.trouble())
        return len(batch)

    async def drain_once_async(self) -> int:
        """:meth:`drain_once` on the running loop (the drain of a topic with async consumers)."""
        self._draining = True
        batch = self._receive(0.0, self.engine.batch_size)
        if batch:
            await self._process_async(batch)
        self.stalled = bool(self.settler.trouble())
        return len(batch)

    # -- receiving ------------------------------------------------------------------------------

    def _next_wait(self) -> float:
        due = self.settler.next_due()
        return self.engine.wait if due is None else min(self.engine.wait, due)

    def _receive(self, wait: float, count: int) -> list[Delivery]:
        self.receiving = True
        try:
            batch = self.transport.receive(
                self.topic, max_messages=count, wait=wait, lease=self.engine.lease
            )
        except Exception as exc:
            self._receive_failed(exc)
            return []
        finally:
            self.receiving = False
        if self._failures:
            logger.warning(
                "receive from %s works again after %d failure(s)", self.topic, self._failures
            )
            self._failures = 0
        if batch:
            self.counts.received += len(batch)
            self.keeper.hold(batch)
        return batch

    def _receive_failed(self, exc: Exception) -> None:
        if isinstance(exc, BalogError) and exc.fatal:
            self.engine._fatal(exc)
            return
        self._failures += 1
        delay = min(30.0, 0.5 * 2 ** min(self._failures - 1, 6))
        now = time.monotonic()
        if self._failures == 1 or now - self._reported_at >= REPORT_INTERVAL:
            self._reported_at = now
            logger.log(
                logging.WARNING if isinstance(exc, TransportError) else logging.ERROR,
                "receive from %s failed (%s); retrying with backoff, next in %.1f s "
                "(%d failure(s) in a row; reported at most every %.0f s)",
                self.topic,
                describe(exc),
                delay,
                self._failures,
                REPORT_INTERVAL,
            )
        if not self._draining:
            self.stopping.wait(delay)

    def _should_stop(self) -> bool:
        return not self._draining and self.stopping.is_set()

    # -- one at a time --------------------------------------------------------------------------

    def _process(self, batch: list[Delivery]) -> None:
        if self.any_async:
            self._event_loop().run_until_complete(self._process_async(batch))
            return
        settler, pipeline, consumers = self.settler, self.pipeline, self.consumers
        decide, settle, run_awaitable = pipeline.decide, settler.settle, self._run_awaitable
        stopping = None if self._draining else self.stopping
        done = 0
        try:
            for delivery in batch:
                if stopping is not None and stopping.is_set():
                    break
                settle(delivery, decide(delivery, consumers, run_awaitable))
                done += 1
        finally:
            settler.release(batch[done:])
            settler.flush_acks()

    async def _process_async(self, batch: list[Delivery]) -> None:
        settler, pipeline, consumers = self.settler, self.pipeline, self.consumers
        done = 0
        try:
            for delivery in batch:
                if self._should_stop():
                    break
                prepared = pipeline.prepare(delivery, consumers)
                if not isinstance(prepared, Decision):
                    prepared = await pipeline.acall(prepared, None, self._finish_where())
                settler.settle(delivery, prepared)
                done += 1
        finally:
            settler.release(batch[done:])
            settler.flush_acks()

    def _run_awaitable(self, awaitable: Awaitable[Any]) -> Any:
        """Run what a consumer returned to completion, from plain code."""
        handler_loop = self.engine._handler_loop
        if handler_loop is not None:
            return asyncio.run_coroutine_threadsafe(_await(awaitable), handler_loop).result()
        return self._event_loop().run_until_complete(_await(awaitable))

    def _finish_where(self) -> Callable[[Awaitable[Any]], Awaitable[Any]] | None:
        """How to await what an async consumer returned: here (``None``), or, under
        :meth:`~balog.engines.base.TransportEngine.serve`, on the application's loop."""
        return None if self.engine._handler_loop is None else self._on_handler_loop

    async def _on_handler_loop(self, awaitable: Awaitable[Any]) -> Any:
        handler_loop = self.engine._handler_loop
        if handler_loop is None:
            return await awaitable
        return await asyncio.wrap_future(
            asyncio.run_coroutine_threadsafe(_await(awaitable), handler_loop)
        )

    # -- many at once ---------------------------------------------------------------------------

    def _start_concurrent(self, prepared: Prepared, index: int) -> Any:
        """An async consumer is called here (it returns at once); a sync one runs on the
        worker's thread pool, and its future is returned for the pipeline to await."""
        if self.async_consumer[id(prepared.consumers[index])]:
            return self.pipeline.start(prepared, index)
        loop = asyncio.get_running_loop()
        return loop.run_in_executor(self._thread_pool(), self.pipeline.start, prepared, index)

    async def _concurrent(self) -> None:
        loop = asyncio.get_running_loop()
        limit = self.engine.max_in_flight
        tasks: set[asyncio.Task[None]] = set()
        tails: dict[str, asyncio.Task[None]] = {}
        settler, pipeline = self.settler, self.pipeline
        pause = 0.005
        while not self.stopping.is_set():
            settler.flush()
            room = limit - len(tasks)
            if room <= 0:
                await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                continue
            wait = self._next_wait() if not tasks else 0.0
            asked = min(self.engine.batch_size, room)
            batch = self._receive(wait, asked)
            if settler.queued and (len(batch) < asked or settler.queued >= asked):
                # Nothing more at hand (or a batch of acks is ready): send the acks now. Held
                # acks keep a broker's prefetch window full, and it pushes nothing more; once
                # they are sent, it pushes again soon, so look again soon.
                settler.flush_acks()
                pause = 0.001
            pause_for = self._pause_after_trouble()
            if pause_for:
                await asyncio.sleep(pause_for)
            if not batch:
                if tasks:
                    await asyncio.wait(tasks, timeout=pause, return_when=asyncio.FIRST_COMPLETED)
                    pause = min(pause * 2, 0.1)
                continue
            pause = 0.005
            for delivery in batch:
                prepared = pipeline.prepare(delivery, self.consumers)
                if isinstance(prepared, Decision):
                    settler.settle(delivery, prepared)
                    continue
                group = delivery.group
                after = tails.get(group) if group is not None else None
                task = loop.create_task(self._one(prepared, after))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                if group is not None:
                    tails[group] = task
                    task.add_done_callback(functools.partial(_forget, tails, group))
            await asyncio.sleep(0)
        if tasks:
            await asyncio.wait(tasks)
        settler.flush_acks()

    async def _one(self, prepared: Prepared, after: asyncio.Task[None] | None) -> None:
        delivery = prepared.delivery
        try:
            if after is not None:
                await asyncio.wait([after])
            if self.stopping.is_set():
                self.settler.release([delivery])  # not started before the stop: handed back
                return
            decision = await self.pipeline.acall(
                prepared, self._start_concurrent, self._finish_where()
            )
            self.settler.settle(delivery, decision)
        except BaseException as exc:
            logger.error(
                "worker %s could not finish message %s (%s); giving it back",
                self.name,
                delivery.message_id,
                describe(exc),
            )
            self.settler.release([delivery])
            if not isinstance(exc, Exception):
                raise

    # -- resources ------------------------------------------------------------------------------

    def _event_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
        return self._loop

    def _thread_pool(self) -> concurrent.futures.ThreadPoolExecutor:
        if self._threads is None:
            self._threads = concurrent.futures.ThreadPoolExecutor(
                self.engine.max_in_flight, thread_name_prefix=f"{self.name}-call"
            )
        return self._threads


def _forget(tails: dict[str, asyncio.Task[None]], group: str, task: asyncio.Task[None]) -> None:
    if tails.get(group) is task:
        del tails[group]
