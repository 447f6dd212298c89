"""The balog event: a facility layer around an application layer, and its wire format.

An event is a JSON object (UTF-8 on the wire)::

    {"schema": "0.1.0",
     "header": {"id": "...", "channel": "myapp.jobs.done",
                "timestamp": "2026-01-01T00:00:00.000000+00:00",
                "context": {"fqdn": "...", "application": "..."}},
     "payload": {"cls_type": "metrics", ...}}

The facility layer (``schema`` and ``header``) is checked against the JSON Schema shipped for the
schema's major version; the application layer (``payload``) is open content, checked only when a
JSON Schema is registered for its ``cls_type``. Validation runs compiled validators
(fastjsonschema); jsonschema is imported only to explain a failure.

Events written in an older shape are brought to today's by *upcasters*, registered per
``cls_type`` and schema version (:meth:`SchemaRegistry.register_upcaster`, or the
``balog.upcasters`` entry point group). :meth:`SchemaRegistry.upcast` applies them after decoding
and before routing; validation checks an old event in the shape its upcasters give it, so an old
form they turn into today's is valid. Built in, for schema ``0.0.x`` (balog 1.x): metric values
as numbers, and header timestamps in today's ISO 8601 form.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import os
import pkgutil
import random
import re
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, TypeAlias

from balog._text import clip
from balog.exceptions import (
    ConfigurationError,
    DecodeError,
    EventTooDeep,
    EventTooLarge,
    InvalidEvent,
    InvalidPayload,
    UnsupportedSchemaVersion,
)

if TYPE_CHECKING:
    from packaging.specifiers import SpecifierSet

__all__ = [
    "BUILTIN_UPCASTERS",
    "DEFAULT_MAX_DEPTH",
    "DEFAULT_MAX_SIZE",
    "FACILITY_VERSION",
    "UPCASTER_GROUP",
    "EventDict",
    "SchemaRegistry",
    "UpcastEvent",
    "UpcastFunc",
    "Upcaster",
    "decode",
    "default_registry",
    "dumps",
    "encode",
    "loads",
    "new_event",
    "raw",
    "timestamp",
    "upcaster",
    "validate",
]

EventDict: TypeAlias = dict[str, Any]
"""An event in its wire layout: ``event["header"]["channel"]``, ``event["payload"]["cls_type"]``."""

FACILITY_VERSION = "0.1.0"
"""The facility schema version balog writes. It stays below 1.0 until a breaking change."""

DEFAULT_MAX_SIZE = 256 * 1024
"""Largest body, in bytes, that :func:`decode` accepts by default (SQS's classic limit)."""

DEFAULT_MAX_DEPTH = 32
"""Deepest nesting of arrays and objects that :func:`decode` accepts by default."""

PAYLOAD_SCHEMA_GROUP = "balog.payload_schemas"
"""Entry point group through which packages register payload schemas, named by cls_type."""

UPCASTER_GROUP = "balog.upcasters"
"""Entry point group through which packages register upcasters: each entry point resolves to an
:class:`Upcaster`, or to an iterable of them."""

Validator: TypeAlias = Callable[[Any], Any]

UpcastFunc: TypeAlias = Callable[[EventDict], EventDict]
"""An upcaster's function: given a private copy of an old event, return it in today's shape."""


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):  # 1e400 overflows; orjson refuses it too
        raise ValueError("number is infinity when parsed as double")
    return value


_std_decoder = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float)
_std_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def std_loads(body: bytes | str) -> Any:
    """Parse JSON with the standard library (NaN and Infinity refused, as orjson does)."""
    text = body.decode("utf-8") if isinstance(body, (bytes, bytearray, memoryview)) else body
    return _std_decoder.decode(text)


def std_dumps(obj: Any) -> bytes:
    """Serialise to compact UTF-8 JSON with the standard library."""
    return _std_encoder.encode(obj).encode("utf-8")


def _pick_codec() -> tuple[
    Callable[[bytes | str], Any], Callable[[Any], bytes], Callable[[Any], bytes]
]:
    try:  # the `fast` extra; the standard library is the fallback
        import orjson
    except ImportError:  # pragma: no cover - exercised where orjson is not installed
        return std_loads, std_dumps, std_dumps
    orjson_dumps = orjson.dumps

    def compact_dumps(obj: Any) -> bytes:
        # orjson writes into a buffer of at least a few KiB and shrinks it in place; the freed
        # tail stays behind as a hole in the heap, so each body kept (a queued message, a
        # recorded send) holds about 4 KiB of memory. A copy costs 0.2 us and holds its length.
        return bytes(memoryview(orjson_dumps(obj)))

    return orjson.loads, compact_dumps, orjson_dumps


loads, dumps, _redump = _pick_codec()
"""``loads(body)`` parses JSON and ``dumps(obj)`` writes compact UTF-8 JSON bytes: orjson when it is
installed (the ``fast`` extra), the standard library otherwise."""


