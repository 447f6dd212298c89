"""Small text helpers shared by error messages and log lines."""

from __future__ import annotations

import re

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def clip(text: str, limit: int = 200) -> str:
    """Return ``text`` on one line, control characters escaped, at most ``limit`` characters.

    Every reason, error message or log line that may carry input from outside goes through this,
    so a hostile body can neither forge extra log lines (``\\n``, ``\\r``), drive the terminal (ANSI
    escapes) nor flood a log with its size.
    """
    if len(text) > limit * 4:
        text = text[: limit * 4]
    escaped = _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)
    if len(escaped) > limit:
        return escaped[: limit - 3] + "..."
    return escaped
