"""The decoder fuzzed for a bounded time: atheris (coverage-guided) when it is installed, and
hypothesis on random and mutated bodies always.

``BALOG_FUZZ_SECONDS`` sets atheris's time budget (default 15 s; 120 s with ``--slow``).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from balog.events import decode, encode, new_event
from balog.exceptions import EventError

from .fuzz_decode import check

TARGET = Path(__file__).with_name("fuzz_decode.py")


def seed_bodies() -> list[bytes]:
    """Valid events of each built-in kind and a few known-hostile shapes, to start from."""
    log = new_event("fuzz.log", {"cls_type": "log", "message": "m\n", "severity": "info"})
    metrics = new_event(
        "fuzz.metrics", {"cls_type": "metrics", "values": [{"name": "a", "value": "1.0"}]}
    )
    legacy = new_event(
        "fuzz.legacy",
        {"cls_type": "x"},
        id="LGk37Fo3xLLVx9GrfnyTuvBd",
        timestamp="2014-10-07T15:06:51.641083+00:00",
    )
    legacy["schema"] = "0.0.1"
    bodies = [encode(e) for e in (log, metrics, legacy)]
    bodies += [b"[" * 40 + b"]" * 40, b'{"schema":"0.1.0","schema":"1"}', b'{"a":1e400}']
    return bodies


def test_fuzz_decode_with_atheris(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """Coverage-guided fuzzing of decode for a bounded time finds no crash or foreign exception."""
    if importlib.util.find_spec("atheris") is None:
        pytest.skip("atheris has no wheel for this platform; the hypothesis fuzzers below run")
    default = "120" if request.config.getoption("--slow") else "15"
    seconds = int(os.environ.get("BALOG_FUZZ_SECONDS", default))
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for n, body in enumerate(seed_bodies()):
        (corpus / f"seed-{n}").write_bytes(body)
    result = subprocess.run(
        [
            sys.executable,
            str(TARGET),
            f"-max_total_time={seconds}",
            "-timeout=10",
            "-max_len=8192",
            "-rss_limit_mb=4096",
            f"-artifact_prefix={tmp_path}/",
            str(corpus),
        ],
        capture_output=True,
        timeout=seconds + 120,
        check=False,
    )
    output = result.stderr.decode("utf-8", "replace")
    runs = [line for line in output.splitlines() if line.startswith("Done ")]
    print(runs[-1] if runs else output[-500:])
    assert result.returncode == 0, output[-4000:]
    assert runs, "the fuzzer did not report its runs"


FUZZ_SETTINGS = settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@FUZZ_SETTINGS
@given(st.binary(max_size=2048))
def test_decode_of_random_bytes_returns_an_event_or_raises_event_error(data: bytes) -> None:
    """Random bytes: decode returns a re-encodable event or raises a one-line EventError."""
    check(data, decode, encode, EventError)


INSERTS = [b"{", b"[", b'"', b"\\u0000", b",", b'"schema":"1"', b"\xff"]


@st.composite
def mutated_bodies(draw: st.DrawFn) -> bytes:
    body = bytearray(draw(st.sampled_from(seed_bodies())))
    for _ in range(draw(st.integers(1, 8))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "splice"]))
        at = draw(st.integers(0, max(len(body) - 1, 0)))
        if op == "flip" and body:
            body[at] = draw(st.integers(0, 255))
        elif op == "insert":
            body[at:at] = draw(
                st.sampled_from([b"{", b"[", b'"', b"\\u0000", b",", b'"schema":"1"'])
            )
        elif op == "delete" and body:
            del body[at : at + draw(st.integers(1, 8))]
        else:
            body[at:at] = draw(st.binary(max_size=16))
    return bytes(body)


@FUZZ_SETTINGS
@given(mutated_bodies())
def test_decode_of_mutated_events_returns_an_event_or_raises_event_error(data: bytes) -> None:
    """Valid bodies with bytes flipped, spliced or cut: an event or a one-line EventError."""
    check(data, decode, encode, EventError)
