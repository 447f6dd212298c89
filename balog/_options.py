"""Options are explicit: one way to refuse an unknown keyword, naming the one that was meant."""

from __future__ import annotations

import difflib
from collections.abc import Collection, Iterable

from balog.exceptions import ConfigurationError

__all__ = ["check_known", "nearest", "unknown_option"]


def nearest(name: str, valid: Iterable[str]) -> str | None:
    """The valid name closest to ``name`` (a likely typo of it), or ``None``."""
    matches = difflib.get_close_matches(name, list(valid), n=1, cutoff=0.6)
    return matches[0] if matches else None


def unknown_option(what: str, name: str, valid: Collection[str]) -> ConfigurationError:
    """The error for keyword ``name``, which ``what`` (``"engine 'kombu'"``) does not take."""
    guess = nearest(name, valid)
    hint = f"; did you mean {guess!r}?" if guess else ""
    known = ", ".join(sorted(valid)) or "none"
    return ConfigurationError(f"{what} has no option {name!r}{hint} (its options: {known})")


def check_known(what: str, given: Iterable[str], valid: Collection[str]) -> None:
    """Raise :func:`unknown_option`'s error for the first name of ``given`` not in ``valid``."""
    for name in given:
        if name not in valid:
            raise unknown_option(what, name, valid)
