"""A consumer process for the fault tests: runs an engine by name, and records to a ledger.

    python consumer_proc.py --engine sqlite --topic T --ledger FILE [--option key=value ...]
        [--work SECONDS] [--fail-id ID] [--started FILE]

Each processed event's id is appended to the ledger file (one ``O_APPEND`` write per line)
before the engine acks it, so a kill between the two shows as a duplicate, never as a loss.
``--started`` records each id as its processing begins; ``--work`` sleeps that long per event;
``--fail-id`` makes that one event fail every time. Prints ``ready`` once the engine is built,
and exits 0 after a SIGTERM once the engine has stopped.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from faults.helpers import LedgerFile


def _value(text: str) -> Any:
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--engine", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--ledger", required=True)
    parser.add_argument("--option", action="append", default=[])
    parser.add_argument("--work", type=float, default=0.0)
    parser.add_argument("--fail-id")
    parser.add_argument("--started")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)

    from balog.consumers import Consumer, ConsumerHub
    from balog.engines import create_engine

    ledger = LedgerFile(args.ledger)
    started = LedgerFile(args.started) if args.started else None

    def consume(event: dict[str, Any]) -> None:
        event_id = event["header"]["id"]
        if started is not None:
            started.record(event_id)
        if args.fail_id and event_id == args.fail_id:
            raise RuntimeError("this event always fails")
        if args.work:
            time.sleep(args.work)
        ledger.record(event_id)

    options = dict(o.split("=", 1) for o in args.option)
    hub = ConsumerHub([Consumer(consume, args.topic, name="ledger")])
    values = {k: _value(v) for k, v in options.items()}
    engine = create_engine(args.engine, hub=hub, handle_signals=False, **values)
    # Our own SIGTERM handler, installed before "ready": a SIGTERM that comes before run() has
    # started must still stop the engine cleanly (stop() is asked again until run() returns).
    term, done = threading.Event(), threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: term.set())

    def stopper() -> None:
        term.wait()
        while not done.is_set():
            engine.stop()
            done.wait(0.1)

    threading.Thread(target=stopper, daemon=True).start()
    print("ready", flush=True)
    try:
        engine.run()
    finally:
        done.set()
        engine.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
