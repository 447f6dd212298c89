"""The event format: building, encoding, decoding, and the errors for bad input."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from packaging.version import Version

from balog import events
from balog.events import FACILITY_VERSION, SchemaRegistry, decode, encode, new_event
from balog.exceptions import (
    ConfigurationError,
    DecodeError,
    EventTooDeep,
    EventTooLarge,
    InvalidEvent,
    InvalidPayload,
    UnsupportedSchemaVersion,
)

METRICS = {"cls_type": "metrics", "values": [{"name": "total", "value": 123}]}

# An event as balog 0.0.1 producers wrote it.
LEGACY_BODY = json.dumps(
    {
        "schema": "0.0.1",
        "header": {
            "id": "LGk37Fo3xLLVx9GrfnyTuvBd",
            "channel": "justitia.scripts.process_results.done",
            "timestamp": "2014-10-07T15:06:51.641083+00:00",
            "context": {"fqdn": "worker-1.example.com", "application": "justitia"},
        },
        "payload": {
            "cls_type": "metrics",
            "values": [
                {"name": "total", "value": "1234.0"},
                {"name": "failed", "value": "0.0"},
            ],
        },
    }
).encode()


def test_new_event_has_both_layers() -> None:
    """new_event wraps the payload in a facility layer of the current version."""
    event = new_event("myapp.jobs.done", METRICS, context={"user": "u1"})
    assert event["schema"] == FACILITY_VERSION
    assert event["header"]["channel"] == "myapp.jobs.done"
    assert event["header"]["context"] == {"user": "u1"}
    assert event["payload"] == METRICS
    assert len(event["header"]["id"]) == 32
    stamp = datetime.fromisoformat(event["header"]["timestamp"])
    assert stamp.utcoffset() == timezone.utc.utcoffset(None)


def test_facility_version_stays_below_one() -> None:
    """A consumer declared with version='<1.0' receives what balog produces today."""
    assert Version(FACILITY_VERSION) < Version("1.0")


def test_round_trip_is_exact() -> None:
    """decode(encode(event)) gives back the same event."""
    event = new_event("a.b", METRICS, timestamp=datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc))
    assert decode(encode(event)) == event


def test_legacy_0_0_1_event_is_read() -> None:
    """Events written by balog 0.0.1 (string metric values, 24-char ids) still decode."""
    event = decode(LEGACY_BODY)
    assert event["schema"] == "0.0.1"
    assert event["header"]["id"] == "LGk37Fo3xLLVx9GrfnyTuvBd"
    assert event["payload"]["values"][0]["value"] == "1234.0"


@pytest.mark.parametrize(
    ("body", "error", "field"),
    [
        (b"not json", DecodeError, None),
        (b"\xff\xfe{}", DecodeError, None),
        (b"[1, 2]", DecodeError, None),
        (b'"a string"', DecodeError, None),
        (b'{"schema": NaN}', DecodeError, None),
        (b"[" * 100_000 + b"]" * 100_000, EventTooDeep, None),
        (b'{"schema": "0.1.0", "header": {}, "payload": {}}', InvalidEvent, "header.id"),
        (b'{"schema": 1, "header": {}, "payload": {}}', InvalidEvent, "schema"),
        (b'{"schema": "7.0.0", "header": {}, "payload": {}}', UnsupportedSchemaVersion, "schema"),
    ],
)
def test_bad_bodies_get_specific_errors(body: bytes, error: type[Exception], field: str) -> None:
    """Each kind of bad input raises its own EventError naming the field at fault."""
    with pytest.raises(error) as info:
        decode(body, max_size=1_000_000)
    assert getattr(info.value, "field", None) == field


def test_missing_header_field_is_named() -> None:
    """A missing required field is named by its path."""
    event = new_event("a.b", METRICS)
    del event["header"]["channel"]
    with pytest.raises(InvalidEvent) as info:
        decode(encode(event))
    assert info.value.field == "header.channel"


def test_wrong_typed_field_is_named() -> None:
    """A wrong-typed facility field is named by its path."""
    event = new_event("a.b", METRICS)
    event["header"]["timestamp"] = 12
    with pytest.raises(InvalidEvent) as info:
        decode(encode(event))
    assert info.value.field == "header.timestamp"


def test_payload_failing_its_schema() -> None:
    """A payload failing its registered schema raises InvalidPayload naming the field."""
    event = new_event("a.b", {"cls_type": "metrics", "values": [{"name": "x", "value": True}]})
    with pytest.raises(InvalidPayload) as info:
        decode(encode(event))
    assert info.value.field == "payload.values.0.value"


def test_log_payload_severity_is_checked() -> None:
    """The built-in log payload only takes the five severities."""
    event = new_event("a.b", {"cls_type": "log", "message": "m", "severity": "loud"})
    with pytest.raises(InvalidPayload) as info:
        decode(encode(event))
    assert info.value.field == "payload.severity"


def test_too_large_body_is_refused_before_parsing() -> None:
    """A body over max_size raises EventTooLarge, whatever it contains."""
    with pytest.raises(EventTooLarge):
        decode(b" " * 2048, max_size=1024)


def test_depth_limit_is_enforced() -> None:
    """Nesting deeper than max_depth raises EventTooDeep even when the parser copes."""
    event = new_event("a.b", {"cls_type": "deep", "data": [[[[[[1]]]]]]})
    assert decode(encode(event), max_depth=10)["payload"]["data"] == [[[[[[1]]]]]]
    with pytest.raises(EventTooDeep):
        decode(encode(event), max_depth=5)


def test_error_messages_do_not_echo_the_body() -> None:
    """A huge bad value is clipped in the message, never echoed whole."""
    event = new_event("x" * 100_000, METRICS)
    with pytest.raises(InvalidEvent) as info:
        decode(encode(event))
    assert info.value.field == "header.channel"
    assert len(str(info.value)) < 300


def test_open_content_payload_is_accepted() -> None:
    """A cls_type with no registered schema is accepted as it is."""
    event = new_event("a.b", {"cls_type": "anything", "free": {"form": [1, "two"]}})
    assert decode(encode(event)) == event


def test_registered_payload_schema_is_enforced() -> None:
    """A user-registered payload schema validates payloads of its cls_type."""
    registry = SchemaRegistry(load_entry_points=False)
    registry.register(
        "debit",
        {"type": "object", "required": ["amount"], "properties": {"amount": {"type": "integer"}}},
    )
    good = new_event("a.b", {"cls_type": "debit", "amount": 5})
    assert decode(encode(good), registry=registry) == good
    bad = new_event("a.b", {"cls_type": "debit", "amount": "5"})
    with pytest.raises(InvalidPayload) as info:
        decode(encode(bad), registry=registry)
    assert info.value.field == "payload.amount"
    registry.unregister("debit")
    assert decode(encode(bad), registry=registry) == bad


def test_invalid_registered_schema_is_a_configuration_error() -> None:
    """Registering something that is not a JSON Schema fails at registration."""
    registry = SchemaRegistry(load_entry_points=False)
    with pytest.raises(ConfigurationError):
        registry.register("broken", {"type": "no-such-type"})


def test_stdlib_codec_matches_orjson_behaviour() -> None:
    """The standard-library fallback codec refuses NaN and reads UTF-8 bytes like orjson."""
    assert events.std_loads(events.std_dumps({"a": "é"})) == {"a": "é"}
    with pytest.raises(ValueError, match="NaN"):
        events.std_loads(b'{"a": NaN}')


# -- upcasters: old events in today's shape ---------------------------------------------------


def _legacy(values: list, **header: object) -> dict:
    """An event as balog 1.x wrote it (schema 0.0.1), with these metric values."""
    event = {
        "schema": "0.0.1",
        "header": {
            "id": "LGk37Fo3xLLVx9GrfnyTuvBd",
            "channel": "justitia.scripts.process_results.done",
            "timestamp": "2014-10-07T15:06:51.641083+00:00",
            "context": {},
        },
        "payload": {"cls_type": "metrics", "values": values},
    }
    event["header"].update(header)  # type: ignore[attr-defined]
    return event


def _upcast_body(event: dict) -> dict:
    """Decode the event's wire form, then upcast it, as the engine does."""
    return events.default_registry.upcast(decode(json.dumps(event).encode()))