def _written_as_parsed(event: Any, body: bytes) -> bool:
    """Whether ``body`` is exactly what the codec writes for the object parsed from it.

    Then no key of it can have been repeated (a repeated key is dropped by the parse, so the
    object would write shorter), and the cost of looking for repeated keys is spared: balog's
    own producer writes every event this way. Any other body (pretty-printed, written by another
    encoder) is looked at key by key.
    """
    try:
        return bool(_redump(event) == body)
    except (TypeError, ValueError, OverflowError):
        return False


def _load_schema(filename: str) -> dict[str, Any]:
    # pkgutil rather than importlib.resources, whose import alone (tempfile, zipfile, ...)
    # costs `import balog` more than 10 ms; both read through the package's loader.
    data = pkgutil.get_data("balog", f"schemas/{filename}")
    if data is None:  # pragma: no cover - only with a loader that cannot read data files
        raise ConfigurationError(f"balog's schema {filename} cannot be read")
    schema: dict[str, Any] = json.loads(data)
    return schema


_COMPILED: dict[str, Validator] = {}
"""Compiled validators by the canonical text of their schema: a registry that is reset (between
tests) or built again compiles each distinct schema once per process. A pure cache."""


def _compile(schema: Mapping[str, Any]) -> Validator:
    try:
        key: str | None = json.dumps(schema, sort_keys=True)
    except (TypeError, ValueError):
        key = None
    found = None if key is None else _COMPILED.get(key)
    if found is None:
        # The schema as written, not its sorted text: fastjsonschema generates its checks in
        # the order of the keywords, and the written order is the cheaper one here.
        found = _compile_now(schema)
        if key is not None and len(_COMPILED) < 256:
            _COMPILED[key] = found
    return found


def _compile_now(schema: Mapping[str, Any]) -> Validator:
    import fastjsonschema

    from balog._fastcheck import bound_patterns, compile_check

    try:
        full: Validator = fastjsonschema.compile(dict(schema))
    except fastjsonschema.JsonSchemaDefinitionException as exc:
        raise ConfigurationError(f"invalid JSON Schema: {clip(str(exc))}") from exc
    bound_patterns(full)  # its patterns matched within the validation budget
    # A leaner check first where the schema allows one; it hands anything it doubts to the
    # full validator, whose verdict (and error) is then the one that counts.
    return compile_check(schema, full) or full


EXPLAINED_ERRORS = 20
"""Errors of an invalid event looked at to explain it (the first in document order is named)."""

# JSON Schema patterns follow ECMA-262, where ``$`` matches only at the very end; Python's ``$``
# also matches before a final newline. fastjsonschema rewrites an unescaped ``$`` to ``\Z``; the
# explaining validator does the same (balog._fastcheck.pattern_search), or it would find nothing
# wrong with "0.1.0\n".


@functools.lru_cache(maxsize=1)
def _explainer() -> Any:
    import jsonschema

    from balog._fastcheck import pattern_search

    searches: dict[str, Any] = {}

    def pattern(validator: Any, patrn: str, instance: Any, schema: Any) -> Any:
        if not validator.is_type(instance, "string"):
            return
        search = searches.get(patrn)
        if search is None:
            search = pattern_search(patrn)
            if len(searches) < 256:
                searches[patrn] = search
        if not search(instance):
            yield jsonschema.ValidationError(f"{instance!r} does not match {patrn!r}")

    extend: Any = jsonschema.validators.extend
    return extend(jsonschema.Draft7Validator, {"pattern": pattern})


def _over_budget(exc: Exception) -> str:
    from balog._fastcheck import PATTERN_BUDGET

    pattern = clip(str(getattr(exc, "pattern", "")), 80)
    return (
        f"the pattern {pattern!r} took longer than {PATTERN_BUDGET:g} s to match a value "
        "(validation budget exceeded)"
    )


def _explain(schema: Mapping[str, Any], instance: Any, prefix: str) -> tuple[str, str | None]:
    """Return (message, field) for the most relevant reason ``instance`` fails ``schema``."""
    import jsonschema

    from balog._fastcheck import PatternTimeout

    validator = _explainer()(schema)
    # The first few errors are enough to name the field to fix, and an invalid body of
    # thousands of bad values must not cost seconds to explain.
    try:
        errors = list(itertools.islice(validator.iter_errors(instance), EXPLAINED_ERRORS))
    except PatternTimeout as exc:
        return _over_budget(exc), prefix or None
    # Report in document order (envelope before header before payload), shallowest first, so
    # the message names the first thing a reader of the event would need to fix.
    order = {"schema": 1, "header": 2, "payload": 3}
    errors.sort(
        key=lambda e: (
            order.get(str(e.absolute_path[0]), 4) if e.absolute_path else 0,
            len(e.absolute_path),
        )
    )
    error = jsonschema.exceptions.best_match(errors[:1]) if errors else None
    if error is None:  # the compiled validator and jsonschema disagree; say so plainly
        return "rejected by the compiled validator", prefix or None
    parts = [prefix] if prefix else []
    parts.extend(str(p) for p in error.absolute_path)
    if error.validator == "required" and isinstance(error.instance, dict):
        missing = [name for name in error.validator_value if name not in error.instance]
        if missing:
            parts.append(str(missing[0]))
            return "required field is missing", ".".join(parts)
    field = ".".join(parts) or None
    return clip(error.message), field


