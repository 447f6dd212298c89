"""Property tests of :func:`balog.events.decode`, with events generated from the shipped schemas.

Valid events (facility schema 0 around each built-in payload schema, and around an unregistered
cls_type) round-trip exactly through encode/decode. Mutations of one field (dropped, wrong type,
over its length limit, trailing newline) are rejected with an :class:`InvalidEvent` naming that
field. (Whether the compiled validator and jsonschema agree is the fast-path suite's concern;
this one pins what decode does.)
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from balog.events import decode, encode
from balog.exceptions import InvalidEvent, InvalidPayload

pytestmark = pytest.mark.filterwarnings("ignore::hypothesis.errors.NonInteractiveExampleWarning")

PROPERTY_SETTINGS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


def _schema(name: str) -> dict[str, Any]:
    text = resources.files("balog.schemas").joinpath(name).read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    schema.pop("$schema", None)
    return schema


FACILITY = _schema("facility-0.json")
PAYLOADS = {"log": _schema("payload-log.json"), "metrics": _schema("payload-metrics.json")}
UNREGISTERED_CLS_TYPE = st.text(min_size=1, max_size=40).filter(lambda t: t not in PAYLOADS)

# Open content is kept small and shallow: the decoder's own limits (depth, size) are pinned by
# the hostile-input tests, not here. Integers stay within 64 bits, which is what orjson writes.
_JSON_LEAF = st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=20)
_JSON_LEAF |= st.floats(allow_nan=False, allow_infinity=False)
OPEN_CONTENT = st.recursive(
    _JSON_LEAF,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)

_TYPES: dict[str, st.SearchStrategy[Any]] = {
    "null": st.none(),
    "boolean": st.booleans(),
    "integer": st.integers(-(2**63), 2**63 - 1),
    "number": st.floats(allow_nan=False, allow_infinity=False) | st.integers(-(2**53), 2**53),
}


def from_schema(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Instances of ``schema``, for the subset of JSON Schema the shipped schemas use.

    Patterns are matched in full (``fullmatch``): JSON Schema reads ``$`` as the very end, while a
    Python regex's ``$`` would also allow a final newline.
    """
    if "const" in schema:
        return st.just(schema["const"])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    if "anyOf" in schema:
        return st.one_of([from_schema(s) for s in schema["anyOf"]])
    kind = schema.get("type")
    if isinstance(kind, list):
        return st.one_of([from_schema({**schema, "type": k}) for k in kind])
    if kind == "string":
        if "pattern" in schema:
            text = st.from_regex(schema["pattern"], fullmatch=True)
        else:
            text = st.text(min_size=schema.get("minLength", 0), max_size=40)
        low, high = schema.get("minLength", 0), schema.get("maxLength", 10**9)
        return text.filter(lambda t: low <= len(t) <= high)
    if kind == "array":
        return st.lists(from_schema(schema.get("items", {})), max_size=4)
    if kind == "object":
        return _object(schema)
    if kind in _TYPES:
        return _TYPES[kind]
    return OPEN_CONTENT


@st.composite
def _object(draw: st.DrawFn, schema: dict[str, Any]) -> dict[str, Any]:
    required = set(schema.get("required", ()))
    out: dict[str, Any] = {}
    for name, sub in schema.get("properties", {}).items():
        if name in required or draw(st.booleans()):
            out[name] = draw(from_schema(sub))
    extra = draw(st.dictionaries(st.text(min_size=1, max_size=8), OPEN_CONTENT, max_size=2))
    for name, value in extra.items():
        out.setdefault(name, value)
    return out


@st.composite
def valid_events(draw: st.DrawFn) -> dict[str, Any]:
    """An event valid against the facility schema and its payload schema, with open content."""
    event: dict[str, Any] = draw(from_schema(FACILITY))
    kind = draw(st.sampled_from([*sorted(PAYLOADS), "unregistered"]))
    if kind == "unregistered":
        payload = draw(from_schema(PAYLOADS["log"] | {"required": []}))
        payload["cls_type"] = draw(UNREGISTERED_CLS_TYPE)
    else:
        payload = draw(from_schema(PAYLOADS[kind]))
    event["payload"] = payload
    return event


@PROPERTY_SETTINGS
@given(valid_events())
def test_valid_events_round_trip_exactly(event: dict[str, Any]) -> None:
    """decode(encode(event)) == event for any event valid against the shipped schemas."""
    body = encode(event)
    decoded = decode(body)
    assert event == decoded
    assert body == encode(decoded)


# -- mutations: (path, value); value None means "drop the field" -----------------------------------

_DROP = object()
MUTATIONS: list[tuple[str, Any]] = [
    ("schema", _DROP),
    ("schema", 1),
    ("schema", None),
    ("schema", "0.1.0\n"),
    ("schema", "zero"),
    ("header", _DROP),
    ("header", "h"),
    ("header.id", _DROP),
    ("header.id", 12),
    ("header.id", ""),
    ("header.id", "i" * 129),
    ("header.channel", _DROP),
    ("header.channel", ["a"]),
    ("header.channel", ""),
    ("header.channel", "c" * 1025),
    ("header.timestamp", _DROP),
    ("header.timestamp", 1700000000),
    ("header.timestamp", "2026-01-01T00:00:00+00:00\n"),
    ("header.timestamp", "not a time"),
    ("header.context", "ctx"),
    ("payload", _DROP),
    ("payload", []),
    ("payload.cls_type", _DROP),
    ("payload.cls_type", 3),
    ("payload.cls_type", ""),
    ("payload.cls_type", "t" * 256),
]
PAYLOAD_MUTATIONS: dict[str, list[tuple[str, Any]]] = {
    "log": [
        ("payload.message", _DROP),
        ("payload.message", 5),
        ("payload.severity", "loud"),
        ("payload.exc_text", 1),
    ],
    "metrics": [
        ("payload.values", _DROP),
        ("payload.values", {"a": 1}),
        ("payload.values.0", "x"),
        ("payload.values.0.name", ""),
        ("payload.values.0.value", "twelve"),
        ("payload.values.0.value", "1.0\n"),
    ],
}


def _apply(event: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    node: Any = event
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if isinstance(node, list):
        node[int(last)] = value
    elif value is _DROP:
        del node[last]
    else:
        node[last] = value


@st.composite
def mutated_events(draw: st.DrawFn) -> tuple[dict[str, Any], str, type[InvalidEvent]]:
    event = draw(valid_events())
    cls_type = event["payload"]["cls_type"]
    choices = list(MUTATIONS)
    payload_choices = PAYLOAD_MUTATIONS.get(cls_type, [])
    if cls_type == "metrics" and not event["payload"]["values"]:
        payload_choices = [m for m in payload_choices if ".0" not in m[0]]
    choices += payload_choices
    path, value = draw(st.sampled_from(choices))
    _apply(event, path, value)
    error = InvalidPayload if (path, value) in payload_choices else InvalidEvent
    return event, path, error


@PROPERTY_SETTINGS
@given(mutated_events())
def test_mutated_events_are_rejected_naming_the_field(
    case: tuple[dict[str, Any], str, type[InvalidEvent]],
) -> None:
    """One field dropped, mistyped or over its limit: decode raises naming exactly that field."""
    event, path, error = case
    with pytest.raises(InvalidEvent) as rejected:
        decode(encode(event))
    assert isinstance(rejected.value, error)
    assert path == rejected.value.field
    assert str(rejected.value).startswith(f"{path}: ")
    assert "\n" not in str(rejected.value)
    assert len(str(rejected.value)) < 400