@pytest.mark.parametrize(
    ("written", "read"),
    [
        ("1234.0", 1234.0),
        ("0.0", 0.0),
        ("-12.5", -12.5),
        (" 12 ", 12.0),
        ("1e3", 1000.0),
        ("+1.5", 1.5),
        ("1.23456789012e+11", 123456789012.0),
        ("inf", math.inf),
        ("-inf", -math.inf),
        ("Infinity", math.inf),
        (7, 7.0),
        (2.5, 2.5),
        (True, 1.0),
    ],
)
def test_legacy_metric_values_reach_consumers_as_numbers(written: object, read: float) -> None:
    """balog 1.x's metric values (strings, as colander.Float wrote them, and every form it read
    back) are floats after upcasting, so an old consumer's arithmetic works."""
    value = _upcast_body(_legacy([{"name": "n", "value": written}]))["payload"]["values"][0]
    assert (type(value["value"]), value["value"]) == (float, read)


@pytest.mark.parametrize("written", ["nan", "NaN", "-nan"])
def test_legacy_nan_is_read_not_dead_lettered(written: str) -> None:
    """'nan' written by balog 1.x passes validation and reaches consumers as a float NaN."""
    value = _upcast_body(_legacy([{"name": "n", "value": written}]))["payload"]["values"][0]
    assert math.isnan(value["value"])


