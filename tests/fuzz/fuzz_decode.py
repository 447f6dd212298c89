"""Fuzz target for :func:`balog.events.decode`.

Run directly with atheris (libFuzzer options apply)::

    python tests/fuzz/fuzz_decode.py -max_total_time=60 [CORPUS_DIR ...]

The property: for any bytes, decode returns an event (a dict that re-encodes and decodes to
itself) or raises an :class:`~balog.exceptions.EventError` whose message is one short line.
Anything else (another exception, a hang, a crash) is a bug.
"""

from __future__ import annotations

import sys
from typing import Any


def check(data: bytes, decode: Any, encode: Any, event_error: type[Exception]) -> None:
    """The property; raises AssertionError (or the unexpected exception) on a finding."""
    try:
        event = decode(data)
    except event_error as exc:
        message = str(exc)
        for char in ("\n", "\r", "\x1b"):
            assert char not in message, message
        assert len(message) < 1200, len(message)
        return
    assert isinstance(event, dict)
    assert decode(encode(event)) == event


def main() -> None:
    import atheris

    with atheris.instrument_imports():
        from balog.events import decode, encode
        from balog.exceptions import EventError

    def target(data: bytes) -> None:
        check(data, decode, encode, EventError)

    atheris.Setup(sys.argv, target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
