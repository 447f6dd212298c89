"""``balog consume PACKAGE...``: the worker process.

It scans the packages, builds the engine from the configuration and runs it until SIGTERM or
Ctrl-C; the engine then finishes the events in progress, gives back those received but not
started, and the process exits 0. A signal that arrives while the packages are still being
imported stops the process just as cleanly, before any event is taken.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable
from types import FrameType
from typing import IO, Any

from balog import _plugins
from balog.cli._common import (
    build_operator,
    building,
    scan_packages,
    setup_logging,
    summary,
)
from balog.config import Config
from balog.exceptions import ConfigurationError


class StatusReporter:
    """Prints one status line every ``interval`` seconds from ``stats()`` (per-topic counts)."""

    def __init__(
        self,
        stats: Callable[[], dict[str, Any]],
        interval: float,
        stream: IO[str],
        topics: Iterable[str] = (),
    ) -> None:
        self.stats = stats
        self.topics = list(topics)
        self.interval = interval
        self.stream = stream
        self._last: dict[str, int] = {}
        self._last_at = time.monotonic()

    def line(self) -> str:
        now = time.monotonic()
        elapsed = max(now - self._last_at, 1e-6)
        snapshot = self.stats()
        processed = sum(s.processed for s in snapshot.values())
        retried = sum(s.retried for s in snapshot.values())
        dead = sum(s.dead_lettered for s in snapshot.values())
        rates = []
        for topic in sorted(set(snapshot) | set(self.topics)):
            counts = snapshot.get(topic)
            done = counts.processed + counts.unrouted + counts.dead_lettered if counts else 0
            rates.append(f"{topic} {(done - self._last.get(topic, 0)) / elapsed:.1f}/s")
            self._last[topic] = done
        self._last_at = now
        per_topic = ", ".join(rates) or "no topics"
        return (
            f"balog: processed {processed}, retried {retried}, dead-lettered {dead} | {per_topic}"
        )

    def emit(self) -> None:
        self.stream.write(self.line() + "\n")
        self.stream.flush()


def run_consume(args: argparse.Namespace, config: Config) -> int:
    if args.status_interval < 0:
        raise ConfigurationError("--status-interval must be 0 or more")
    stop_requested = threading.Event()

    def early_stop(signum: int, frame: FrameType | None) -> None:
        stop_requested.set()

    # Until the engine installs its own handlers, a signal is noted here and passed on to it.
    previous = {sig: signal.signal(sig, early_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        return _consume(args, config, stop_requested)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _consume(args: argparse.Namespace, config: Config, stop_requested: threading.Event) -> int:
    from balog.engines import create_engine

    setup_logging(config.log_level or "INFO")
    hub = scan_packages(args.packages)
    if not len(hub):
        raise ConfigurationError(f"no consumers found in {', '.join(args.packages)}")
    operator = build_operator(config)
    options = config.engine_options(_plugins.url_key(_plugins.backend_factory(config.engine)))
    with building(f"engine {config.engine!r}", config):
        engine = create_engine(config.engine, hub=hub, consumer_operator=operator, **options)
    stats = getattr(engine, "stats", None)
    routes = hub.by_topic(operator)
    print(
        f"balog: consuming {', '.join(routes)} with {len(hub)} consumer(s) from "
        f"{', '.join(args.packages)}; {summary(config)}",
        file=sys.stderr,
        flush=True,
    )
    reporter = StatusReporter(stats, args.status_interval, sys.stderr, routes) if stats else None
    finished = threading.Event()

    def watch() -> None:
        # Pass on a signal that came before the engine's handlers; print the status lines.
        next_status = time.monotonic() + args.status_interval
        while not finished.wait(0.1):
            if stop_requested.is_set():
                engine.stop()
            if reporter is not None and args.status_interval and time.monotonic() >= next_status:
                reporter.emit()
                next_status = time.monotonic() + args.status_interval

    watcher = threading.Thread(target=watch, name="balog-cli-status", daemon=True)
    watcher.start()
    try:
        if not stop_requested.is_set():
            engine.run()
    finally:
        finished.set()
        watcher.join()
        engine.close()
    if reporter is not None:
        print(reporter.line().replace("balog:", "balog: stopped;", 1), file=sys.stderr)
    else:
        print("balog: stopped", file=sys.stderr)
    return 0
