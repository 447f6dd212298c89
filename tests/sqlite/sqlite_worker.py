"""A producer or consumer process for the multi-process sqlite tests (run as a script).

    python sqlite_worker.py produce DATABASE TOPIC FIRST COUNT
    python sqlite_worker.py consume DATABASE TOPIC LEDGER [LEASE [WORK]]

The producer logs events numbered FIRST..FIRST+COUNT-1 with balog's logger. The consumer runs a
sqlite engine until SIGTERM, spends WORK seconds on each event (default 0.001) and appends
each number it processes to LEDGER, one per line.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import balog
from balog.consumers import Consumer, ConsumerHub
from balog.engines.sqlite import SQLiteEngine


def produce(database: str, topic: str, first: int, count: int) -> int:
    balog.configure("sqlite", topic=topic, path=database, batch_size=25)
    logger = balog.get_logger("tests.sqlite.worker")
    for n in range(first, first + count):
        logger.info("job", payload={"cls_type": "job", "n": n})
    return 0 if balog.flush(30.0) else 1


def consume(database: str, topic: str, ledger: str, lease: float, work: float) -> int:
    with open(ledger, "a", buffering=1) as out:

        def handle(event: dict[str, Any]) -> None:
            time.sleep(work)  # a little work, so that both processes get a share
            out.write(f"{event['payload']['n']}\n")

        hub = ConsumerHub([Consumer(handle, topic, cls_type="job")])
        engine = SQLiteEngine(hub, path=database, lease=lease, wait=0.2)
        with engine:
            engine.run()
    return 0


def main(argv: list[str]) -> int:
    command, database, topic = argv[:3]
    if command == "produce":
        return produce(database, topic, int(argv[3]), int(argv[4]))
    lease = float(argv[4]) if len(argv) > 4 else 30.0
    work = float(argv[5]) if len(argv) > 5 else 0.001
    return consume(database, topic, argv[3], lease, work)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
