"""The fast schema check never passes what the JSON Schema says is invalid.

``balog._fastcheck`` answers "valid" only for values it can vouch for; anything it doubts goes to
the full validator. So the one property that matters is soundness: whenever it returns without
handing the value on, jsonschema (with ECMA-262's ``$``, as balog reads patterns) says valid.
Hypothesis generates schemas of the supported subset and values to check against them.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from balog._fastcheck import compile_check
from balog.events import _explainer, default_registry

HANDED_ON = object()


def full(value: Any) -> Any:
    return HANDED_ON


json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=6)
    | st.sampled_from(["a", "ab", "0.1", "x\n", "12", "metrics", ""])
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(["a", "b", "c", "d"]), inner, max_size=4)
    ),
    max_leaves=12,
)
type_names = st.sampled_from(["object", "array", "string", "number", "integer", "boolean", "null"])


def leaf_schema() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {},
        optional={
            "type": type_names | st.lists(type_names, min_size=1, max_size=3, unique=True),
            "minLength": st.integers(0, 3),
            "maxLength": st.integers(0, 3),
            "pattern": st.sampled_from(["^a", "b$", "^[0-9]+$", "^0\\.[0-9]$(?!\\n)", "x"]),
            "minimum": st.integers(-5, 5),
            "maximum": st.integers(-5, 5),
            "exclusiveMinimum": st.floats(-5, 5),
            "exclusiveMaximum": st.floats(-5, 5),
            "enum": st.lists(st.sampled_from(["a", "ab", "metrics", ""]), min_size=1, max_size=3),
            "const": st.sampled_from(["a", "metrics"]),
            "minItems": st.integers(0, 2),
            "maxItems": st.integers(0, 2),
            "title": st.just("annotation"),
        },
    )


schemas = st.recursive(
    leaf_schema(),
    lambda inner: st.fixed_dictionaries(
        {},
        optional={
            "type": st.just("object") | st.just("array"),
            "properties": st.dictionaries(st.sampled_from(["a", "b", "c"]), inner, max_size=3),
            "required": st.lists(st.sampled_from(["a", "b", "d"]), max_size=3, unique=True),
            "additionalProperties": st.booleans(),
            "items": inner | st.booleans(),
        },
    ),
    max_leaves=6,
)


@settings(max_examples=1500, deadline=None)
@given(schema=schemas, value=json_values)
def test_a_value_the_fast_check_passes_is_valid(schema: dict[str, Any], value: Any) -> None:
    """Whatever the fast check lets through, jsonschema accepts too."""
    check = compile_check(schema, full)
    assert check is not None, f"a schema of the supported subset was refused: {schema!r}"
    if check(value) is not HANDED_ON:
        assert _explainer()(schema).is_valid(value), (schema, value)


@settings(max_examples=300, deadline=None)
@given(value=json_values)
def test_the_built_in_schemas_are_checked_fast(value: Any) -> None:
    """The facility and payload schemas balog ships are in the subset, and sound on any value."""
    for schema in (
        default_registry.facility_schema(0),
        default_registry.payload_schema("metrics"),
        default_registry.payload_schema("log"),
    ):
        assert schema is not None
        check = compile_check(schema, full)
        assert check is not None
        if check(value) is not HANDED_ON:
            assert _explainer()(schema).is_valid(value)


def test_a_schema_outside_the_subset_gets_no_fast_check() -> None:
    """anyOf, $ref, format, a const that is not a string: the full validator alone."""
    for schema in (
        {"anyOf": [{"type": "string"}, {"type": "null"}]},
        {"$ref": "#/definitions/x", "definitions": {"x": {"type": "string"}}},
        {"type": "string", "format": "date-time"},
        {"const": 1},
        {"items": [{"type": "string"}]},
    ):
        assert compile_check(schema, full) is None, schema


def test_the_fast_check_returns_a_valid_value_and_hands_on_an_invalid_one() -> None:
    """A valid value comes back as it is; an invalid one goes to the full validator."""
    check = compile_check({"type": "object", "required": ["a"]}, full)
    assert check is not None
    value = {"a": 1}
    assert check(value) is value
    assert check({"b": 1}) is HANDED_ON


# -- the validation budget ------------------------------------------------------------------------

CATASTROPHIC = "^(x+x+)+y$"  # backtracks for seconds on "xxxx...x" in the standard library's re


def test_a_catastrophic_pattern_is_bounded_in_the_fast_check() -> None:
    """A user schema with a catastrophically backtracking pattern: a hostile value is judged
    within the budget (the bounded matcher copes, or gives up), never for seconds."""
    import time

    from balog.events import SchemaRegistry, new_event
    from balog.exceptions import InvalidPayload

    registry = SchemaRegistry(load_entry_points=False)
    registry.register("tag", {"type": "object", "properties": {"tag": {"pattern": CATASTROPHIC}}})
    event = new_event("tests.budget", {"cls_type": "tag", "tag": "x" * 40})
    started = time.monotonic()
    with pytest.raises(InvalidPayload):
        registry.validate(event)
    assert time.monotonic() - started < 10.0  # unbounded, it would run for hours


def test_a_catastrophic_pattern_is_bounded_in_the_full_validator() -> None:
    """The same pattern in a schema outside the fast check's subset (anyOf): fastjsonschema's
    compiled code matches it with the bounded matcher too, and so does the explanation."""
    import time

    from balog.events import SchemaRegistry, new_event
    from balog.exceptions import InvalidPayload

    registry = SchemaRegistry(load_entry_points=False)
    schema = {
        "type": "object",
        "properties": {"tag": {"anyOf": [{"type": "integer"}, {"pattern": CATASTROPHIC}]}},
    }
    assert compile_check(schema, full) is None
    registry.register("tag", schema)
    event = new_event("tests.budget", {"cls_type": "tag", "tag": "x" * 40})
    started = time.monotonic()
    with pytest.raises(InvalidPayload):
        registry.validate(event)
    assert time.monotonic() - started < 10.0  # unbounded, it would run for hours


def test_fastjsonschema_patterns_are_replaced_by_bounded_ones() -> None:
    """Pins what bound_patterns relies on: fastjsonschema's compiled function looks its patterns
    up in a REGEX_PATTERNS mapping of its globals, and they are bounded afterwards."""
    import fastjsonschema

    from balog._fastcheck import bound_patterns

    risky = "^(a+)+$"
    validator = fastjsonschema.compile({"type": "string", "pattern": risky})
    patterns = validator.__globals__["REGEX_PATTERNS"]
    assert list(patterns) == [risky]
    bound_patterns(validator)
    assert type(patterns[risky]).__name__ == "_BoundedPattern"
    assert validator("aaa") == "aaa"
    with pytest.raises(fastjsonschema.JsonSchemaException):
        validator("ab")


@pytest.mark.parametrize(
    ("pattern", "risky"),
    [
        ("^0\\.[0-9]{1,9}(\\.[0-9]{1,9})?$(?!\\n)", False),  # balog's schema version
        ("^-?[0-9]+(\\.[0-9]+)?([eE][+-]?[0-9]+)?$(?!\\n)", False),  # a metric value
        ("[a-z]+@[a-z]+\\.[a-z]{2,}", False),
        ("(ab)+", False),
        ("^(x+x+)+y$", True),  # a repeated group holding a repeat
        ("(a|aa)*", True),  # a repeated group holding an alternative
        ("^(\\w+\\s?)*$", True),
        ("\\d*\\d*\\d*\\d*x", True),  # more unbounded repeats than MAX_REPEATS
        ("(a{2,5})+", True),
        ("[unclosed", True),  # what cannot be read is taken to backtrack
    ],
)
def test_patterns_that_could_backtrack_are_told_apart(pattern: str, risky: bool) -> None:
    """Patterns that can backtrack catastrophically get the bounded matcher; the rest the
    standard library's."""
    from balog._fastcheck import could_backtrack

    assert risky == could_backtrack(pattern)


def test_a_large_invalid_payload_is_explained_from_its_first_errors(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Thousands of invalid metric values (near 256 KiB): the explanation names the first bad
    value having looked at no more than the first EXPLAINED_ERRORS errors (before, it collected
    and sorted all of them: a second per event)."""
    import balog.events as events
    from balog.events import EXPLAINED_ERRORS, decode, encode, new_event
    from balog.exceptions import InvalidPayload

    explainer = events._explainer()
    looked_at: list[int] = []

    class Counting:
        """The explaining validator, counting the errors asked of it."""

        def __init__(self, schema: Any) -> None:
            self.inner = explainer(schema)

        def iter_errors(self, instance: Any) -> Any:
            for error in self.inner.iter_errors(instance):
                looked_at.append(1)
                yield error

    monkeypatch.setattr(events, "_explainer", lambda: Counting)
    values = [{"name": f"m{i}", "value": [i]} for i in range(8_000)]
    body = encode(new_event("tests.budget", {"cls_type": "metrics", "values": values}))
    with pytest.raises(InvalidPayload) as rejected:
        decode(body, max_size=len(body))
    assert rejected.value.field == "payload.values.0.value"
    assert 0 < len(looked_at) <= EXPLAINED_ERRORS
