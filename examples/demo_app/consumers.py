"""The demo's consumers: one for ``metrics`` events, one for ``log`` events."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from balog.consumers import consumer_config


def _record(settings: Mapping[str, Any], event: dict[str, Any], what: str) -> None:
    # One short line per event, appended with O_APPEND: lines from several worker processes do
    # not interleave.
    line = f"{event['header']['id']} {event['header']['channel']} {what}\n"
    fd = os.open(settings["demo.ledger"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode("utf-8"))
    finally:
        os.close(fd)
    print(f"consumed {what} event from {event['header']['channel']}", flush=True)


@consumer_config(topic="demo-events-{env}", cls_type="metrics", version="<1.0")
def record_metrics(settings: Mapping[str, Any], event: dict[str, Any]) -> None:
    total = sum(float(v["value"]) for v in event["payload"]["values"])
    _record(settings, event, f"metrics(total={total:g})")


@consumer_config(topic="demo-events-{env}", cls_type="log", version="<1.0")
def record_log(settings: Mapping[str, Any], event: dict[str, Any]) -> None:
    _record(settings, event, f"log({event['payload']['message']})")
