"""The sqlite engine end to end: a hub on a database file, retries, dead letters, producers."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import balog
from balog.consumers import Consumer, ConsumerHub
from balog.engines import create_engine, engine_from_settings
from balog.engines.base import Backoff
from balog.engines.sqlite import SQLiteEngine
from balog.events import encode, new_event
from balog.exceptions import ConfigurationError
from balog.transports.sqlite import SQLiteTransport


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def event(n: int, cls_type: str = "job") -> bytes:
    return encode(new_event("tests.sqlite", {"cls_type": cls_type, "n": n}))


def test_engine_retries_then_dead_letters_with_reason(tmp_path: Path, unique_name: str) -> None:
    """A flaky event succeeds on retry; an always-failing one is dead-lettered with its reason."""
    calls: list[tuple[int, int]] = []
    flaky_failures = {"left": 1}

    def handle(ev: dict[str, Any]) -> None:
        n = ev["payload"]["n"]
        calls.append((n, len([c for c in calls if c[0] == n]) + 1))
        if n == 1 and flaky_failures["left"]:
            flaky_failures["left"] -= 1
            raise RuntimeError("flaky")
        if n == 2:
            raise ValueError("always broken")

    hub = ConsumerHub([Consumer(handle, unique_name, cls_type="job")])
    path = tmp_path / "engine.sqlite3"
    with SQLiteTransport(path) as producer:
        producer.send(unique_name, [event(0), event(1), event(2)])
    engine = SQLiteEngine(hub, path=path, max_attempts=3, backoff=Backoff(0.0, jitter=0.0))
    try:
        engine.drain(timeout=10.0)
        [letter] = engine.transport.dead_letters(unique_name)
        stats = engine.stats()[unique_name]
        assert json.loads(letter.body)["payload"]["n"] == 2
        assert "ValueError: always broken" in letter.reason
        assert "after 3 attempts" in letter.reason
        assert letter.receive_count == 3
        assert (stats.processed, stats.retried, stats.dead_lettered) == (2, 3, 1)
        assert sorted(calls) == [(0, 1), (1, 1), (1, 2), (2, 1), (2, 2), (2, 3)]
        assert engine.transport.size(unique_name) == 0
    finally:
        engine.close()


def test_malformed_body_dead_lettered_at_once(tmp_path: Path, unique_name: str) -> None:
    """A body that is not an event is dead-lettered on its first receive, never retried."""
    seen: list[int] = []
    hub = ConsumerHub([Consumer(lambda ev: seen.append(ev["payload"]["n"]), unique_name)])
    path = tmp_path / "engine.sqlite3"
    with SQLiteTransport(path) as producer:
        producer.send(unique_name, [b"not json {", event(7)])
    with SQLiteEngine(hub, path=path) as engine:
        engine.drain(timeout=10.0)
        [letter] = engine.transport.dead_letters(unique_name)
        assert (letter.body, letter.receive_count) == (b"not json {", 1)
        assert letter.reason.startswith("invalid event: DecodeError")
        assert seen == [7]


def test_replayed_dead_letter_is_processed_after_fix(tmp_path: Path, unique_name: str) -> None:
    """Dead letters replayed after the consumer is fixed are processed and leave the queue."""
    broken = {"on": True}
    done: list[int] = []

    def handle(ev: dict[str, Any]) -> None:
        if broken["on"]:
            raise RuntimeError("bug")
        done.append(ev["payload"]["n"])

    hub = ConsumerHub([Consumer(handle, unique_name)])
    engine = SQLiteEngine(hub, path=tmp_path / "e.sqlite3", max_attempts=1)
    try:
        engine.transport.send(unique_name, [event(1), event(2)])
        engine.drain(timeout=10.0)
        assert len(engine.transport.dead_letters(unique_name)) == 2
        broken["on"] = False
        assert engine.transport.replay_dead_letters(unique_name) == 2
        engine.drain(timeout=10.0)
        assert (done, engine.transport.dead_letters(unique_name)) == ([1, 2], [])
    finally:
        engine.close()


def test_run_consumes_until_stopped(tmp_path: Path, unique_name: str) -> None:
    """run() consumes events sent while it runs, and returns soon after stop()."""
    done: list[int] = []
    hub = ConsumerHub([Consumer(lambda ev: done.append(ev["payload"]["n"]), unique_name)])
    engine = SQLiteEngine(hub, path=tmp_path / "run.sqlite3", wait=0.2, handle_signals=False)
    runner = threading.Thread(target=engine.run)
    runner.start()
    try:
        with SQLiteTransport(engine.path) as producer:
            for n in range(20):
                producer.send(unique_name, [event(n)])
        assert wait_for(lambda: len(done) == 20)
    finally:
        engine.stop()
        runner.join(timeout=10.0)
        engine.close()
    assert (runner.is_alive(), sorted(done)) == (False, list(range(20)))


def test_lease_keeper_prevents_redelivery_of_slow_work(tmp_path: Path, unique_name: str) -> None:
    """A consumer slower than the lease is not redelivered to a second engine meanwhile."""
    calls: list[str] = []
    release = threading.Event()

    def slow(ev: dict[str, Any]) -> None:
        calls.append(threading.current_thread().name)
        release.wait(10.0)

    path = tmp_path / "slow.sqlite3"
    engines = [
        SQLiteEngine(
            ConsumerHub([Consumer(slow, unique_name)]),
            path=path,
            lease=1.0,
            wait=0.1,
            handle_signals=False,
        )
        for _ in range(2)
    ]
    runners = [threading.Thread(target=e.run) for e in engines]
    for r in runners:
        r.start()
    try:
        engines[0].transport.send(unique_name, [event(1)])
        assert wait_for(lambda: len(calls) >= 1)
        time.sleep(2.5)  # two and a half leases: expiry would have redelivered by now
        release.set()
        assert wait_for(lambda: engines[0].transport.size(unique_name) == 0)
    finally:
        release.set()
        for e in engines:
            e.stop()
        for r in runners:
            r.join(timeout=10.0)
        for e in engines:
            e.close()
    assert len(calls) == 1


def test_default_engine_and_settings(tmp_path: Path, unique_name: str) -> None:
    """Settings that name no engine build a SQLiteEngine on the given file; url works too."""
    hub = ConsumerHub([Consumer(lambda ev: None, unique_name)])
    path = tmp_path / "settings.sqlite3"
    engine = engine_from_settings(
        {"balog.engine.path": str(path), "balog.engine.lease": "12"}, hub=hub
    )
    try:
        assert isinstance(engine, SQLiteEngine)
        assert (engine.path, engine.lease, engine.transport.default_lease) == (str(path), 12, 12)
    finally:
        engine.close()
    by_url = create_engine("sqlite", hub=hub, url=f"sqlite:///{path}", max_attempts=2)
    try:
        assert isinstance(by_url, SQLiteEngine)
        assert (by_url.path, by_url.max_attempts) == (str(path), 2)
        assert repr(by_url).startswith("SQLiteEngine(transport=SQLiteTransport(path=")
    finally:
        by_url.close()


def test_producer_logger_to_engine(tmp_path: Path, unique_name: str) -> None:
    """Events logged with get_logger on the sqlite transport reach a sqlite engine's consumer."""
    got: list[dict[str, Any]] = []
    path = tmp_path / "logged.sqlite3"
    balog.configure("sqlite", topic=unique_name, path=str(path))
    balog.get_logger("tests.sqlite").info(
        "done", payload={"cls_type": "metrics", "values": [{"name": "n", "value": 1}]}
    )
    assert balog.flush(10.0)
    hub = ConsumerHub([Consumer(got.append, unique_name, cls_type="metrics", version="<1.0")])
    with SQLiteEngine(hub, path=path) as engine:
        engine.drain(timeout=10.0)
    assert [e["header"]["channel"] for e in got] == ["tests.sqlite.done"]


def test_engine_refuses_a_transport_option(tmp_path: Path) -> None:
    """SQLiteEngine builds its transport from path/url; a transport= option is a clear error."""
    hub = ConsumerHub([Consumer(lambda ev: None, "t")])
    with pytest.raises(ConfigurationError, match=r"path=.*url=.*not transport="):
        SQLiteEngine(hub, path=tmp_path / "x.sqlite3", transport="memory")