@functools.lru_cache(maxsize=256)
def _major(version: str) -> int | None:
    head = version.split(".", 1)[0]
    if not head.isdigit() or len(head) > 9:
        return None
    return int(head)


# -- upcasters ---------------------------------------------------------------------------------


@functools.lru_cache(maxsize=256)
def _specifier(text: str) -> SpecifierSet:
    from packaging.specifiers import InvalidSpecifier, SpecifierSet

    try:
        return SpecifierSet(text)
    except InvalidSpecifier as exc:
        raise ConfigurationError(f"invalid version specifier {text!r}: {exc}") from exc


@dataclasses.dataclass(frozen=True)
class Upcaster:
    """Brings events of ``cls_type`` written at a schema version in ``versions`` to today's shape.

    ``cls_type`` ``None`` means every cls_type (an upcaster of the facility layer); ``versions`` is
    a version specifier such as ``"<0.1"`` or ``">=0.1,<0.3"``. ``func`` receives a private copy
    of the event (it may change it in place) and returns the event in today's shape, keeping
    ``schema`` as it was. It should leave alone what it does not recognise, so that validation
    reports it. ``name`` appears in errors; it defaults to the function's qualified name.
    """

    cls_type: str | None
    versions: str
    func: UpcastFunc
    name: str = ""

    def __post_init__(self) -> None:
        if self.cls_type is not None and (not isinstance(self.cls_type, str) or not self.cls_type):
            raise ConfigurationError("an upcaster's cls_type must be a non-empty string or None")
        if not isinstance(self.versions, str) or not self.versions.strip():
            raise ConfigurationError("an upcaster's versions must be a version specifier string")
        if not callable(self.func):
            raise ConfigurationError(f"upcaster function {self.func!r} is not callable")
        if not self.name:
            func_name = getattr(self.func, "__qualname__", None) or repr(self.func)
            module = getattr(self.func, "__module__", None)
            object.__setattr__(self, "name", f"{module}.{func_name}" if module else func_name)

    def applies_to(self, version: str, cls_type: Any) -> bool:
        """True if this upcaster applies to an event of ``cls_type`` at schema ``version``."""
        if self.cls_type is not None and self.cls_type != cls_type:
            return False
        parsed = _parse_version(version)
        return parsed is not None and _specifier(self.versions).contains(parsed, prereleases=True)

    def __call__(self, event: EventDict) -> EventDict:
        return self.func(event)


def upcaster(cls_type: str | None, versions: str) -> Callable[[UpcastFunc], Upcaster]:
    """Declare a function an :class:`Upcaster`, for an entry point or
    :meth:`SchemaRegistry.add_upcaster`::

        @upcaster("order.paid", versions="<0.2")
        def amount_in_cents(event):
            payload = event["payload"]
            payload["amount"] = round(payload.pop("amount_dollars") * 100)
            return event
    """

    def declare(func: UpcastFunc) -> Upcaster:
        return Upcaster(cls_type, versions, func)

    return declare


class UpcastEvent(dict[str, Any]):
    """An event an upcaster changed: a plain event dict, with the event as decoded in ``raw``."""

    __slots__ = ("raw",)

    raw: EventDict


def raw(event: EventDict) -> EventDict:
    """The event as it was decoded, before any upcaster: ``event.raw``, or ``event`` itself."""
    original: EventDict = getattr(event, "raw", event)
    return original


@functools.lru_cache(maxsize=256)
def _parse_version(text: str) -> Any:
    from packaging.version import InvalidVersion, Version

    try:
        return Version(text)
    except InvalidVersion:
        return None


def _copy_event(event: EventDict) -> Any:
    """A copy of a decoded event that an upcaster may change freely.

    Written and read again as JSON: several times faster than walking it in Python, and exact
    for what :func:`decode` returns (no NaN, no tuples); anything else is copied by walking.
    """
    try:
        return loads(dumps(event))
    except (TypeError, ValueError, OverflowError):
        return _copy_tree(event)


def _copy_tree(value: Any) -> Any:
    """A copy of a JSON-like value: new dicts and lists all the way down."""
    if isinstance(value, dict):
        return {k: _copy_tree(v) if isinstance(v, (dict, list)) else v for k, v in value.items()}
    if isinstance(value, list):
        return [_copy_tree(v) if isinstance(v, (dict, list)) else v for v in value]
    return value


