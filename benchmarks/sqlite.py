"""The embedded sqlite backend against raw sqlite3, in one run, on the same kind of file.

Two cases, each repeated and reported as the median:

- ``sqlite produce``: one process sends ``events`` encoded events in batches of 10 through
  :class:`~balog.transports.sqlite.SQLiteTransport`; the baseline inserts the same bodies with
  plain ``sqlite3`` (WAL, ``synchronous=NORMAL``, one ``BEGIN IMMEDIATE`` transaction per batch).
- ``sqlite consume (2 processes)``: two processes empty a queue of ``events`` events, each
  running a :class:`~balog.engines.sqlite.SQLiteEngine` (decode, validate, route, a no-op
  consumer, ack); the baseline is two processes of plain ``sqlite3`` claiming batches of 10 with
  the same ``UPDATE ... RETURNING`` in ``BEGIN IMMEDIATE`` and deleting each row with a lone
  ``DELETE``, as balog acks. Process start-up is not timed.

Run ``python -m benchmarks.sqlite`` (``--repeat``, ``--events``, ``--json FILE``). The figures are
noisy, more so on a machine with few cores.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from multiprocessing.synchronize import Event as EventType
from typing import Any

from balog.consumers import Consumer, ConsumerHub
from balog.engines.sqlite import SQLiteEngine
from balog.events import encode, new_event
from balog.transports.sqlite import SQLiteTransport

TOPIC = "bench-events"
BATCH = 10
HAS_RETURNING = sqlite3.sqlite_version_info >= (3, 35, 0)

RAW_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS queue (id INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL, "
    "body BLOB NOT NULL, headers TEXT, visible_after REAL NOT NULL, "
    "receive_count INTEGER NOT NULL DEFAULT 0, lease_token TEXT, sent_at REAL NOT NULL)",
    "CREATE INDEX IF NOT EXISTS queue_topic ON queue (topic, id, visible_after)",
)


def bodies(count: int) -> list[bytes]:
    """``count`` distinct, valid metrics events as the producer encodes them."""
    return [
        encode(
            new_event(
                "benchmarks.sqlite.job",
                {"cls_type": "metrics", "values": [{"name": "n", "value": n}]},
            )
        )
        for n in range(count)
    ]


def raw_connect(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=5.0, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    for statement in RAW_SCHEMA:
        conn.execute(statement)
    return conn


def raw_send(conn: sqlite3.Connection, batch: list[bytes]) -> None:
    now = time.time()
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany(
        "INSERT INTO queue (topic, body, headers, visible_after, sent_at) VALUES (?, ?, ?, ?, ?)",
        [(TOPIC, body, None, now, now) for body in batch],
    )
    conn.execute("COMMIT")


def raw_claim(conn: sqlite3.Connection) -> list[tuple[int, str]]:
    now = time.time()
    conn.execute("BEGIN IMMEDIATE")
    if HAS_RETURNING:
        rows = conn.execute(
            "UPDATE queue SET receive_count = receive_count + 1, "
            "lease_token = lower(hex(randomblob(8))), visible_after = ? "
            "WHERE id IN (SELECT id FROM queue WHERE topic = ? AND visible_after <= ? "
            "ORDER BY id LIMIT ?) RETURNING id, lease_token",
            (now + 30.0, TOPIC, now, BATCH),
        ).fetchall()
    else:
        rows = []
        for (row_id,) in conn.execute(
            "SELECT id FROM queue WHERE topic = ? AND visible_after <= ? ORDER BY id LIMIT ?",
            (TOPIC, now, BATCH),
        ).fetchall():
            token = os.urandom(8).hex()
            conn.execute(
                "UPDATE queue SET receive_count = receive_count + 1, lease_token = ?, "
                "visible_after = ? WHERE id = ?",
                (token, now + 30.0, row_id),
            )
            rows.append((row_id, token))
    conn.execute("COMMIT")
    return rows


# -- produce ----------------------------------------------------------------------------------


def produce_balog(path: str, payloads: list[bytes]) -> float:
    with SQLiteTransport(path) as transport:
        transport.send(TOPIC, payloads[:1])  # open the file and create the tables untimed
        start = time.perf_counter()
        for i in range(0, len(payloads), BATCH):
            transport.send(TOPIC, payloads[i : i + BATCH])
        return time.perf_counter() - start


def produce_raw(path: str, payloads: list[bytes]) -> float:
    conn = raw_connect(path)
    try:
        raw_send(conn, payloads[:1])
        start = time.perf_counter()
        for i in range(0, len(payloads), BATCH):
            raw_send(conn, payloads[i : i + BATCH])
        return time.perf_counter() - start
    finally:
        conn.close()


# -- consume in two processes -----------------------------------------------------------------


def consume_balog_worker(path: str, ready: Any, go: EventType, done: Any) -> None:
    hub = ConsumerHub([Consumer(lambda event: None, TOPIC)])
    engine = SQLiteEngine(hub, path=path, handle_signals=False)
    try:
        assert isinstance(engine.transport, SQLiteTransport)
        engine.transport.size(TOPIC)  # connect before the clock starts
        ready.put(os.getpid())
        go.wait()
        handled = engine.drain()
        done.put((handled, time.perf_counter()))
    finally:
        engine.close()


def consume_raw_worker(path: str, ready: Any, go: EventType, done: Any) -> None:
    conn = raw_connect(path)
    ready.put(os.getpid())
    go.wait()
    handled = 0
    while True:
        rows = raw_claim(conn)
        if not rows:
            break
        for row_id, token in rows:
            conn.execute("DELETE FROM queue WHERE id = ? AND lease_token = ?", (row_id, token))
            handled += 1
    conn.close()
    done.put((handled, time.perf_counter()))


def consume(
    worker: Callable[[str, Any, EventType, Any], None], path: str, expected: int, procs: int = 2
) -> float:
    ctx = multiprocessing.get_context()
    ready, done, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    workers = [ctx.Process(target=worker, args=(path, ready, go, done)) for _ in range(procs)]
    for p in workers:
        p.start()
    try:
        for _ in workers:
            ready.get(timeout=60.0)
        start = time.perf_counter()
        go.set()
        results = [done.get(timeout=300.0) for _ in workers]
    finally:
        for p in workers:
            p.join(timeout=60.0)
            if p.is_alive():
                p.kill()
    handled = sum(int(n) for n, _ in results)
    if handled != expected:
        raise RuntimeError(f"consumed {handled} events, expected {expected}")
    return max(float(end) for _, end in results) - start


def fill_raw(path: str, payloads: list[bytes]) -> None:
    """Queue the events for a raw consume run (in the raw table)."""
    conn = raw_connect(path)
    try:
        for i in range(0, len(payloads), 500):
            raw_send(conn, payloads[i : i + 500])
    finally:
        conn.close()


def fill_balog(path: str, payloads: list[bytes]) -> None:
    """Queue the events for a balog consume run (through the transport)."""
    with SQLiteTransport(path) as transport:
        for i in range(0, len(payloads), 500):
            transport.send(TOPIC, payloads[i : i + 500])


# -- the run ----------------------------------------------------------------------------------


def _row(case: str, balog_seconds: list[float], raw_seconds: list[float], n: int) -> dict[str, Any]:
    balog_eps = n / statistics.median(balog_seconds)
    raw_eps = n / statistics.median(raw_seconds)
    return {
        "case": case,
        "balog_eps": round(balog_eps),
        "baseline": "raw sqlite3",
        "baseline_eps": round(raw_eps),
        "ratio": round(balog_eps / raw_eps, 2),
    }


def run(repeat: int = 3, events: int = 5000) -> list[dict[str, Any]]:
    """Run both cases ``repeat`` times with ``events`` events; one row per case (medians)."""
    payloads = bodies(events)
    produced: dict[str, list[float]] = {"balog": [], "raw": []}
    consumed: dict[str, list[float]] = {"balog": [], "raw": []}
    with tempfile.TemporaryDirectory(prefix="balog-bench-") as tmp:
        for r in range(repeat):
            # Alternate which side goes first so that neither always gets the warmer machine.
            order = ["balog", "raw"] if r % 2 == 0 else ["raw", "balog"]
            for side in order:
                path = os.path.join(tmp, f"produce-{side}-{r}.sqlite3")
                fn = produce_balog if side == "balog" else produce_raw
                produced[side].append(fn(path, payloads))
            for side in order:
                path = os.path.join(tmp, f"consume-{side}-{r}.sqlite3")
                if side == "balog":
                    fill_balog(path, payloads)
                    consumed[side].append(consume(consume_balog_worker, path, events))
                else:
                    fill_raw(path, payloads)
                    consumed[side].append(consume(consume_raw_worker, path, events))
    return [
        _row("sqlite produce", produced["balog"], produced["raw"], events),
        _row("sqlite consume (2 processes)", consumed["balog"], consumed["raw"], events),
    ]


def format_table(rows: list[dict[str, Any]]) -> str:
    header = f"{'case':<30} {'balog ev/s':>11} {'baseline':<12} {'baseline ev/s':>13} {'ratio':>6}"
    lines = [header, "-" * len(header)]
    for row in rows:
        lines.append(
            f"{row['case']:<30} {row['balog_eps']:>11,} {row['baseline']:<12} "
            f"{row['baseline_eps']:>13,} {row['ratio']:>6.2f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--repeat", type=int, default=3, help="runs per case (median reported)")
    parser.add_argument("--events", type=int, default=5000, help="events per run")
    parser.add_argument("--json", metavar="FILE", help="also write the rows as JSON to FILE")
    args = parser.parse_args(argv)
    rows = run(repeat=args.repeat, events=args.events)
    print(
        f"sqlite {sqlite3.sqlite_version}, {os.cpu_count()} cores, {args.events} events, "
        f"median of {args.repeat}; figures are noisy"
    )
    print(format_table(rows))
    if args.json:
        with open(args.json, "w") as out:
            json.dump(rows, out, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
