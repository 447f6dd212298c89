"""Keeping secrets out of reprs, log lines, error messages and shown configuration: written once.

Every place that shows a URL, an option or a backend's error message goes through this module:

- :func:`mask_url` hides a URL's password and the values of query parameters with secret-looking
  names (``redis://:**@host/0``, ``...?password=**``);
- :func:`mask_options` hides the values of secret-looking option names, at any depth
  (``{"sentinel_kwargs": {"password": "**"}}``) and masks every URL among the values;
- :class:`Scrubber` removes known secret values from free text (a driver's error message may quote
  the password it was given), in every spelling a driver accepts (as given, percent-decoded,
  percent-encoded);
- :func:`mask_text` hides the password of any URL found in free text.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote, unquote, urlsplit

__all__ = [
    "MASK",
    "Scrubber",
    "is_secret_name",
    "mask_options",
    "mask_text",
    "mask_url",
    "secrets_in",
    "secrets_in_url",
]

MASK = "**"

_SECRET_WORDS = (
    "password",
    "passwd",
    "pwd",
    "secret",
    "token",
    "credential",
    "access_key",
    "api_key",
    "apikey",
    "private_key",
)
_URL_CREDENTIALS = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://[^\s:/@]*:)[^\s@/]*@")
_QUERY_VALUE = re.compile(r"([?&;])([^=&;#\s]+)=([^&;#\s]*)")


def is_secret_name(name: str) -> bool:
    """Whether an option or query parameter called ``name`` holds a secret."""
    lowered = name.lower()
    return any(word in lowered for word in _SECRET_WORDS)


def _mask_query(text: str) -> str:
    def replace(match: re.Match[str]) -> str:
        sep, key, value = match.groups()
        if value and is_secret_name(unquote(key)):
            return f"{sep}{key}={MASK}"
        return match.group(0)

    return _QUERY_VALUE.sub(replace, text)


def mask_url(url: str) -> str:
    """``url`` with its password, and query values with secret-looking names, shown as ``**``.

    ``amqp://guest:guest@host//`` becomes ``amqp://guest:**@host//`` and
    ``redis://host/0?password=x`` becomes ``redis://host/0?password=**``. The rest of the text is
    kept as written. Text that is not a URL comes back unchanged, except ``user:password@host``.
    """
    if "://" not in url:
        userinfo, at, host = url.rpartition("@")
        if at and ":" in userinfo and "/" not in userinfo:
            return f"{userinfo.split(':', 1)[0]}:{MASK}@{host}"
        return url
    scheme, _, rest = url.partition("://")
    # The authority runs to the first "/", "?" or "#" after the last "@" before any of them;
    # a password may itself hold "/", "?" or "#" when written unencoded, so split on the last "@"
    # of the part before the path when there is one.
    cut = rest.rfind("@")
    if cut != -1:
        userinfo, hostpart = rest[:cut], rest[cut + 1 :]
        if ":" in userinfo:
            rest = f"{userinfo.split(':', 1)[0]}:{MASK}@{hostpart}"
        elif userinfo and "/" not in userinfo and "?" not in userinfo:
            rest = f"{userinfo}@{hostpart}"  # a user name alone (or a token used as one)
            if is_secret_name(scheme) or scheme.lower() in {"sentinel"}:
                rest = f"{MASK}@{hostpart}"
    return f"{scheme}://{_mask_query(rest)}"


def mask_text(text: str) -> str:
    """``text`` with the password of every URL in it shown as ``**`` (for error messages)."""
    return _mask_query(_URL_CREDENTIALS.sub(lambda m: f"{m.group(1)}{MASK}@", text))


def mask_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``options`` fit to show: secret-named values ``**`` at any depth, URLs masked."""
    return {str(key): _mask_value(str(key), value) for key, value in options.items()}


def _mask_value(name: str, value: Any) -> Any:
    if is_secret_name(name) and value not in (None, "", b""):
        return MASK
    if isinstance(value, Mapping):
        return mask_options(value)
    if isinstance(value, (list, tuple)):
        return type(value)(_mask_value(name, v) for v in value)
    if isinstance(value, str):
        return mask_url(value)
    return value


def secrets_in_url(url: str) -> set[str]:
    """The secret values written in ``url``: its password and secret-named query values."""
    found: set[str] = set()
    try:
        parts = urlsplit(url)
        if parts.password:
            found.add(parts.password)
    except ValueError:
        _, _, rest = url.partition("://")
        userinfo, at, _ = rest.rpartition("@")
        if at and ":" in userinfo:
            found.add(userinfo.split(":", 1)[1])
    for _, key, value in _QUERY_VALUE.findall(url):
        if value and is_secret_name(unquote(key)):
            found.add(value)
    return found


def secrets_in(options: Mapping[str, Any]) -> set[str]:
    """The secret values among ``options``, at any depth, URLs included."""
    found: set[str] = set()

    def walk(name: str, value: Any) -> None:
        if isinstance(value, Mapping):
            for key, inner in value.items():
                walk(str(key), inner)
        elif isinstance(value, (list, tuple)):
            for inner in value:
                walk(name, inner)
        elif isinstance(value, bytes) and is_secret_name(name) and value:
            found.add(value.decode("utf-8", "replace"))
        elif isinstance(value, str) and value:
            if is_secret_name(name):
                found.add(value)
            if "://" in value or "@" in value:
                found.update(secrets_in_url(value))

    for key, value in options.items():
        walk(str(key), value)
    return found


class Scrubber:
    """Removes known secret values from text, in each spelling a driver may print them.

    Give it the secrets (or build it with :meth:`for_url` / :meth:`for_options`); calling it on a
    text returns the text with each of them, as given, percent-decoded and percent-encoded,
    replaced by ``**``, and with the password of any URL in it masked. Secrets shorter than three
    characters are matched only inside URLs, so that a one-letter password does not mask every
    occurrence of that letter.
    """

    __slots__ = ("_secrets",)

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        spellings: set[str] = set()
        for secret in secrets:
            if not secret:
                continue
            for spelling in (secret, unquote(secret), quote(secret, safe=""), quote(secret)):
                if len(spelling) >= 3:
                    spellings.add(spelling)
        self._secrets = tuple(sorted(spellings, key=len, reverse=True))

    @classmethod
    def for_url(cls, url: str, *more: str) -> Scrubber:
        return cls([*secrets_in_url(url), *more])

    @classmethod
    def for_options(cls, options: Mapping[str, Any], *more: str) -> Scrubber:
        return cls([*secrets_in(options), *more])

    def __bool__(self) -> bool:
        return bool(self._secrets)

    def __repr__(self) -> str:
        return f"Scrubber({len(self._secrets)} spelling(s))"

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        return mask_text(text)