def _colander_float(value: Any) -> Any:
    """A metric value as balog 1.x read it (``colander.Float``), or ``value`` unchanged.

    It took numbers and booleans, and any string Python's ``float()`` reads (``"1234.0"``,
    ``" 12 "``, ``"1e3"``, ``"nan"``, ``"inf"``, ``"-Infinity"``), except the empty string.
    Python 2's ``float()`` knew no ``_`` digit separators, so neither does this.
    """
    if isinstance(value, (bool, int, float)):
        try:
            return float(value)
        except OverflowError:  # an integer too large for a float stays as it is
            return value
    if isinstance(value, str) and value.strip() and "_" not in value:
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _upcast_metrics_0_0(event: EventDict) -> EventDict:
    """balog 1.x wrote metric values as strings (``str(float(value))``) and read them back as
    floats: consumers get floats, ``nan`` and ``inf`` included."""
    payload = event.get("payload")
    values = payload.get("values") if isinstance(payload, dict) else None
    if isinstance(values, list):
        for item in values:
            if isinstance(item, dict) and "value" in item:
                item["value"] = _colander_float(item["value"])
    return event


_TODAY_TIMESTAMP = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?"
    r"(Z|[+-][0-9]{2}:?[0-9]{2})"
)
# What balog 1.x read as a timestamp (colander.DateTime, through the iso8601 package): a year,
# then optionally month, day, a separator, hours and minutes, seconds, a fraction and an offset;
# no offset meant UTC.
_LENIENT_TIMESTAMP = re.compile(
    r"([0-9]{4})(?:-([0-9]{1,2})(?:-([0-9]{1,2})(?:.([0-9]{2}):([0-9]{2})"
    r"(?::([0-9]{2})(?:\.([0-9]+))?)?(Z|[+-][0-9]{2}:?[0-9]{2})?)?)?)?"
)


def _parse_timestamp(text: str) -> datetime | None:
    """``text`` read as balog 1.x read a timestamp, as an aware datetime; ``None`` if it cannot."""
    match = _LENIENT_TIMESTAMP.fullmatch(text)
    if match is None:
        return None
    year, month, day, hour, minute, second, fraction, offset = match.groups()
    try:
        zone = timezone.utc
        if offset and offset != "Z":
            digits = offset[1:].replace(":", "")
            delta = timedelta(hours=int(digits[:2]), minutes=int(digits[2:]))
            zone = timezone(-delta if offset[0] == "-" else delta)
        return datetime(
            int(year),
            int(month or 1),
            int(day or 1),
            int(hour or 0),
            int(minute or 0),
            int(second or 0),
            int((fraction or "0")[:6].ljust(6, "0")),
            tzinfo=zone,
        )
    except (ValueError, OverflowError):
        return None


def timestamp(event: Mapping[str, Any]) -> datetime:
    """The event's ``header.timestamp`` as an aware :class:`~datetime.datetime`.

    balog 1.x handed consumers a datetime there; events carry an ISO 8601 string, and this reads
    it (``Z``, ``+HHMM`` and up to nine fraction digits included, on every Python balog supports).
    Raises :class:`~balog.exceptions.InvalidEvent` if there is none or it cannot be read.
    """
    header = event.get("header")
    text = header.get("timestamp") if isinstance(header, Mapping) else None
    parsed = _parse_timestamp(text) if isinstance(text, str) else None
    if parsed is None:
        raise InvalidEvent("not an ISO 8601 timestamp", field="header.timestamp")
    return parsed


def _upcast_header_0_0(event: EventDict) -> EventDict:
    """balog 1.x read more timestamp forms than today's schema allows (no offset, no seconds,
    a date alone): write those as today's ISO 8601; and ``composition`` as a boolean, as it read
    it."""
    header = event.get("header")
    if not isinstance(header, dict):
        return event
    stamp = header.get("timestamp")
    if isinstance(stamp, str) and not _TODAY_TIMESTAMP.fullmatch(stamp):
        parsed = _parse_timestamp(stamp)
        if parsed is not None:
            header["timestamp"] = parsed.isoformat()
    if "composition" in header and not isinstance(header["composition"], bool):
        value = header["composition"]
        if value is not None:
            header["composition"] = str(value).lower() not in ("false", "0")
    return event


BUILTIN_UPCASTERS: tuple[Upcaster, ...] = (
    Upcaster(None, "<0.1", _upcast_header_0_0, "balog 0.0.x header"),
    Upcaster("metrics", "<0.1", _upcast_metrics_0_0, "balog 0.0.x metrics"),
)
"""The upcasters every registry starts with: schema ``0.0.x``, written by balog 1.x."""

_NO_UPCASTERS: tuple[Upcaster, ...] = ()

_UNKNOWN: Any = object()
"""A cls_type not looked up yet (``None`` means it has no payload schema)."""

