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
"""

from __future__ import annotations

import functools
import json
import os
import pkgutil
import random
import re
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from typing import Any, TypeAlias

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

__all__ = [
    "DEFAULT_MAX_DEPTH",
    "DEFAULT_MAX_SIZE",
    "FACILITY_VERSION",
    "EventDict",
    "SchemaRegistry",
    "decode",
    "default_registry",
    "dumps",
    "encode",
    "loads",
    "new_event",
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

Validator: TypeAlias = Callable[[Any], Any]


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


def _pick_codec() -> tuple[Callable[[bytes | str], Any], Callable[[Any], bytes]]:
    try:  # the `fast` extra; the standard library is the fallback
        import orjson
    except ImportError:  # pragma: no cover - exercised where orjson is not installed
        return std_loads, std_dumps
    orjson_dumps = orjson.dumps

    def compact_dumps(obj: Any) -> bytes:
        # orjson writes into a buffer of at least a few KiB and shrinks it in place; the freed
        # tail stays behind as a hole in the heap, so each body kept (a queued message, a
        # recorded send) holds about 4 KiB of memory. A copy costs 0.2 us and holds its length.
        return bytes(memoryview(orjson_dumps(obj)))

    return orjson.loads, compact_dumps


loads, dumps = _pick_codec()
"""``loads(body)`` parses JSON and ``dumps(obj)`` writes compact UTF-8 JSON bytes: orjson when it is
installed (the ``fast`` extra), the standard library otherwise."""


def _load_schema(filename: str) -> dict[str, Any]:
    # pkgutil rather than importlib.resources, whose import alone (tempfile, zipfile, ...)
    # costs `import balog` more than 10 ms; both read through the package's loader.
    data = pkgutil.get_data("balog", f"schemas/{filename}")
    if data is None:  # pragma: no cover - only with a loader that cannot read data files
        raise ConfigurationError(f"balog's schema {filename} cannot be read")
    schema: dict[str, Any] = json.loads(data)
    return schema


def _compile(schema: Mapping[str, Any]) -> Validator:
    # Keyed by the schema's canonical text: a registry that is reset (between tests) or built
    # again compiles each distinct schema once per process. A pure cache, not state.
    try:
        key = json.dumps(schema, sort_keys=True)
    except (TypeError, ValueError):
        return _compile_text(None, schema)
    return _compile_text(key, schema)


@functools.lru_cache(maxsize=256)
def _compiled_by_text(key: str) -> Validator:
    return _compile_text(None, json.loads(key))


def _compile_text(key: str | None, schema: Mapping[str, Any]) -> Validator:
    if key is not None:
        return _compiled_by_text(key)
    import fastjsonschema

    try:
        compiled: Validator = fastjsonschema.compile(dict(schema))
        return compiled
    except fastjsonschema.JsonSchemaDefinitionException as exc:
        raise ConfigurationError(f"invalid JSON Schema: {clip(str(exc))}") from exc


# JSON Schema patterns follow ECMA-262, where ``$`` matches only at the very end; Python's ``$``
# also matches before a final newline. fastjsonschema rewrites an unescaped ``$`` to ``\Z``; the
# explaining validator must do the same, or it finds nothing wrong with "0.1.0\n".
_DOLLAR = re.compile(r"(?<!\\)\$")


@functools.lru_cache(maxsize=1)
def _explainer() -> Any:
    import jsonschema

    def pattern(validator: Any, patrn: str, instance: Any, schema: Any) -> Any:
        if validator.is_type(instance, "string") and not re.search(
            _DOLLAR.sub(r"\\Z", patrn), instance
        ):
            yield jsonschema.ValidationError(f"{instance!r} does not match {patrn!r}")

    extend: Any = jsonschema.validators.extend
    return extend(jsonschema.Draft7Validator, {"pattern": pattern})


def _explain(schema: Mapping[str, Any], instance: Any, prefix: str) -> tuple[str, str | None]:
    """Return (message, field) for the most relevant reason ``instance`` fails ``schema``."""
    import jsonschema

    validator = _explainer()(schema)
    errors = list(validator.iter_errors(instance))
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


class SchemaRegistry:
    """The facility schemas by major version and the payload schemas by ``cls_type``.

    Compiled validators are cached per schema. Payload schemas come from :meth:`register` and from
    the ``balog.payload_schemas`` entry point group (an entry point named by the cls_type that
    resolves to a schema mapping, or to a callable returning one), loaded on first use.
    """

    def __init__(self, *, load_entry_points: bool = True) -> None:
        self._load_entry_points = load_entry_points
        self.reset()

    def reset(self) -> None:
        """Forget every schema registered since the registry was built; keep the built-ins.
        Entry point schemas are loaded again on next use."""
        self._facility: dict[int, dict[str, Any]] = {0: _load_schema("facility-0.json")}
        self._payload: dict[str, dict[str, Any]] = {
            "log": _load_schema("payload-log.json"),
            "metrics": _load_schema("payload-metrics.json"),
        }
        self._compiled: dict[tuple[str, str | int], Validator] = {}
        # The hot path: the facility validator by schema version string, and the payload
        # validator (None: no schema) by cls_type, each found with one dict lookup.
        self._by_version: dict[str, tuple[Validator, dict[str, Any]]] = {}
        self._by_cls_type: dict[str, tuple[Validator, dict[str, Any]] | None] = {}
        self._entry_points_loaded = not self._load_entry_points

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

    def _validator(self, kind: str, key: str | int, schema: Mapping[str, Any]) -> Validator:
        compiled = self._compiled.get((kind, key))
        if compiled is None:
            compiled = self._compiled[(kind, key)] = _compile(schema)
        return compiled

    def _facility_for(self, version: str) -> tuple[Validator, dict[str, Any]]:
        major = _major(version)
        facility = None if major is None else self._facility.get(major)
        if facility is None:
            supported = ", ".join(f"{m}.x" for m in self.supported_majors)
            raise UnsupportedSchemaVersion(
                f"version {clip(version, 40)!r} is not supported (balog reads {supported})",
                field="schema",
            )
        found = (self._validator("facility", major, facility), facility)  # type: ignore[arg-type]
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
        if not isinstance(event, dict):
            raise DecodeError("not a JSON object")
        version = event.get("schema")
        if not isinstance(version, str):
            raise InvalidEvent("missing or not a string", field="schema")
        facility = self._by_version.get(version) or self._facility_for(version)
        try:
            facility[0](event)
        except _compiled_error() as exc:
            message, field = _explain(facility[1], event, "")
            raise InvalidEvent(message, field=field) from exc
        payload = event["payload"]
        cls_type = payload["cls_type"]
        if cls_type in self._by_cls_type:
            found = self._by_cls_type[cls_type]
        else:
            found = self._payload_for(cls_type)
        if found is None:
            return
        try:
            found[0](payload)
        except _compiled_error() as exc:
            message, field = _explain(found[1], payload, "payload")
            raise InvalidPayload(message, field=field) from exc


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
) -> EventDict:
    """Parse and validate a wire body; raise a specific :class:`~balog.exceptions.EventError`.

    Checks, in order: size, UTF-8, JSON, object, nesting depth, no key repeated in the event,
    its header or its payload, facility schema (by major version), payload schema (by cls_type,
    when registered).
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
    if _may_repeat_facility_key(body):
        _reject_duplicate_facility_keys(body)
    (registry or default_registry).validate(event)
    return event