@pytest.mark.parametrize("written", ["", "abc", "1_000", None, [1], "12 apples"])
def test_legacy_metric_values_balog_1x_refused_are_still_refused(written: object) -> None:
    """What colander.Float refused is not turned into a number: validation names it."""
    with pytest.raises(InvalidPayload) as info:
        decode(json.dumps(_legacy([{"name": "n", "value": written}])).encode())
    assert info.value.field == "payload.values.0.value"


def test_upcast_returns_todays_events_unchanged() -> None:
    """An event of today's schema is returned as the very same object: nothing to pay."""
    event = decode(encode(new_event("a.b", METRICS)))
    assert events.default_registry.upcast(event) is event
    assert events.raw(event) is event


def test_upcast_keeps_the_raw_event_and_the_schema_version() -> None:
    """The upcast event keeps schema '0.0.1' (so consumers routed by version see it), and the
    event as decoded stays available, unchanged by what is done to the upcast one."""
    decoded = decode(json.dumps(_legacy([{"name": "n", "value": "1.5"}])).encode())
    upcast = events.default_registry.upcast(decoded)
    assert isinstance(upcast, events.UpcastEvent)
    assert upcast["schema"] == "0.0.1"
    upcast["payload"]["values"][0]["value"] = 99
    upcast["header"]["context"]["touched"] = True
    assert events.raw(upcast) is decoded
    assert upcast.raw["payload"]["values"] == [{"name": "n", "value": "1.5"}]
    assert upcast.raw["header"]["context"] == {}
    assert events.default_registry.upcast(upcast) is upcast  # upcasting twice changes nothing


@pytest.mark.parametrize(
    ("written", "read"),
    [
        ("2014-10-07T15:06:51.641083+00:00", "2014-10-07T15:06:51.641083+00:00"),
        ("2014-10-07T15:06:51", "2014-10-07T15:06:51+00:00"),
        ("2014-10-07 15:06", "2014-10-07T15:06:00+00:00"),
        ("2014-10-07", "2014-10-07T00:00:00+00:00"),
        ("2014-10-07T15:06:51.5-05:00", "2014-10-07T15:06:51.5-05:00"),
        ("2014-10-07T15:06-05:00", "2014-10-07T15:06:00-05:00"),
    ],
)
def test_legacy_timestamps_are_read_as_balog_1x_read_them(written: str, read: str) -> None:
    """Timestamp forms balog 1.x read (no offset meaning UTC, no seconds, a date alone) are
    accepted and given in today's ISO 8601 form, still a string."""
    upcast = _upcast_body(_legacy([], timestamp=written))
    assert upcast["header"]["timestamp"] == read


def test_legacy_composition_is_a_boolean() -> None:
    """header.composition, a colander.Bool in balog 1.x, is read as it read it."""
    assert _upcast_body(_legacy([], composition="false"))["header"]["composition"] is False
    assert _upcast_body(_legacy([], composition="yes"))["header"]["composition"] is True


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-01-02T03:04:05.000000+00:00", datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)),
        ("2026-01-02T03:04:05Z", datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)),
        (
            "2026-01-02 03:04:05.123456789+00:00",
            datetime(2026, 1, 2, 3, 4, 5, 123456, timezone.utc),
        ),
        (
            "2026-01-02T03:04:05+0530",
            datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=5, minutes=30))),
        ),
    ],
)
def test_timestamp_gives_a_datetime(text: str, expected: datetime) -> None:
    """balog.events.timestamp(event) reads header.timestamp as balog 1.x handed it over: an
    aware datetime."""
    event = new_event("a.b", METRICS, timestamp=text)
    assert events.timestamp(event) == expected
    assert events.timestamp(event).utcoffset() == expected.utcoffset()


