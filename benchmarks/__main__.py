"""``python -m benchmarks`` (``make bench``): run every case and print one table.

Options: ``--json PATH`` also writes the results; ``--repeat N`` runs each measurement N times and
reports the median; ``--quick`` runs a fifth of the events once; ``--only a,b`` runs those cases.
A case whose module or service is missing is skipped with a note, never failed.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import os
import platform
import sys
import time
from typing import Any

from benchmarks import Row, Skip

CASES = [
    "pipeline",
    "producer",
    "sqs",
    "kombu",
    "redis",
    "sqlite",
    "peers",
    "aio",
    "memory",
    "startup",
]
"""Case modules in the order they run; each is ``benchmarks.<name>`` with ``run()``."""


def _default_events(run: Any) -> int | None:
    param = inspect.signature(run).parameters.get("events")
    if param is None or not isinstance(param.default, int):
        return None
    return param.default


def _target(row: Row) -> tuple[str, bool | None]:
    """The row's own target, or the issue's target for a backend row recognised by its name."""
    if "target" in row:
        return str(row["target"]), row.get("met")
    ratio = row.get("ratio")
    case = str(row.get("case", "")).lower()
    baseline = str(row.get("baseline", "")).lower()
    if "sqs" in case:
        wanted, text = 1.0, ">= 1.0x"
    elif "confirm" in case and "each" in baseline:
        wanted, text = 3.0, ">= 3x"
    elif "dramatiq" in baseline:
        wanted, text = 1.0, ">= 1.0x"
    elif any(word in case for word in ("rabbit", "amqp", "redis", "kombu")):
        wanted, text = 0.9, ">= 0.9x"
    else:
        return "", None
    return text, None if ratio is None else ratio >= wanted


def _value(value: Any, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "events/s":
        return f"{value:,.0f}/s"
    return f"{value:,.1f} {unit}"


def _table(rows: list[Row], notes: list[str], header: str) -> str:
    head = ["case", "balog", "baseline", "baseline value", "ratio", "target", "met?"]
    lines = []
    for r in rows:
        unit = r.get("unit", "events/s")
        target, met = _target(r)
        ratio = r.get("ratio")
        lines.append(
            [
                str(r.get("case", "?")),
                _value(r.get("balog_eps"), unit),
                str(r.get("baseline", "")),
                _value(r.get("baseline_eps"), unit),
                "-" if ratio is None else f"{ratio:.2f}x",
                target or "-",
                "-" if met is None else ("yes" if met else "NO"),
            ]
        )
    widths = [max(len(x) for x in col) for col in zip(head, *lines, strict=True)]

    def fmt(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    out = [header, "", fmt(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out.extend(fmt(line) for line in lines)
    if notes:
        out.append("")
        out.extend(f"- {note}" for note in notes)
    return "\n".join(out)


def _machine() -> dict[str, Any]:
    return {
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(terse=True),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--repeat", type=int, default=None, help="runs per measurement (3)")
    parser.add_argument("--quick", action="store_true", help="a fifth of the events, run once")
    parser.add_argument("--only", metavar="CASES", help=f"comma-separated: {','.join(CASES)}")
    args = parser.parse_args(argv)
    selected = CASES
    if args.only:
        selected = [c.strip() for c in args.only.split(",") if c.strip()]
        unknown = [c for c in selected if c not in CASES]
        if unknown:
            parser.error(f"unknown case(s) {', '.join(unknown)}; choose from {', '.join(CASES)}")
    repeat = args.repeat if args.repeat is not None else (1 if args.quick else 3)

    machine = _machine()
    rows: list[Row] = []
    notes: list[str] = []
    started = time.perf_counter()
    for name in selected:
        case_started = time.perf_counter()
        print(f"running {name} ...", file=sys.stderr, flush=True)
        try:
            module = importlib.import_module(f"benchmarks.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"benchmarks.{name}":
                notes.append(f"{name}: skipped (no benchmarks/{name}.py in this checkout)")
            else:
                notes.append(f"{name}: skipped ({exc.name} is not installed)")
            continue
        kwargs: dict[str, Any] = {"repeat": repeat}
        events = _default_events(module.run)
        if args.quick and events:
            kwargs["events"] = max(1, events // 5)
        try:
            case_rows = module.run(**kwargs)
        except Skip as exc:
            notes.append(f"{name}: skipped ({exc})")
            continue
        except ImportError as exc:
            notes.append(f"{name}: skipped ({exc})")
            continue
        except Exception as exc:  # one broken case must not lose the others' figures
            notes.append(f"{name}: FAILED ({type(exc).__name__}: {str(exc)[:300]})")
            continue
        for r in case_rows:
            target, met = _target(r)
            r.setdefault("target", target)
            r.setdefault("met", met)
            r.setdefault("group", name)
            if r.get("note"):
                notes.append(f"{r['case']}: {r['note']}")
        rows.extend(case_rows)
        print(f"  {name}: {time.perf_counter() - case_started:.1f}s", file=sys.stderr)
    elapsed = time.perf_counter() - started

    header = (
        f"balog benchmarks: {machine['cores']} cores, {machine['implementation']} "
        f"{machine['python']} on {machine['platform']}; median of {repeat} run(s) per figure"
        f"{', quick' if args.quick else ''}; {elapsed:.0f}s in all.\n"
        "Figures are noisy (other processes share the cores): compare the ratio, measured in the "
        "same run, more than the absolute numbers. For costs (us, ms, MB) lower is better and the "
        "ratio is baseline/balog."
    )
    print(_table(rows, notes, header))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(
                {
                    "machine": machine,
                    "repeat": repeat,
                    "quick": args.quick,
                    "seconds": elapsed,
                    "rows": rows,
                    "notes": notes,
                },
                f,
                indent=2,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