_FacilityEntry: TypeAlias = tuple[Validator, dict[str, Any], tuple[Upcaster, ...] | None]
"""A schema version's facility validator, its schema, and its upcasters (``None``: none)."""


class SchemaRegistry:
    """The facility schemas by major version and the payload schemas by ``cls_type``.

    Compiled validators are cached per schema. Payload schemas come from :meth:`register` and from
    the ``balog.payload_schemas`` entry point group (an entry point named by the cls_type that
    resolves to a schema mapping, or to a callable returning one), loaded on first use.

    It also holds the upcasters (:meth:`add_upcaster`, the ``balog.upcasters`` entry point group,
    and :data:`BUILTIN_UPCASTERS`), applied by :meth:`upcast` and, before validating an old
    event, by :meth:`validate`.
    """

    def __init__(self, *, load_entry_points: bool = True) -> None:
        self._load_entry_points = load_entry_points
        self.reset()

    def reset(self) -> None:
        """Forget every schema and upcaster added since the registry was built; keep the
        built-ins. Entry point schemas and upcasters are loaded again on next use."""
        self._facility: dict[int, dict[str, Any]] = {0: _load_schema("facility-0.json")}
        self._payload: dict[str, dict[str, Any]] = {
            "log": _load_schema("payload-log.json"),
            "metrics": _load_schema("payload-metrics.json"),
        }
        self._compiled: dict[tuple[str, str | int], Validator] = {}
        # The hot path: the facility validator (and the upcasters, None for none) by schema
        # version string, and the payload validator (None: no schema) by cls_type, each found
        # with one dict lookup.
        self._by_version: dict[str, _FacilityEntry] = {}
        self._by_cls_type: dict[str, tuple[Validator, dict[str, Any]] | None] = {}
        self._entry_points_loaded = not self._load_entry_points
        # Upcasters in the order they apply: built-in, then entry points, then added ones.
        self._added_upcasters: list[Upcaster] = []
        self._entry_point_upcasters: list[Upcaster] = []
        self._upcaster_entry_points_loaded = not self._load_entry_points
        self._upcasts: dict[str, tuple[Upcaster, ...] | None] = {}

    @property
    def supported_majors(self) -> tuple[int, ...]:
        return tuple(sorted(self._facility))

    def register(self, cls_type: str, schema: Mapping[str, Any]) -> None:
        """Validate payloads of ``cls_type`` against ``schema`` (a JSON Schema, draft 7)."""
        compiled = _compile(schema)
        self._payload[cls_type] = dict(schema)
        self._compiled[("payload", cls_type)] = compiled
        self._by_cls_type.clear()

    def unregister(self, cls_type: str) -> None:
        self._payload.pop(cls_type, None)
        self._compiled.pop(("payload", cls_type), None)
        self._by_cls_type.clear()

    def payload_schema(self, cls_type: str) -> dict[str, Any] | None:
        self._ensure_entry_points()
        return self._payload.get(cls_type)

    def facility_schema(self, major: int) -> dict[str, Any] | None:
        return self._facility.get(major)

    @property
    def payload_types(self) -> tuple[str, ...]:
        self._ensure_entry_points()
        return tuple(sorted(self._payload))

    def _ensure_entry_points(self) -> None:
        if self._entry_points_loaded:
            return
        self._entry_points_loaded = True
        from importlib import metadata  # 25 ms to import: only once a payload schema is needed

        for ep in metadata.entry_points(group=PAYLOAD_SCHEMA_GROUP):
            try:
                obj = ep.load()
                schema = obj() if callable(obj) else obj
            except Exception as exc:
                raise ConfigurationError(
                    f"payload schema entry point {ep.name!r} ({ep.value}) failed to load: "
                    f"{clip(str(exc))}"
                ) from exc
            if ep.name not in self._payload:
                self.register(ep.name, schema)

    # -- upcasters ------------------------------------------------------------------------------

    def add_upcaster(self, upcaster: Upcaster) -> None:
        """Apply ``upcaster`` to the events it declares, after those added before it."""
        if not isinstance(upcaster, Upcaster):
            raise ConfigurationError(f"{upcaster!r} is not an Upcaster (see balog.events.upcaster)")
        _specifier(upcaster.versions)  # a bad specifier fails here, not on the first old event
        self._added_upcasters.append(upcaster)
        self._upcasters_changed()

    def register_upcaster(
        self, cls_type: str | None, versions: str, func: UpcastFunc, *, name: str = ""
    ) -> Upcaster:
        """Bring events of ``cls_type`` (``None``: any) at schema ``versions`` (a specifier such
        as ``"<0.1"``) to today's shape with ``func``; return the :class:`Upcaster` added."""
        added = Upcaster(cls_type, versions, func, name)
        self.add_upcaster(added)
        return added

    @property
    def upcasters(self) -> tuple[Upcaster, ...]:
        """Every upcaster, in the order they apply."""
        self._ensure_upcaster_entry_points()
        return (*BUILTIN_UPCASTERS, *self._entry_point_upcasters, *self._added_upcasters)

    def _upcasters_changed(self) -> None:
        self._upcasts.clear()
        self._by_version.clear()

    def _ensure_upcaster_entry_points(self) -> None:
        if self._upcaster_entry_points_loaded:
            return
        self._upcaster_entry_points_loaded = True
        from importlib import metadata

        found: list[Upcaster] = []
        for ep in sorted(metadata.entry_points(group=UPCASTER_GROUP), key=lambda e: e.name):
            try:
                obj = ep.load()
            except Exception as exc:
                raise ConfigurationError(
                    f"upcaster entry point {ep.name!r} ({ep.value}) failed to load: "
                    f"{clip(str(exc))}"
                ) from exc
            items = [obj] if isinstance(obj, Upcaster) else obj
            if not isinstance(items, Iterable) or not all(isinstance(u, Upcaster) for u in items):
                raise ConfigurationError(
                    f"upcaster entry point {ep.name!r} ({ep.value}) is not an Upcaster or an "
                    "iterable of them"
                )
            for item in items:
                _specifier(item.versions)
                found.append(item)
        self._entry_point_upcasters = found
        self._upcasters_changed()

    def _upcasters_for(self, version: Any) -> tuple[Upcaster, ...] | None:
        """The upcasters whose versions contain ``version`` (``None``: none), cached."""
        if not isinstance(version, str):
            return None
        found = self._upcasts.get(version, _NO_UPCASTERS)
        if found is not _NO_UPCASTERS:
            return found
        self._ensure_upcaster_entry_points()
        parsed = _parse_version(version)
        matched = (
            ()
            if parsed is None
            else tuple(
                u
                for u in self.upcasters
                if _specifier(u.versions).contains(parsed, prereleases=True)
            )
        )
        result = matched or None
        if len(self._upcasts) < 1024:  # versions come off the wire: bound the cache
            self._upcasts[version] = result
        return result

    def upcast(self, event: EventDict) -> EventDict:
        """``event`` in today's shape: the upcasters for its schema version and cls_type applied.

        Returns ``event`` itself, at the cost of one dict lookup, when none applies (every event
        balog writes today); otherwise an :class:`UpcastEvent` whose ``raw`` is ``event``, left
        unchanged. ``schema`` keeps the version the event was written with, so consumers routed
        by version see it. An upcaster that fails raises
        :class:`~balog.exceptions.InvalidEvent`.
        """
        try:
            found = self._upcasts[event["schema"]]
        except (KeyError, TypeError):
            found = self._upcasters_for(event.get("schema"))
        if found is None:
            return event
        return self._apply_upcasters(found, event)

    def _apply_upcasters(self, found: tuple[Upcaster, ...], event: EventDict) -> EventDict:
        if isinstance(event, UpcastEvent):
            return event  # upcast already
        payload = event.get("payload")
        cls_type = payload.get("cls_type") if isinstance(payload, dict) else None
        steps = [u for u in found if u.cls_type is None or u.cls_type == cls_type]
        if not steps:
            return event
        version = event.get("schema")
        current: Any = _copy_event(event)
        for step in steps:
            try:
                current = step.func(current)
            except Exception as exc:
                raise InvalidEvent(
                    f"upcaster {step.name} failed: {clip(f'{type(exc).__name__}: {exc}')}"
                ) from exc
            if not isinstance(current, dict):
                raise InvalidEvent(
                    f"upcaster {step.name} returned {type(current).__name__}, not an event"
                )
            if current.get("schema") != version:
                raise InvalidEvent(
                    f"upcaster {step.name} changed the schema version; it must keep it",
                    field="schema",
                )
        upcast = UpcastEvent(current)
        upcast.raw = event
        return upcast

    def _validator(self, kind: str, key: str | int, schema: Mapping[str, Any]) -> Validator:
        compiled = self._compiled.get((kind, key))
        if compiled is None:
            compiled = self._compiled[(kind, key)] = _compile(schema)
        return compiled

    def _facility_for(self, version: str) -> _FacilityEntry:
        major = _major(version)
        facility = None if major is None else self._facility.get(major)
        if facility is None:
            supported = ", ".join(f"{m}.x" for m in self.supported_majors)
            raise UnsupportedSchemaVersion(
                f"version {clip(version, 40)!r} is not supported (balog reads {supported})",
                field="schema",
            )
        found = (
            self._validator("facility", major, facility),  # type: ignore[arg-type]
            facility,
            self._upcasters_for(version),
        )
        if len(self._by_version) < 1024:  # versions come off the wire: bound the cache
            self._by_version[version] = found
        return found

    def _payload_for(self, cls_type: str) -> tuple[Validator, dict[str, Any]] | None:
        schema = self.payload_schema(cls_type)
        found = None if schema is None else (self._validator("payload", cls_type, schema), schema)
        if len(self._by_cls_type) < 1024:  # cls_types come off the wire: bound the cache
            self._by_cls_type[cls_type] = found
        return found

    def validate(self, event: Any) -> None:
        """Raise an :class:`~balog.exceptions.InvalidEvent` if ``event`` is not a valid event."""
        self.validated(event)

    def validated(self, event: Any) -> EventDict:
        """:meth:`validate` ``event`` and return it in today's shape (:meth:`upcast`): the event
        itself when no upcaster applies. An old event is valid if its upcasters turn it into a
        valid one of today's shape; it is upcast once, for both."""
        if not isinstance(event, dict):
            raise DecodeError("not a JSON object")
        version = event.get("schema")
        if not isinstance(version, str):
            raise InvalidEvent("missing or not a string", field="schema")
        facility = self._by_version.get(version) or self._facility_for(version)
        if facility[2] is not None:
            event = self._upcast_to_validate(facility, event)
        try:
            facility[0](event)
        except _compiled_error() as exc:
            message, field = _explain(facility[1], event, "")
            raise InvalidEvent(message, field=field) from exc
        except _pattern_timeout() as exc:
            raise InvalidEvent(_over_budget(exc)) from exc
        payload = event["payload"]
        found = self._by_cls_type.get(payload["cls_type"], _UNKNOWN)
        if found is _UNKNOWN:
            found = self._payload_for(payload["cls_type"])
        if found is None:
            return event  # type: ignore[no-any-return]
        try:
            found[0](payload)
        except _compiled_error() as exc:
            message, field = _explain(found[1], payload, "payload")
            raise InvalidPayload(message, field=field) from exc
        except _pattern_timeout() as exc:
            raise InvalidPayload(_over_budget(exc), field="payload") from exc
        return event  # type: ignore[no-any-return]

    def _upcast_to_validate(self, facility: _FacilityEntry, event: EventDict) -> EventDict:
        try:
            return self._apply_upcasters(facility[2] or (), event)
        except InvalidEvent:
            # An upcaster that trips over a malformed event: report what the schema says is
            # wrong with it, if anything, rather than the upcaster's failure.
            try:
                facility[0](event)
            except _compiled_error() as exc:
                message, field = _explain(facility[1], event, "")
                raise InvalidEvent(message, field=field) from exc
            raise


