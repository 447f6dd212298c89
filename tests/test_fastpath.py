"""The fast path agrees with the schema language: compiled validators (fastjsonschema) accept and
reject exactly the events that jsonschema does.

Valid events are generated from the JSON Schemas shipped in ``balog/schemas/`` (every field the
schemas constrain, plus optional and unknown fields), then mutated: a value replaced by another
JSON value, a key removed or added, a string given a trailing newline. For each, the registry's
verdict (the cached compiled validators) must equal a reference verdict computed with jsonschema
alone. Hypothesis runs in derandomized mode so that a run is repeatable.
"""

from __future__ import annotations

import copy
import json
import os
import pkgutil
import sys
import warnings
from typing import Any

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from balog.events import SchemaRegistry, decode, encode, new_event
from balog.exceptions import EventError, InvalidEvent, InvalidPayload

SETTINGS = settings(
    max_examples=150,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


def _schema(name: str) -> dict[str, Any]:
    data = pkgutil.get_data("balog", f"schemas/{name}")
    assert data is not None
    schema: dict[str, Any] = json.loads(data)
    return schema


FACILITY = _schema("facility-0.json")
PAYLOADS = {"log": _schema("payload-log.json"), "metrics": _schema("payload-metrics.json")}
FACILITY_CHECK = jsonschema.Draft7Validator(FACILITY)
PAYLOAD_CHECKS = {name: jsonschema.Draft7Validator(schema) for name, schema in PAYLOADS.items()}

# -- generating JSON values from a schema -----------------------------------------------------

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


def _string(schema: dict[str, Any]) -> st.SearchStrategy[str]:
    low, high = schema.get("minLength", 0), schema.get("maxLength")
    if "pattern" in schema:
        # The schemas end patterns in "$(?!\n)" (no final newline); fullmatch means as much.
        pattern = schema["pattern"].replace("$(?!\\n)", "$")
        strategy = st.from_regex(pattern, fullmatch=True)
    else:
        strategy = st.text(min_size=low, max_size=min(high or 40, 40))
    return strategy.filter(lambda s: len(s) >= low and (high is None or len(s) <= high))


def from_schema(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values valid against ``schema``, for the subset of JSON Schema balog's schemas use."""
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
        return _string(schema)
    if kind == "number":
        return st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    if kind == "null":
        return st.none()
    if kind == "array":
        return st.lists(from_schema(schema.get("items", {})), max_size=4)
    if kind == "object" or "properties" in schema:
        return _object(schema)
    return json_values


def _object(schema: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    properties = schema.get("properties", {})
    required = schema.get("required", [])
    fixed = {name: from_schema(properties.get(name, {})) for name in required}
    optional = {n: from_schema(s) for n, s in properties.items() if n not in required}
    extra = st.dictionaries(
        st.text(max_size=8).filter(lambda k: k not in properties), json_values, max_size=2
    )
    return st.builds(
        lambda a, b, c: {**c, **b, **a},
        st.fixed_dictionaries(fixed, optional=optional),
        st.just({}),
        extra,
    )


def valid_events() -> st.SearchStrategy[dict[str, Any]]:
    """Whole events: a facility layer valid for major 0 around a payload of a known or unknown
    cls_type."""
    payloads = st.one_of(
        from_schema(PAYLOADS["log"]),
        from_schema(PAYLOADS["metrics"]),
        st.builds(
            lambda cls_type, rest: {**rest, "cls_type": cls_type},
            st.text(min_size=1, max_size=20).filter(lambda t: t not in PAYLOADS),
            st.dictionaries(st.text(max_size=8), json_values, max_size=3),
        ),
    )
    return st.builds(
        lambda envelope, payload: {**envelope, "payload": payload},
        from_schema({**FACILITY, "properties": {**FACILITY["properties"], "payload": {}}}),
        payloads,
    )


# -- mutating them ---------------------------------------------------------------------------


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(value, dict):
        for key, child in value.items():
            found.extend(_paths(child, (*prefix, key)))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found.extend(_paths(child, (*prefix, index)))
    return found


def _replace(root: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    parent = root
    for step in path[:-1]:
        parent = parent[step]
    parent[path[-1]] = new
    return root


@st.composite
def mutated_events(draw: st.DrawFn) -> Any:
    event = copy.deepcopy(draw(valid_events()))
    path = draw(st.sampled_from(_paths(event)))
    target: Any = event
    for step in path:
        target = target[step]
    how = draw(st.sampled_from(["replace", "newline", "delete", "add", "empty"]))
    if how == "replace":
        return _replace(event, path, draw(json_values))
    if how == "newline" and isinstance(target, str):
        return _replace(event, path, target + "\n")
    if how == "empty" and isinstance(target, (str, list, dict)):
        return _replace(event, path, type(target)())
    if how == "delete" and path:
        parent = event
        for step in path[:-1]:
            parent = parent[step]
        del parent[path[-1]]
        return event
    if how == "add" and isinstance(target, dict):
        target[draw(st.text(max_size=8))] = draw(json_values)
        return event
    return _replace(event, path, draw(json_scalars))


# -- the reference: jsonschema alone ----------------------------------------------------------


UPCASTING = SchemaRegistry(load_entry_points=False)


def reference_valid(event: Any) -> bool:
    """What jsonschema says of ``event``, with the registry's own rules for picking schemas; an
    old event (schema 0.0.x) is judged in the shape its upcasters give it."""
    if not isinstance(event, dict) or not isinstance(event.get("schema"), str):
        return False
    head = event["schema"].split(".", 1)[0]
    if head != "0" and not (head.isdigit() and len(head) <= 9 and int(head) == 0):
        return False
    event = UPCASTING.upcast(event)
    if not FACILITY_CHECK.is_valid(event):
        return False
    check = PAYLOAD_CHECKS.get(event["payload"]["cls_type"])
    return check is None or check.is_valid(event["payload"])


def fast_valid(registry: SchemaRegistry, event: Any) -> bool:
    try:
        registry.validate(event)
    except EventError:
        return False
    return True


@pytest.fixture(scope="module")
def registry() -> SchemaRegistry:
    return SchemaRegistry(load_entry_points=False)


@SETTINGS
@given(event=valid_events())
def test_generated_events_are_accepted_by_both(registry: SchemaRegistry, event: Any) -> None:
    """Events generated from the shipped schemas are valid for jsonschema and the fast path."""
    assert (reference_valid(event), fast_valid(registry, event)) == (True, True)


@SETTINGS
@given(event=mutated_events())
def test_fast_path_and_jsonschema_agree_on_mutated_events(
    registry: SchemaRegistry, event: Any
) -> None:
    """Whatever a mutation did to an event, the fast path and jsonschema give the same verdict."""
    assert reference_valid(event) == fast_valid(registry, event)


@SETTINGS
@given(event=mutated_events())
def test_decode_agrees_with_jsonschema_on_the_wire(registry: SchemaRegistry, event: Any) -> None:
    """The same holds through decode(): encode, then decode with the registry."""
    try:
        body = encode(event)
    except TypeError:  # a mutation can produce an integer too large for JSON
        return
    try:
        decode(body, registry=registry)
        decoded = True
    except EventError:
        decoded = False
    assert reference_valid(json.loads(body)) == decoded


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("schema", "0.1.0\n"),
        ("timestamp", "2026-01-01T00:00:00+00:00\n"),
        ("value", "12\n"),
    ],
)
def test_trailing_newline_is_rejected_by_both(
    registry: SchemaRegistry, field: str, value: str
) -> None:
    """A pattern's end anchor means the end of the string for jsonschema too (no final newline)."""
    event = new_event("a.b", {"cls_type": "metrics", "values": [{"name": "n", "value": 1}]})
    if field == "schema":
        event["schema"] = value
    elif field == "timestamp":
        event["header"]["timestamp"] = value
    else:
        event["payload"]["values"][0]["value"] = value
    assert (reference_valid(event), fast_valid(registry, event)) == (False, False)


def test_failures_are_explained_by_jsonschema(registry: SchemaRegistry) -> None:
    """A rejected event gets jsonschema's message and the failing field, not the compiled one's."""
    event = new_event("a.b", {"cls_type": "metrics", "values": [{"name": "n", "value": "x1"}]})
    with pytest.raises(InvalidPayload) as info:
        registry.validate(event)
    assert info.value.field == "payload.values.0.value"
    assert "does not match" in str(info.value)
    event = new_event("a.b", {"cls_type": "log", "message": "m", "severity": "info"})
    event["header"]["channel"] = ""
    with pytest.raises(InvalidEvent) as header_info:
        registry.validate(event)
    assert header_info.value.field == "header.channel"


@SETTINGS
@given(value=json_values)
def test_metrics_value_schema_matches_its_former_any_of(value: Any) -> None:
    """The metrics value schema (a type list with a pattern) accepts what the anyOf it replaced
    did: a number, or a string of digits."""
    former = {
        "anyOf": [
            {"type": "number"},
            {"type": "string", "pattern": "^-?[0-9]+(\\.[0-9]+)?([eE][+-]?[0-9]+)?$(?!\\n)"},
        ]
    }
    current = PAYLOADS["metrics"]["properties"]["values"]["items"]["properties"]["value"]
    assert jsonschema.Draft7Validator(former).is_valid(value) == (
        jsonschema.Draft7Validator(current).is_valid(value)
    )


legacy_values = st.one_of(
    json_values,
    st.sampled_from(["nan", "-inf", "Infinity", " 12 ", "1e3", "+1.5", "", "1_0", "12\n"]),
)


@SETTINGS
@given(values=st.lists(legacy_values, max_size=4), schema=st.sampled_from(["0.0", "0.0.1"]))
def test_legacy_metrics_agree_with_jsonschema_after_upcasting(
    registry: SchemaRegistry, values: list[Any], schema: str
) -> None:
    """For balog 1.x metrics (schema 0.0.x), the fast path's verdict is jsonschema's verdict on
    the event as its upcasters turn it."""
    event = new_event(
        "a.b", {"cls_type": "metrics", "values": [{"name": "n", "value": v} for v in values]}
    )
    event["schema"] = schema
    assert reference_valid(copy.deepcopy(event)) == fast_valid(registry, event)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_encoded_bodies_hold_about_their_own_size() -> None:
    """Bodies kept in memory (a queue, a recorded send) cost about their length, not a 4 KiB
    encoder buffer each: 50,000 bodies of ~300 bytes stay well under 100 MB."""

    def rss_kib() -> int:
        with open("/proc/self/status", encoding="ascii") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))

    event = new_event("a.b", {"cls_type": "log", "message": "x" * 100, "severity": "info"})
    before = rss_kib()
    kept = [encode(event) for _ in range(50_000)]
    grown_mb = (rss_kib() - before) / 1024
    assert len(kept) == 50_000
    assert grown_mb < 100, f"{grown_mb:.0f} MB for 50,000 bodies of {len(kept[0])} bytes"


def test_event_ids_differ_in_a_forked_child() -> None:
    """A forked child does not repeat its parent's sequence of event ids."""
    if not hasattr(os, "fork"):
        pytest.skip("no fork on this platform")
    read, write = os.pipe()
    with warnings.catch_warnings():
        # Python 3.12+ warns when a process with threads forks; the child only writes and exits.
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child: write its first id and leave at once
        os.write(write, new_event("a.b", {"cls_type": "x"})["header"]["id"].encode())
        os._exit(0)
    os.close(write)
    parent_id = new_event("a.b", {"cls_type": "x"})["header"]["id"]
    os.waitpid(pid, 0)
    with os.fdopen(read, "rb") as f:
        child_id = f.read().decode()
    assert len(child_id) == 32
    assert parent_id != child_id