def test_timestamp_of_a_bad_event_is_an_invalid_event() -> None:
    """A missing or unreadable timestamp is an InvalidEvent naming the field."""
    with pytest.raises(InvalidEvent) as info:
        events.timestamp({"header": {"timestamp": "yesterday"}})
    assert info.value.field == "header.timestamp"


def _cents(event: dict) -> dict:
    payload = event["payload"]
    if isinstance(payload.get("amount"), str):
        payload["amount"] = round(float(payload["amount"]) * 100)
    return event


def _debit(schema: str, amount: object) -> bytes:
    event = new_event("a.b", {"cls_type": "debit", "amount": amount})
    event["schema"] = schema
    return encode(event)


def test_registered_upcaster_makes_the_old_form_valid_and_todays_shape() -> None:
    """An application's upcaster, per cls_type and version, turns its old form into today's;
    validation accepts the old form it turns, and only at the versions it declares."""
    registry = SchemaRegistry(load_entry_points=False)
    registry.register(
        "debit",
        {"type": "object", "required": ["amount"], "properties": {"amount": {"type": "integer"}}},
    )
    added = registry.register_upcaster("debit", "<0.1", _cents)
    assert added in registry.upcasters
    old = decode(_debit("0.0.3", "1.25"), registry=registry)
    assert registry.upcast(old)["payload"]["amount"] == 125
    with pytest.raises(InvalidPayload):
        decode(_debit("0.1.0", "1.25"), registry=registry)
    untouched = decode(_debit("0.0.3", 7), registry=registry)
    assert registry.upcast(untouched)["payload"] == {"cls_type": "debit", "amount": 7}


def test_upcasters_apply_in_order_and_by_cls_type() -> None:
    """Every upcaster whose cls_type (None: any) and versions match applies, in the order added,
    each given what the one before returned."""
    registry = SchemaRegistry(load_entry_points=False)
    seen: list[str] = []

    def step(name: str) -> events.UpcastFunc:
        def upcast(event: dict) -> dict:
            seen.append(name)
            event["payload"].setdefault("steps", []).append(name)
            return event

        return upcast

    registry.register_upcaster("debit", "<0.1", step("first"))
    registry.register_upcaster(None, ">=0.0.2,<0.1", step("any type"))
    registry.register_upcaster("credit", "<0.1", step("other type"))
    registry.register_upcaster("debit", ">=0.1", step("newer"))
    upcast = registry.upcast(decode(_debit("0.0.3", 1), registry=registry))
    assert upcast["payload"]["steps"] == ["first", "any type"]


def test_upcaster_decorator_and_add_upcaster() -> None:
    """@upcaster(cls_type, versions) makes an Upcaster that add_upcaster registers."""

    @events.upcaster("debit", versions="==0.0.*")
    def tag(event: dict) -> dict:
        event["payload"]["tagged"] = True
        return event

    assert isinstance(tag, events.Upcaster)
    assert tag.name == f"{__name__}.test_upcaster_decorator_and_add_upcaster.<locals>.tag"
    registry = SchemaRegistry(load_entry_points=False)
    registry.add_upcaster(tag)
    assert registry.upcast(decode(_debit("0.0.9", 1)))["payload"]["tagged"] is True
    with pytest.raises(ConfigurationError, match="not an Upcaster"):
        registry.add_upcaster(_cents)  # type: ignore[arg-type]


@pytest.mark.parametrize("versions", ["<<0.1", "", "zero"])
def test_bad_upcaster_versions_fail_at_registration(versions: str) -> None:
    """A bad version specifier is refused when the upcaster is registered."""
    with pytest.raises(ConfigurationError):
        SchemaRegistry(load_entry_points=False).register_upcaster("debit", versions, _cents)