@functools.lru_cache(maxsize=1)
def _pattern_timeout() -> type[Exception]:
    from balog._fastcheck import PatternTimeout

    return PatternTimeout


@functools.lru_cache(maxsize=1)
def _compiled_error() -> type[Exception]:
    import fastjsonschema

    error: type[Exception] = fastjsonschema.JsonSchemaException
    return error


default_registry = SchemaRegistry()
"""The process-wide registry used when none is given. Tests may replace schemas on it, and undo
that with :meth:`SchemaRegistry.unregister`."""


# Event ids are random version-4 UUIDs in hex. uuid.uuid4() reads os.urandom on every call, a
# system call that releases the GIL (and lets the sender thread take it) in the middle of the
# application's logging call; a private generator seeded from os.urandom, and reseeded in a forked
# child so that parent and child never share a sequence, costs a fifth as much. Ids need to be
# unique, not unguessable.
_id_random = random.Random()
_id_bits = _id_random.getrandbits
_UUID4_CLEAR = ~((0xF000 << 64) | (0xC000 << 48))
_UUID4_SET = (0x4000 << 64) | (0x8000 << 48)
if hasattr(os, "register_at_fork"):  # not on Windows
    os.register_at_fork(after_in_child=_id_random.seed)


def _new_id() -> str:
    """A new event id: a random (version 4) UUID as 32 hex digits."""
    return "%032x" % (_id_bits(128) & _UUID4_CLEAR | _UUID4_SET)


