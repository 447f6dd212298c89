"""The event format: building, encoding, decoding, and the errors for bad input."""

from __future__ import annotations

import json
from datetime import datetime, timezone

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
