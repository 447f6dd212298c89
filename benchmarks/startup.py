"""Case 8, start-up: ``import balog`` in a fresh interpreter (no backend imported), and the whole
``balog --help`` command where the console script is installed. The baseline is an interpreter that
imports nothing (``python -c pass``)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

from benchmarks import Row, median, row

_IMPORT = (
    "import sys, time\n"
    "t = time.perf_counter()\n"
    "import balog\n"
    "t = time.perf_counter() - t\n"
    "heavy = sorted(m for m in ('kombu', 'boto3', 'botocore', 'jsonschema', 'sqlite3', 'redis')"
    " if m in sys.modules)\n"
    "print(t * 1000, ','.join(heavy))\n"
)


def _wall_ms(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True, timeout=60)
    return (time.perf_counter() - start) * 1000.0


def _import_ms() -> tuple[float, str]:
    out = subprocess.run(
        [sys.executable, "-c", _IMPORT], check=True, capture_output=True, text=True, timeout=60
    )
    ms, _, heavy = out.stdout.strip().partition(" ")
    return float(ms), heavy


def _console_script() -> str | None:
    here = os.path.join(os.path.dirname(sys.executable), "balog")
    return here if os.path.exists(here) else shutil.which("balog")


def run(repeat: int = 3, events: int = 0) -> list[Row]:
    runs = max(5, repeat * 3)
    bare = median([_wall_ms([sys.executable, "-c", "pass"]) for _ in range(runs)])
    imports = [_import_ms() for _ in range(runs)]
    import_ms = median([ms for ms, _ in imports])
    heavy = sorted({h for _, h in imports if h})
    rows = [
        row(
            "8 import balog (in process)",
            import_ms,
            "python -c pass (whole process)",
            bare,
            unit="ms",
            higher_is_better=False,
            target="< 100 ms, no backend",
            met=import_ms < 100.0 and not heavy,
            note=f"also imported: {', '.join(heavy)}" if heavy else "no backend imported",
        )
    ]
    script = _console_script()
    if script is None:
        rows.append(row("8 balog --help", None, "no console script installed", None))
    else:
        help_ms = median([_wall_ms([script, "--help"]) for _ in range(runs)])
        rows.append(
            row(
                "8 balog --help (whole process)",
                help_ms,
                "python -c pass (whole process)",
                bare,
                unit="ms",
                higher_is_better=False,
                target="< 300 ms",
                met=help_ms < 300.0,
            )
        )
    return rows
