"""Fast yes/no checks for the JSON Schemas balog validates on every event.

fastjsonschema compiles a schema into a function that raises a detailed error on failure; its
generated code builds key sets for every object it checks, which is most of the cost of
consuming an event. For schemas written with a common subset of draft 7 (the built-in ones, and
most applications' payload schemas), :func:`compile_check` generates a leaner function with the
same contract as the full validator: it returns the value when it is valid, and at its first
doubt hands the value to the full validator (which raises, saying why). The verdict is
therefore the full validator's whenever the fast one would say no, and
``tests/test_fastpath.py`` checks both against jsonschema on generated events.

A ``pattern`` that could backtrack catastrophically (a repeated group holding a repeat or an
alternative, or more than :data:`MAX_REPEATS` unbounded repeats) is matched with the ``regex``
package, within :data:`PATTERN_BUDGET` seconds and without holding the GIL (so the engine's
lease keeper runs meanwhile): on a hostile string it raises :class:`PatternTimeout` instead of
running for seconds. Other patterns (balog's own, and most) are matched by the standard
library, which is faster. The same matcher serves the explaining validator and, in the full
validator's compiled code, replaces the standard library's (see :func:`bound_patterns`).

Supported keywords: ``type`` (one or a list), ``required``, ``properties``,
``additionalProperties`` (a boolean), ``items`` (one schema), ``minItems``/``maxItems``,
``minLength``/``maxLength``, ``pattern``, ``minimum``/``maximum``, ``exclusiveMinimum``/
``exclusiveMaximum`` (numbers), ``const``/``enum`` of strings, and the annotations (``title``,
``description``, ``$comment``, ``$schema``, ``default``, ``examples``). A schema using anything
else gets ``None``: the registry then uses fastjsonschema alone, as before.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

__all__ = [
    "MAX_REPEATS",
    "PATTERN_BUDGET",
    "PatternTimeout",
    "bound_patterns",
    "compile_check",
    "could_backtrack",
    "pattern_search",
]

PATTERN_BUDGET = 0.1
"""Seconds one ``pattern`` may take to match one string before validation gives up on it."""

MAX_REPEATS = 3
"""Unbounded repeats (``*``, ``+``, ``{n,}``) a pattern may hold and still be matched by the
standard library."""

Check = Callable[[Any], Any]

_ANNOTATIONS = frozenset({"title", "description", "$comment", "$schema", "default", "examples"})
_KEYWORDS = _ANNOTATIONS | {
    "type",
    "required",
    "properties",
    "additionalProperties",
    "items",
    "minItems",
    "maxItems",
    "minLength",
    "maxLength",
    "pattern",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "const",
    "enum",
}
_TYPES = {
    "object": "isinstance({v}, dict)",
    "array": "isinstance({v}, list)",
    "string": "isinstance({v}, str)",
    "boolean": "isinstance({v}, bool)",
    "null": "{v} is None",
    "number": "(isinstance({v}, (int, float)) and not isinstance({v}, bool))",
    "integer": (
        "((isinstance({v}, int) and not isinstance({v}, bool))"
        " or (isinstance({v}, float) and {v}.is_integer()))"
    ),
}
# As fastjsonschema and ECMA-262 read a pattern: an unescaped "$" matches at the very end only.
_DOLLAR = re.compile(r"(?<!\\)\$")


class PatternTimeout(Exception):
    """A ``pattern`` took longer than :data:`PATTERN_BUDGET` to match a value."""

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        super().__init__(pattern)


class _BoundedPattern:
    """A compiled pattern whose ``search`` gives up after :data:`PATTERN_BUDGET` seconds."""

    __slots__ = ("_compiled", "pattern")

    def __init__(self, pattern: str, rewritten: str | None = None) -> None:
        import regex

        self.pattern = pattern
        source = _DOLLAR.sub(r"\\Z", pattern) if rewritten is None else rewritten
        self._compiled = regex.compile(source, regex.VERSION0)

    def search(self, text: str) -> Any:
        try:
            return self._compiled.search(text, timeout=PATTERN_BUDGET, concurrent=True)
        except TimeoutError:
            raise PatternTimeout(self.pattern) from None


def could_backtrack(pattern: str) -> bool:
    """Whether ``pattern`` may need exponential (or high polynomial) time on some string: a
    group repeated without bound that holds a repeat or an alternative (``(a+)+``, ``(a|aa)*``),
    or more than :data:`MAX_REPEATS` unbounded repeats. Conservative: what it cannot read is
    taken to backtrack."""
    frames: list[list[bool]] = [[False, False]]  # per open group: holds a repeat, an alternative
    unbounded = 0
    i, n = 0, len(pattern)

    def repeat_at(j: int) -> tuple[bool, bool, int]:
        """(is a repeat, unbounded, end) of a quantifier starting at j."""
        if j >= n:
            return False, False, j
        c = pattern[j]
        if c in "*+":
            return True, True, j + 1 + (j + 1 < n and pattern[j + 1] in "?+")
        if c == "?":
            return True, False, j + 1 + (j + 1 < n and pattern[j + 1] in "?+")
        if c == "{":
            close = pattern.find("}", j)
            body = pattern[j + 1 : close] if close != -1 else ""
            low, comma, high = body.partition(",")
            if close == -1 or not low.isdigit() or (high and not high.isdigit()):
                return False, False, j  # a literal brace
            endless = bool(comma) and (not high or int(high) > 16)
            return True, endless or (not comma and int(low) > 16), close + 1
        return False, False, j

    while i < n:
        c = pattern[i]
        if c == "\\":
            i += 2
        elif c == "[":
            j = i + 1
            if j < n and pattern[j] == "^":
                j += 1
            if j < n and pattern[j] == "]":
                j += 1
            while j < n and pattern[j] != "]":
                j += 2 if pattern[j] == "\\" else 1
            if j >= n:
                return True
            i = j + 1
        elif c == "(":
            frames.append([False, False])
            i += 1
            if i < n and pattern[i] == "?":
                i += 1  # (?:, (?=, (?!, (?<=, (?<!, (?P<name>: read as a plain group
        elif c == ")":
            if len(frames) == 1:
                return True
            inner_repeat, inner_alt = frames.pop()
            is_repeat, endless, end = repeat_at(i + 1)
            if endless and (inner_repeat or inner_alt):
                return True
            if is_repeat:
                unbounded += endless
                frames[-1][0] = True
            frames[-1][0] = frames[-1][0] or inner_repeat
            frames[-1][1] = frames[-1][1] or inner_alt
            i = end
            continue
        elif c == "|":
            frames[-1][1] = True
            i += 1
        else:
            i += 1
        is_repeat, endless, end = repeat_at(i)
        if is_repeat and c != "(" and c != "|":
            frames[-1][0] = True
            unbounded += endless
            i = end
    return len(frames) != 1 or unbounded > MAX_REPEATS


def pattern_search(pattern: str) -> Callable[[str], Any]:
    """``search`` of ``pattern`` read as JSON Schema reads it (ECMA-262's ``$``): the standard
    library's for a pattern that cannot backtrack badly, else bounded in time (raising
    :class:`PatternTimeout`). Raises ``ValueError`` (``re.error``) for a pattern neither reads."""
    if could_backtrack(pattern):
        return _BoundedPattern(pattern).search
    return re.compile(_DOLLAR.sub(r"\\Z", pattern)).search


def bound_patterns(validator: Callable[..., Any]) -> None:
    """Make a function compiled by fastjsonschema match its patterns with the bounded matcher.

    Its generated code looks patterns up in a ``REGEX_PATTERNS`` mapping of its module globals
    (already rewritten for ECMA-262's ``$``); each is replaced by a bounded one. A validator
    whose code is not laid out so is left as it is (``tests/test_fastcheck.py`` pins this)."""
    patterns = getattr(validator, "__globals__", {}).get("REGEX_PATTERNS")
    if not isinstance(patterns, dict):
        return
    for key, compiled in list(patterns.items()):
        rewritten = getattr(compiled, "pattern", None)
        if isinstance(key, str) and isinstance(rewritten, str) and could_backtrack(key):
            patterns[key] = _BoundedPattern(key, rewritten)


class _Unsupported(Exception):
    """The schema uses a keyword (or a form of one) the fast check does not cover."""


class _Writer:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.names = 0
        self.constants: dict[str, Any] = {}
        self.guards: list[int] = []

    def var(self) -> str:
        self.names += 1
        return f"v{self.names}"

    def constant(self, value: Any) -> str:
        name = f"c{len(self.constants)}"
        self.constants[name] = value
        return name

    def line(self, depth: int, text: str) -> None:
        self.lines.append("    " * depth + text)

    def close(self, depth: int, inner: int) -> None:
        """End a block opened by :func:`_guarded` (a no-op if there was none)."""
        if inner == depth:
            return
        opened = self.guards.pop()
        if len(self.lines) == opened:
            self.lines.pop()  # an empty guard: nothing to check under it


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _emit(schema: Any, v: str, depth: int, out: _Writer) -> None:
    """Write the checks of ``schema`` on variable ``v``: ``return False`` on the first miss."""
    if schema is True or schema == {}:
        return
    if not isinstance(schema, Mapping) or not set(schema) <= _KEYWORDS:
        raise _Unsupported
    types = schema.get("type")
    kinds: set[str] = set()
    if types is not None:
        names = [types] if isinstance(types, str) else list(types)
        if not names or not all(isinstance(n, str) and n in _TYPES for n in names):
            raise _Unsupported
        kinds = set(names)
        test = " or ".join(_TYPES[n].format(v=v) for n in names)
        out.line(depth, f"if not ({test}):")
        out.line(depth + 1, "return False")
    for name in ("const", "enum"):
        if name in schema:
            allowed = [schema[name]] if name == "const" else schema[name]
            if not isinstance(allowed, list) or not all(isinstance(a, str) for a in allowed):
                raise _Unsupported  # JSON equality of other values is not Python's
            options = out.constant(frozenset(allowed))
            out.line(depth, f"if not (isinstance({v}, str) and {v} in {options}):")
            out.line(depth + 1, "return False")
    _emit_string(schema, v, depth, out, only=kinds == {"string"})
    _emit_number(schema, v, depth, out)
    _emit_array(schema, v, depth, out, only=kinds == {"array"})
    _emit_object(schema, v, depth, out, only=kinds == {"object"})


def _guarded(out: _Writer, depth: int, v: str, kind: str, only: bool) -> int:
    """Open ``if isinstance(v, kind):`` unless the type is already known; return the depth.
    :meth:`_Writer.close` drops the guard again if nothing was written under it."""
    if only:
        return depth
    out.line(depth, f"if {_TYPES[kind].format(v=v)}:")
    out.guards.append(len(out.lines))
    return depth + 1


def _emit_length(
    schema: Mapping[str, Any], v: str, depth: int, out: _Writer, low: str, high: str
) -> None:
    """``len(v)`` against the ``low``/``high`` keyword bounds (``minLength``, ``maxItems``, ...)."""
    for key, op in ((low, "<"), (high, ">")):
        if key in schema:
            bound = schema[key]
            if not isinstance(bound, int) or isinstance(bound, bool) or bound < 0:
                raise _Unsupported
            out.line(depth, f"if len({v}) {op} {bound}:")
            out.line(depth + 1, "return False")


def _emit_string(
    schema: Mapping[str, Any], v: str, depth: int, out: _Writer, *, only: bool
) -> None:
    keys = [k for k in ("minLength", "maxLength", "pattern") if k in schema]
    if not keys:
        return
    inner = _guarded(out, depth, v, "string", only)
    _emit_length(schema, v, inner, out, "minLength", "maxLength")
    if "pattern" in schema:
        pattern = schema["pattern"]
        if not isinstance(pattern, str):
            raise _Unsupported
        try:
            search = pattern_search(pattern)
        except Exception as exc:  # a pattern the regex package cannot read: the full validator
            raise _Unsupported from exc
        out.line(inner, f"if {out.constant(search)}({v}) is None:")
        out.line(inner + 1, "return False")
    out.close(depth, inner)


def _emit_number(schema: Mapping[str, Any], v: str, depth: int, out: _Writer) -> None:
    bounds = {
        "minimum": "<",
        "maximum": ">",
        "exclusiveMinimum": "<=",
        "exclusiveMaximum": ">=",
    }
    present = [k for k in bounds if k in schema]
    if not present:
        return
    inner = _guarded(out, depth, v, "number", False)
    for key in present:
        bound = schema[key]
        if not _number(bound):
            raise _Unsupported
        out.line(inner, f"if {v} {bounds[key]} {out.constant(bound)}:")
        out.line(inner + 1, "return False")
    out.close(depth, inner)


def _emit_array(schema: Mapping[str, Any], v: str, depth: int, out: _Writer, *, only: bool) -> None:
    present = [k for k in ("items", "minItems", "maxItems") if k in schema]
    if not present:
        return
    inner = _guarded(out, depth, v, "array", only)
    _emit_length(schema, v, inner, out, "minItems", "maxItems")
    if "items" in schema:
        items = schema["items"]
        if not isinstance(items, (Mapping, bool)):
            raise _Unsupported  # a list of schemas (tuple validation)
        if items is False:
            out.line(inner, f"if {v}:")
            out.line(inner + 1, "return False")
        elif items is not True and items != {}:
            item = out.var()
            out.line(inner, f"for {item} in {v}:")
            before = len(out.lines)
            _emit(items, item, inner + 1, out)
            if len(out.lines) == before:
                out.lines.pop()  # nothing to check per item
    out.close(depth, inner)


def _emit_object(
    schema: Mapping[str, Any], v: str, depth: int, out: _Writer, *, only: bool
) -> None:
    present = [k for k in ("required", "properties", "additionalProperties") if k in schema]
    if not present:
        return
    inner = _guarded(out, depth, v, "object", only)
    required = schema.get("required", [])
    if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
        raise _Unsupported
    for name in required:
        out.line(inner, f"if {name!r} not in {v}:")
        out.line(inner + 1, "return False")
    properties = schema.get("properties", {})
    if not isinstance(properties, Mapping):
        raise _Unsupported
    for name, sub in properties.items():
        if not isinstance(name, str):
            raise _Unsupported
        value = out.var()
        if name in required:
            out.line(inner, f"{value} = {v}[{name!r}]")
            _emit(sub, value, inner, out)
        else:
            out.line(inner, f"if {name!r} in {v}:")
            out.line(inner + 1, f"{value} = {v}[{name!r}]")
            _emit(sub, value, inner + 1, out)
    extra = schema.get("additionalProperties", True)
    if extra is False:
        known = out.constant(frozenset(properties))
        out.line(inner, f"if not {known}.issuperset({v}):")
        out.line(inner + 1, "return False")
    elif extra is not True:
        raise _Unsupported
    out.close(depth, inner)


def compile_check(schema: Mapping[str, Any], full: Check) -> Check | None:
    """A validator of ``schema`` (draft 7): returns a valid value, and hands any other to
    ``full`` (the complete validator, which raises). ``None`` when the schema uses a keyword
    outside the supported subset."""
    out = _Writer()
    try:
        _emit(schema, "data", 1, out)
    except _Unsupported:
        return None
    body = "\n".join(out.lines).replace("return False", "return full(data)")
    source = "def check(data):\n" + body + "\n    return data\n"
    namespace: dict[str, Any] = {**out.constants, "full": full}
    exec(compile(source, "<balog fast check>", "exec"), namespace)
    check: Check = namespace["check"]
    return check