def new_event(
    channel: str,
    payload: Mapping[str, Any],
    *,
    context: Mapping[str, Any] | None = None,
    id: str | None = None,  # noqa: A002 - the field is called id on the wire
    timestamp: datetime | str | None = None,
) -> EventDict:
    """Build an event of the current facility version around ``payload``."""
    if timestamp is None:
        stamp = datetime.now(timezone.utc).isoformat()
    elif isinstance(timestamp, datetime):
        if timestamp.tzinfo is None:
            timestamp = timestamp.replace(tzinfo=timezone.utc)
        stamp = timestamp.astimezone(timezone.utc).isoformat()
    else:
        stamp = timestamp
    return {
        "schema": FACILITY_VERSION,
        "header": {
            "id": id or _new_id(),
            "channel": channel,
            "timestamp": stamp,
            "context": dict(context) if context else {},
        },
        "payload": dict(payload),
    }


def encode(event: Mapping[str, Any]) -> bytes:
    """Serialise an event to its UTF-8 JSON wire form (no validation)."""
    return dumps(event)


def validate(event: Any, registry: SchemaRegistry | None = None) -> None:
    """Check ``event`` against the facility schema and its payload schema, if registered."""
    (registry or default_registry).validate(event)


def _depth_exceeds(obj: Any, limit: int) -> bool:
    stack: list[tuple[Any, int]] = [(obj, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values() if isinstance(v, (dict, list)))
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node if isinstance(v, (dict, list)))
    return False


