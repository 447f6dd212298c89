"""Hostile bodies on every backend: each is dead-lettered with a reason (or refused when sent),
the worker lives on, and the good event sent right after it is processed.

balog's loggers are captured at DEBUG throughout: every record's message must stay one line,
with no raw control character (newline, carriage return, ANSI escape) from the input.
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from balog.consumers import Consumer, ConsumerHub
from balog.events import encode, new_event
from balog.exceptions import MessageTooLarge, SendError

from .conftest import FAST_RETRY, Backend, run_engine_until

HOSTILE_TEXT = "line one\nFORGED balog.engine ERROR\rback\x1b[31mred\x1b[0m\x1b]0;title\x07\u2028"
CONTROL = ("\n", "\r", "\x1b", "\x07", "\u2028")


def good_event(n: int = 0) -> tuple[str, bytes]:
    event_id = uuid.uuid4().hex
    event = new_event("hostile.probe", {"cls_type": "probe", "n": n}, id=event_id)
    return event_id, encode(event)


def event_with(mutate: Callable[[dict[str, Any]], None]) -> bytes:
    event = new_event("hostile.probe", {"cls_type": "probe", "n": 1})
    mutate(event)
    return encode(event)


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(event: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = event
        for p in parents:
            node = node[p]
        node[last] = value

    return mutate


def _drop(path: str) -> Callable[[dict[str, Any]], None]:
    def mutate(event: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = event
        for p in parents:
            node = node[p]
        del node[last]

    return mutate


@dataclasses.dataclass
class Case:
    name: str
    body: Callable[[], bytes]
    error: str  # the exception class named in the dead letter's reason
    field: str | None = None  # the field the reason names, when one is at fault
    options: dict[str, Any] = dataclasses.field(default_factory=dict)


def _duplicate(key_json: bytes) -> bytes:
    body = encode(new_event("hostile.probe", {"cls_type": "probe"}))
    return body[:-1] + b"," + key_json + b"}"


def _duplicate_in_header() -> bytes:
    body = encode(new_event("hostile.probe", {"cls_type": "probe"}))
    # A second channel, spelt with an escape so that a byte search alone would miss it.
    return body.replace(b'"channel":', b'"ch\\u0061nnel":"other.channel","channel":', 1)


CASES = [
    Case("not-json", lambda: b"this is not json\n\x1b[31mFORGED\x1b[0m", "DecodeError"),
    Case("invalid-utf8", lambda: b'{"schema":"0.1.0","x":"\xff\xfe\xc3("}', "DecodeError"),
    Case("lone-surrogate", lambda: b'{"schema":"0.1.0","x":"\\ud800"}', "DecodeError"),
    Case("json-array", lambda: b"[1, 2, 3]", "DecodeError"),
    Case("json-string", lambda: b'"just a string"', "DecodeError"),
    Case("json-null", lambda: b"null", "DecodeError"),
    Case("empty", lambda: b"", "DecodeError"),
    Case("nan", lambda: b'{"schema":"0.1.0","x":NaN}', "DecodeError"),
    Case("deep-100k-array", lambda: b"[" * 100_000 + b"]" * 100_000, "EventTooDeep"),
    Case(
        "deep-200k-array",
        lambda: b"[" * 200_000 + b"]" * 200_000,
        "EventTooDeep",
        options={"max_event_size": 1024 * 1024},  # where the transport carries 400 KB at all
    ),
    Case(
        "deep-in-payload",
        lambda: event_with(_set("payload.nest", _nest(40))),
        "EventTooDeep",
    ),
    Case("int-100k-digits", lambda: _big_number(b"7" * 100_000), "DecodeError"),
    Case("float-overflow", lambda: _big_number(b"1" + b"0" * 400 + b".5"), "DecodeError"),
    Case(
        "over-engine-limit",
        lambda: event_with(_set("payload.blob", "x" * 4000)),
        "EventTooLarge",
        options={"max_event_size": 2048},
    ),
    Case("duplicate-schema", lambda: _duplicate(b'"schema":"9.0.0"'), "DecodeError", "schema"),
    Case(
        "duplicate-payload",
        lambda: _duplicate(b'"payload":{"cls_type":"other"}'),
        "DecodeError",
        "payload",
    ),
    Case("duplicate-escaped-channel", _duplicate_in_header, "DecodeError", "header.channel"),
    Case("missing-header", lambda: event_with(_drop("header")), "InvalidEvent", "header"),
    Case("missing-id", lambda: event_with(_drop("header.id")), "InvalidEvent", "header.id"),
    Case(
        "missing-channel",
        lambda: event_with(_drop("header.channel")),
        "InvalidEvent",
        "header.channel",
    ),
    Case(
        "missing-cls-type",
        lambda: event_with(_drop("payload.cls_type")),
        "InvalidEvent",
        "payload.cls_type",
    ),
    Case("missing-schema", lambda: event_with(_drop("schema")), "InvalidEvent", "schema"),
    Case("schema-not-string", lambda: event_with(_set("schema", 0.1)), "InvalidEvent", "schema"),
    Case(
        "schema-trailing-newline",
        lambda: event_with(_set("schema", "0.1.0\n")),
        "InvalidEvent",
        "schema",
    ),
    Case(
        "channel-not-string",
        lambda: event_with(_set("header.channel", 5)),
        "InvalidEvent",
        "header.channel",
    ),
    Case(
        "timestamp-wrong",
        lambda: event_with(_set("header.timestamp", "yesterday\n" + HOSTILE_TEXT)),
        "InvalidEvent",
        "header.timestamp",
    ),
    Case(
        "context-not-object",
        lambda: event_with(_set("header.context", [1])),
        "InvalidEvent",
        "header.context",
    ),
    Case("payload-list", lambda: event_with(_set("payload", [])), "InvalidEvent", "payload"),
    Case(
        "cls-type-not-string",
        lambda: event_with(_set("payload.cls_type", {"a": 1})),
        "InvalidEvent",
        "payload.cls_type",
    ),
    Case(
        "metrics-payload-fails-schema",
        lambda: event_with(_set("payload", {"cls_type": "metrics", "values": "lots"})),
        "InvalidPayload",
        "payload.values",
    ),
    Case(
        "log-payload-bad-severity",
        lambda: event_with(
            _set("payload", {"cls_type": "log", "message": "m", "severity": HOSTILE_TEXT})
        ),
        "InvalidPayload",
        "payload.severity",
    ),
    Case(
        "unsupported-major",
        lambda: event_with(_set("schema", "7.0.0")),
        "UnsupportedSchemaVersion",
        "schema",
    ),
    Case(
        "unsupported-huge-major",
        lambda: event_with(_set("schema", "9" * 5000 + ".0")),
        "UnsupportedSchemaVersion",
        "schema",
    ),
    Case(
        "channel-100kb",
        lambda: event_with(_set("header.channel", ("c" + HOSTILE_TEXT) * 1500)),
        "InvalidEvent",
        "header.channel",
    ),
    Case(
        "cls-type-100kb",
        lambda: event_with(_set("payload.cls_type", "t" * 100_000)),
        "InvalidEvent",
        "payload.cls_type",
    ),
    Case(
        "id-100kb",
        lambda: event_with(_set("header.id", HOSTILE_TEXT * 1500)),
        "InvalidEvent",
        "header.id",
    ),
]


def _nest(depth: int) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = [value]
    return value


def _big_number(digits: bytes) -> bytes:
    body = encode(new_event("hostile.probe", {"cls_type": "probe", "n": 0}))
    return body.replace(b'"n":0', b'"n":' + digits, 1)


def assert_one_line_logs(caplog: pytest.LogCaptureFixture) -> None:
    """Every balog log record's message is one line with no raw control character."""
    for record in caplog.records:
        if not record.name.startswith("balog"):
            continue
        message = record.getMessage()
        for char in CONTROL:
            assert char not in message, f"raw {char!r} in a {record.name} log line: {message!r}"
        assert len(message) < 4000, f"a {record.name} log line of {len(message)} characters"


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_body_is_dead_lettered_and_the_next_event_processed(
    backend: Backend, case: Case, caplog: pytest.LogCaptureFixture
) -> None:
    """A hostile body ends dead-lettered naming its error and field; the next event is processed."""
    caplog.set_level(logging.DEBUG, logger="balog")
    body = case.body()
    limit = backend.max_body_size
    processed: list[str] = []
    hub = ConsumerHub([Consumer(lambda e: processed.append(e["header"]["id"]), backend.topic)])
    good_id, good = good_event()
    if limit is not None and len(body) > limit:
        # Too big for this transport: refused when sent, with a clear error, and nothing sent.
        with pytest.raises(MessageTooLarge) as refused:
            backend.send(body)
        assert f"exceeds the transport limit of {limit} bytes" in str(refused.value)
        backend.send(good)
        engine = backend.make_engine(hub, backoff=FAST_RETRY, **case.options)
        run_engine_until(engine, lambda: processed)
        assert [good_id] == processed
        assert backend.dead_letters() == []
        return
    backend.send(body, good)
    engine = backend.make_engine(hub, backoff=FAST_RETRY, **case.options)
    run_engine_until(engine, lambda: processed and backend.dead_letters())

    assert [good_id] == processed
    dead = backend.dead_letters()
    assert len(dead) == 1
    assert body == dead[0].body
    reason = dead[0].reason
    assert reason.startswith(f"invalid event: {case.error}: "), reason
    if case.field is not None:
        assert f": {case.field}: " in reason, reason
    for char in CONTROL:
        assert char not in reason
    assert len(reason) <= 1000
    stats = engine.stats()[backend.topic]
    assert (stats.received, stats.processed, stats.dead_lettered) == (2, 1, 1)
    assert_one_line_logs(caplog)