def test_failing_upcaster_is_an_invalid_event_naming_it() -> None:
    """An upcaster that raises makes the event invalid (dead-lettered, with the reason), naming
    the upcaster; one that changes the schema version is refused the same way."""
    registry = SchemaRegistry(load_entry_points=False)

    def broken(event: dict) -> dict:
        raise KeyError("amount")

    registry.register_upcaster("debit", "<0.1", broken, name="debit cents")
    with pytest.raises(InvalidEvent, match="upcaster debit cents failed: KeyError"):
        decode(_debit("0.0.3", 1), registry=registry)
    registry.reset()

    def renumber(event: dict) -> dict:
        event["schema"] = "0.1.0"
        return event

    registry.register_upcaster("debit", "<0.1", renumber)
    with pytest.raises(InvalidEvent) as info:
        decode(_debit("0.0.3", 1), registry=registry)
    assert info.value.field == "schema"


def test_reset_forgets_added_upcasters_and_keeps_the_built_ins() -> None:
    """SchemaRegistry.reset() (and so balog.testing.reset()) drops upcasters added since
    import; the built-in ones stay."""
    events.default_registry.register_upcaster("debit", "<0.1", _cents)
    assert len(events.default_registry.upcasters) == len(events.BUILTIN_UPCASTERS) + 1
    import balog.testing

    balog.testing.reset()
    assert events.default_registry.upcasters == events.BUILTIN_UPCASTERS
    assert decode(_debit("0.0.3", "1.25"))["payload"]["amount"] == "1.25"


@pytest.fixture
def upcaster_distribution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An installed distribution whose entry points register upcasters (one of them broken)."""
    dist = tmp_path / "balog_fake_upcasters-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: balog-fake-upcasters\nVersion: 1.0\n"
    )
    (dist / "entry_points.txt").write_text(
        "[balog.upcasters]\ndebits = balog_fake_upcasters:UPCASTERS\n"
    )
    (tmp_path / "balog_fake_upcasters.py").write_text(
        "from balog.events import upcaster\n"
        "@upcaster('debit', versions='<0.1')\n"
        "def cents(event):\n"
        "    event['payload']['amount'] = int(float(event['payload']['amount']) * 100)\n"
        "    return event\n"
        "UPCASTERS = [cents]\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield dist
    sys.modules.pop("balog_fake_upcasters", None)


def test_upcasters_from_the_entry_point_group(upcaster_distribution: Path) -> None:
    """Packages register upcasters through the balog.upcasters entry point group."""
    registry = SchemaRegistry()
    assert registry.upcast(decode(_debit("0.0.3", "2.5"), registry=registry))["payload"] == {
        "cls_type": "debit",
        "amount": 250,
    }
    assert [u.name for u in registry.upcasters][-1] == "balog_fake_upcasters.cents"


def test_broken_upcaster_entry_point_is_a_configuration_error(
    upcaster_distribution: Path,
) -> None:
    """An entry point that fails to load, or is not an Upcaster, is a ConfigurationError
    naming it."""
    (upcaster_distribution / "entry_points.txt").write_text(
        "[balog.upcasters]\nnope = balog_fake_upcasters:missing\n"
    )
    with pytest.raises(ConfigurationError, match="'nope'"):
        SchemaRegistry().upcast(json.loads(_debit("0.0.3", 1)))
    (upcaster_distribution / "entry_points.txt").write_text(
        "[balog.upcasters]\nplain = balog_fake_upcasters:cents.func\n"
    )
    with pytest.raises(ConfigurationError, match="not an Upcaster"):
        SchemaRegistry().upcast(json.loads(_debit("0.0.3", 1)))


def test_readme_upcaster_example_runs_as_written() -> None:
    """The README's payload schema and upcaster example runs as written and does what it says."""
    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    blocks = [b.split("```", 1)[0] for b in readme.split("```python\n")[1:]]
    (example,) = [b for b in blocks if "@upcaster(" in b]
    exec(compile(example, "README.md", "exec"), {})
    body = _debit("0.1.0", 0)
    old = json.loads(body)
    old["payload"] = {"cls_type": "order.paid", "amount_dollars": "12.34"}
    upcast = events.default_registry.upcast(decode(json.dumps(old)))
    assert upcast["payload"] == {"cls_type": "order.paid", "amount": 1234}
    with pytest.raises(InvalidPayload):
        decode(json.dumps({**old, "schema": "0.2.0"}))