_FACILITY_KEY = re.compile(rb'"(?:schema|header|payload|id|channel|timestamp|context|cls_type)"')


def _may_repeat_facility_key(body: bytes) -> bool:
    """Cheap test: could a key of the facility layer appear twice? False means it cannot.

    JSON parsers disagree on duplicate keys (most keep the last, some the first), so a body with
    two ``schema`` or two ``channel`` keys could mean one thing to balog and another to a
    different reader. A name seen once and no ``\\u`` escape (which could spell a name another
    way) rule that out without a second parse.
    """
    if b"\\u" in body:
        return True
    found = _FACILITY_KEY.findall(body)
    return len(found) != len(set(found))


class _PairsDict(dict[str, Any]):
    duplicates: tuple[str, ...] = ()


def _pairs(pairs: list[tuple[str, Any]]) -> _PairsDict:
    obj = _PairsDict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        repeated: list[str] = []
        for key, _ in pairs:
            if key in seen:
                repeated.append(key)
            seen.add(key)
        obj.duplicates = tuple(repeated)
    return obj


def _reject_duplicate_facility_keys(body: bytes) -> None:
    """Raise :class:`DecodeError` if the event, its header or its payload repeats a key."""
    try:
        text = body.decode("utf-8")
        event = json.loads(text, object_pairs_hook=_pairs, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:  # the first parse accepted it; stay safe
        raise DecodeError(f"not valid JSON: {clip(str(exc), 120)}") from exc
    parts: list[tuple[str | None, Any]] = [(None, event)]
    if isinstance(event, dict):
        parts += [("header", event.get("header")), ("payload", event.get("payload"))]
    for prefix, obj in parts:
        duplicates = getattr(obj, "duplicates", ())
        if duplicates:
            name = duplicates[0]
            field = name if prefix is None else f"{prefix}.{name}"
            raise DecodeError(f"duplicate key {clip(name, 60)!r}", field=clip(field, 80))


def decode(
    body: bytes | str,
    *,
    max_size: int = DEFAULT_MAX_SIZE,
    max_depth: int = DEFAULT_MAX_DEPTH,
    registry: SchemaRegistry | None = None,
    upcast: bool = False,
) -> EventDict:
    """Parse and validate a wire body; raise a specific :class:`~balog.exceptions.EventError`.

    Checks, in order: size, UTF-8, JSON, object, nesting depth, no key repeated in the event,
    its header or its payload, facility schema (by major version), payload schema (by cls_type,
    when registered). With ``upcast``, returns the event in today's shape
    (:meth:`SchemaRegistry.upcast`), as the engine hands it to consumers.
    """
    if isinstance(body, str):
        body = body.encode("utf-8", "surrogatepass")
    if len(body) > max_size:
        raise EventTooLarge(f"body of {len(body)} bytes exceeds the limit of {max_size} bytes")
    try:
        event = loads(body)
    except RecursionError as exc:
        raise EventTooDeep(f"nesting deeper than the limit of {max_depth}") from exc
    except UnicodeDecodeError as exc:
        raise DecodeError(f"not valid UTF-8 (byte {exc.start})") from exc
    except ValueError as exc:  # JSONDecodeError, int digit limit, NaN/Infinity
        text = str(exc)
        if "recursion" in text.lower() or "depth" in text.lower():  # json / orjson
            raise EventTooDeep(f"nesting deeper than the limit of {max_depth}") from exc
        if "utf-8" in text.lower():
            raise DecodeError("not valid UTF-8") from exc
        raise DecodeError(f"not valid JSON: {clip(text, 120)}") from exc
    if not isinstance(event, dict):
        raise DecodeError(f"not a JSON object (got {type(event).__name__})")
    # Counting brackets is cheap and bounds the depth, so most bodies skip the walk.
    if body.count(b"[") + body.count(b"{") > max_depth and _depth_exceeds(event, max_depth):
        raise EventTooDeep(f"nesting deeper than the limit of {max_depth}")
    try:  # as _written_as_parsed(), inline: this runs for every event consumed
        canonical = _redump(event) == body
    except (TypeError, ValueError, OverflowError):
        canonical = False
    if not canonical and _may_repeat_facility_key(body):
        _reject_duplicate_facility_keys(body)
    validated = (registry or default_registry).validated(event)
    return validated if upcast else event