# kombu declares no body limit of its own (RabbitMQ and Redis take large bodies); there the
# engine's max_event_size dead-letters an oversized body, which the decode cases above show.
@pytest.mark.parametrize("backend", ["memory", "sqlite", "redis-native", "sqs"], indirect=True)
def test_body_over_the_transport_limit_is_refused_before_anything_is_sent(
    backend: Backend,
) -> None:
    """send() refuses a batch holding one body over the limit with MessageTooLarge, sending none."""
    limit = backend.max_body_size
    assert limit is not None, f"{backend.name} should declare a body size limit"
    _, good = good_event()
    too_big = event_with(_set("payload.blob", "x" * limit))
    with pytest.raises(MessageTooLarge) as refused:
        backend.send(good, too_big)
    assert (len(too_big), limit) == (refused.value.size, refused.value.limit)
    processed: list[str] = []
    hub = ConsumerHub([Consumer(lambda e: processed.append(e["header"]["id"]), backend.topic)])
    marker_id, marker = good_event(2)
    backend.send(marker)
    engine = backend.make_engine(hub, backoff=FAST_RETRY)
    run_engine_until(engine, lambda: marker_id in processed)
    assert [marker_id] == processed


def test_hostile_text_in_a_consumer_failure_stays_on_one_line(
    backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    """A consumer that raises with control characters: retry and dead-letter logs stay one line."""
    caplog.set_level(logging.DEBUG, logger="balog")
    processed: list[str] = []

    def consume(event: dict[str, Any]) -> None:
        if event["payload"].get("hostile"):
            raise ValueError(event["payload"]["hostile"])
        processed.append(event["header"]["id"])

    hub = ConsumerHub([Consumer(consume, backend.topic, name="hostile\nconsumer\x1b[2J")])
    bad = event_with(
        lambda e: (
            e["payload"].update(hostile=HOSTILE_TEXT * 50)
            or e["header"].update(channel="ch\n" + HOSTILE_TEXT)
        )
    )
    good_id, good = good_event()
    backend.send(bad, good)
    engine = backend.make_engine(hub, backoff=FAST_RETRY, max_attempts=2)
    run_engine_until(engine, lambda: processed and backend.dead_letters())
    assert [good_id] == processed
    dead = backend.dead_letters()
    assert len(dead) == 1
    assert "raised ValueError: line one\\nFORGED" in dead[0].reason
    assert dead[0].reason.endswith("(after 2 attempts)")
    for char in CONTROL:
        assert char not in dead[0].reason
    assert_one_line_logs(caplog)
    assert any("dead-lettered" in r.getMessage() for r in caplog.records)


def test_send_error_is_not_raised_for_a_valid_batch(backend: Backend) -> None:
    """A batch of ten valid bodies is accepted whole: no SendError, all ten processed."""
    ids_bodies = [good_event(n) for n in range(10)]
    try:
        backend.send(*(b for _, b in ids_bodies))
    except SendError as exc:  # pragma: no cover - the failure this test exists to catch
        pytest.fail(f"partial send: {exc.failed}")
    processed: list[str] = []
    hub = ConsumerHub([Consumer(lambda e: processed.append(e["header"]["id"]), backend.topic)])
    engine = backend.make_engine(hub, backoff=FAST_RETRY)
    run_engine_until(engine, lambda: len(processed) >= 10)
    assert sorted(i for i, _ in ids_bodies) == sorted(processed)


@pytest.mark.parametrize("backend", ["sqlite", "redis-native", "sqs"], indirect=True)
def test_invalid_body_of_exactly_the_transport_limit_is_dead_lettered_whole(
    backend: Backend,
) -> None:
    """An invalid body of exactly max_body_size bytes is dead-lettered whole, once, and never
    loops: its dead letter fits the backend's limit however the reason has to be shortened."""
    limit = backend.max_body_size
    assert limit is not None, f"{backend.name} should declare a body size limit"
    body = (b"[" + b"1," * limit)[: limit - 2] + b"1]"  # JSON, but not an object
    assert len(body) == limit
    good_id, good = good_event()
    backend.send(body, good)
    processed: list[str] = []
    hub = ConsumerHub([Consumer(lambda e: processed.append(e["header"]["id"]), backend.topic)])
    engine = backend.make_engine(hub, backoff=FAST_RETRY)
    run_engine_until(engine, lambda: processed and backend.dead_letters())
    assert [good_id] == processed
    assert [body] == [letter.body for letter in backend.dead_letters()]
    stats = engine.stats()[backend.topic]
    assert (stats.received, stats.processed, stats.dead_lettered, stats.errors) == (2, 1, 1, 0)
