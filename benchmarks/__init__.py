"""balog's benchmark suite: ``python -m benchmarks`` (``make bench``) prints one table.

Each case module exposes ``run(repeat: int = 3, events: int = ...) -> list[dict]``, one dict per
row::

    {"case": "pipeline", "balog_eps": 61000.0, "baseline": "orjson.loads + fastjsonschema",
     "baseline_eps": 98000.0, "ratio": 0.62}

Rows may also carry ``"unit"`` (then ``balog_eps``/``baseline_eps`` are values in that unit, such
as ``"us/call"`` or ``"MB"``, and ``"higher_is_better": False``), ``"target"`` (text) and
``"met"`` (bool). A case that cannot run here (its backend module or service is missing) raises
:class:`Skip`. Benchmarks are not tests: nothing here asserts a timing.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable
from typing import Any

__all__ = ["Skip", "best_of", "median", "row", "sample_event", "timed_eps"]

Row = dict[str, Any]


class Skip(Exception):
    """This case cannot run here; the message says why (a missing module or service)."""


def median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def best_of(values: list[float]) -> float:
    return max(values) if values else float("nan")


def timed_eps(count: int, func: Callable[[], Any]) -> float:
    """Run ``func`` once (with the collector paused) and return ``count`` per second of it."""
    gc.collect()
    gc.disable()
    try:
        start = time.perf_counter()
        func()
        elapsed = time.perf_counter() - start
    finally:
        gc.enable()
    return count / elapsed if elapsed > 0 else float("inf")


def row(
    case: str,
    balog: float | None,
    baseline: str,
    baseline_value: float | None,
    *,
    unit: str = "events/s",
    higher_is_better: bool = True,
    **extra: Any,
) -> Row:
    """One table row; ``ratio`` is balog over baseline (baseline over balog for costs)."""
    ratio = None
    if balog and baseline_value:
        ratio = balog / baseline_value if higher_is_better else baseline_value / balog
    result: Row = {
        "case": case,
        "balog_eps": balog,
        "baseline": baseline,
        "baseline_eps": baseline_value,
        "ratio": ratio,
    }
    if unit != "events/s":
        result["unit"] = unit
        result["higher_is_better"] = higher_is_better
    result.update(extra)
    return result


def sample_event(n: int = 0) -> dict[str, Any]:
    """A ``metrics`` event of about 500 bytes on the wire, like a typical application event."""
    from balog.events import new_event

    return new_event(
        "bench.jobs.report.done",
        {
            "cls_type": "metrics",
            "values": [
                {"name": "rows_read", "value": 1234 + n},
                {"name": "rows_written", "value": 1200},
                {"name": "bytes_out", "value": 98_765_432},
                {"name": "duration_seconds", "value": 12.75},
                {"name": "retries", "value": 0},
            ],
        },
        context={
            "fqdn": "worker-07.eu-west-1.compute.internal",
            "application": "report-builder",
            "pid": 41872,
            "job": "nightly-report-2026-11-28",
        },
    )
