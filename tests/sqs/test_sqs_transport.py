"""SQSTransport against the moto server over HTTP: sending, batching, settling, errors, secrets."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import botocore.config
import botocore.exceptions
import pytest
from sqs_helpers import FaultProxy, unreachable, visible_count, wait_for

from balog.events import encode, loads, new_event
from balog.exceptions import (
    AuthenticationError,
    ConfigurationError,
    LeaseExpired,
    MessageTooLarge,
    SendError,
    ThrottledError,
    TopicNotFound,
    TransportConnectionError,
)
from balog.transports import create_transport
from balog.transports.base import ATTEMPTS_HEADER, REASON_HEADER, SOURCE_TOPIC_HEADER, Delivery
from balog.transports.sqs import SQSTransport

CANARY_KEY = "AKIACANARYKEY1234567"
CANARY_SECRET = "canary/secret+Value0123456789abcdefghijk"
URL_SECRET = "canary-url-secret-0123456789"


def receive_all(
    t: SQSTransport, topic: str, expected: int, timeout: float = 10.0
) -> list[Delivery]:
    got: list[Delivery] = []
    deadline = time.monotonic() + timeout
    while len(got) < expected and time.monotonic() < deadline:
        got.extend(t.receive(topic, max_messages=10, wait=0.5, lease=30))
    return got


def wire_size(entry: dict[str, Any]) -> int:
    attributes = entry.get("MessageAttributes", {})
    return len(entry["MessageBody"].encode()) + sum(
        len(k.encode()) + len(v["DataType"]) + len(v["StringValue"].encode())
        for k, v in attributes.items()
    )


def test_send_receive_ack_roundtrip(
    transport: SQSTransport, make_queue: Callable[..., str], sqs_client: Any, unique_name: str
) -> None:
    """Bodies and headers arrive intact, with a receive count, and ack deletes them."""
    url = make_queue(unique_name)
    bodies = [b'{"n": 1}', b'{"n": 2}', b'{"n": 3}']
    transport.send(unique_name, bodies, headers={"origin": "test"})
    got = receive_all(transport, unique_name, 3)
    assert sorted(bodies) == sorted(d.body for d in got)
    assert [dict(d.headers) for d in got] == [{"origin": "test"}] * 3
    assert [d.receive_count for d in got] == [1, 1, 1]
    for d in got:
        transport.ack(d)
    assert visible_count(sqs_client, url) == (0, 0)


def test_entry_point_builds_the_transport(sqs_endpoint: str) -> None:
    """The ``sqs`` transport name builds an SQSTransport from keyword options."""
    t = create_transport("sqs", endpoint_url=sqs_endpoint, region="us-east-1")
    assert isinstance(t, SQSTransport)


def test_missing_queue_raises_topic_not_found(transport: SQSTransport, unique_name: str) -> None:
    """Sending to a queue that does not exist raises TopicNotFound, chained to botocore."""
    with pytest.raises(TopicNotFound) as info:
        transport.send(unique_name, [b"{}"])
    assert isinstance(info.value.__cause__, botocore.exceptions.ClientError)
    assert "create_queues=True" in str(info.value)


def test_create_queues_creates_a_missing_queue(sqs_endpoint: str, unique_name: str) -> None:
    """With create_queues, a missing queue is created and the message lands in it."""
    t = SQSTransport(endpoint_url=sqs_endpoint, create_queues=True)
    t.send(unique_name, [b'{"a": 1}'])
    assert [d.body for d in receive_all(t, unique_name, 1)] == [b'{"a": 1}']


def test_queue_url_is_resolved_once(
    fault_proxy: FaultProxy, make_queue: Callable[..., str], unique_name: str
) -> None:
    """Many sends and receives on one queue call GetQueueUrl once."""
    make_queue(unique_name)
    t = SQSTransport(endpoint_url=fault_proxy.url)
    for _ in range(3):
        t.send(unique_name, [b"{}"])
    receive_all(t, unique_name, 3)
    assert len(fault_proxy.actions("GetQueueUrl")) == 1


def test_deleted_queue_is_resolved_afresh(
    sqs_endpoint: str, make_queue: Callable[..., str], sqs_client: Any, unique_name: str
) -> None:
    """A queue deleted after its URL was cached raises TopicNotFound, and with create_queues
    the next send creates it again."""
    url = make_queue(unique_name)
    t = SQSTransport(endpoint_url=sqs_endpoint)
    t.send(unique_name, [b"{}"])
    sqs_client.delete_queue(QueueUrl=url)
    with pytest.raises(TopicNotFound):
        t.send(unique_name, [b"{}"])
    t.create_queues = True
    t.send(unique_name, [b'{"again": 1}'])
    assert [d.body for d in receive_all(t, unique_name, 1)] == [b'{"again": 1}']


def test_oversize_body_rejected_before_any_call(
    fault_proxy: FaultProxy, make_queue: Callable[..., str], sqs_client: Any, unique_name: str
) -> None:
    """A single body over the limit raises MessageTooLarge and nothing of the batch is sent."""
    url = make_queue(unique_name)
    t = SQSTransport(endpoint_url=fault_proxy.url, max_body_size=1000)
    with pytest.raises(MessageTooLarge) as info:
        t.send(unique_name, [b"x" * 10, b"y" * 1001, b"z" * 10])
    assert (info.value.size, info.value.limit) == (1001, 1000)
    assert fault_proxy.actions("SendMessageBatch") == []
    assert visible_count(sqs_client, url) == (0, 0)


def test_batches_split_by_bytes_and_entries(
    fault_proxy: FaultProxy, make_queue: Callable[..., str], unique_name: str
) -> None:
    """Each SendMessageBatch call has at most 10 entries and at most max_body_size bytes of
    bodies plus attributes, and every body arrives."""
    make_queue(unique_name)
    t = SQSTransport(endpoint_url=fault_proxy.url, max_body_size=1000)
    bodies = [(b"%03d" % i) + b"." * 297 for i in range(25)]  # 300 bytes each
    t.send(unique_name, bodies, headers={"k": "vv"})  # + 1 + 6 + 2 bytes of attributes
    calls = fault_proxy.actions("SendMessageBatch")
    sizes = [sum(wire_size(e) for e in call["Entries"]) for call in calls]
    assert [len(call["Entries"]) for call in calls] == [3] * 8 + [1]
    assert all(size <= 1000 for size in sizes)
    assert sorted(bodies) == sorted(d.body for d in receive_all(t, unique_name, 25))


def test_batches_of_small_bodies_hold_ten_entries(
    fault_proxy: FaultProxy, make_queue: Callable[..., str], unique_name: str
) -> None:
    """Small bodies go ten to a call."""
    make_queue(unique_name)
    t = SQSTransport(endpoint_url=fault_proxy.url)
    t.send(unique_name, [b"{}"] * 23)
    assert [len(c["Entries"]) for c in fault_proxy.actions("SendMessageBatch")] == [10, 10, 3]


def test_send_partial_failure_is_retried(
    fault_proxy: FaultProxy, make_queue: Callable[..., str], unique_name: str
) -> None:
    """Entries the service failed in a batch are sent again, and each body arrives once."""
    make_queue(unique_name)
    t = SQSTransport(endpoint_url=fault_proxy.url, retry_delay=0.01)
    fault_proxy.fail_entries("SendMessageBatch", [1, 3])
    bodies = [b'{"i": %d}' % i for i in range(5)]
    t.send(unique_name, bodies)
    calls = fault_proxy.actions("SendMessageBatch")
    assert [len(c["Entries"]) for c in calls] == [5, 2]
    assert sorted(bodies) == sorted(d.body for d in receive_all(t, unique_name, 5))


def test_send_partial_failure_that_persists_raises_send_error(
    fault_proxy: FaultProxy, make_queue: Callable[..., str], unique_name: str
) -> None:
    """Entries still failing after the retries raise SendError naming their indexes; the rest
    were sent."""
    make_queue(unique_name)
    t = SQSTransport(endpoint_url=fault_proxy.url, retry_delay=0.01, send_retries=2)
    fault_proxy.fail_entries("SendMessageBatch", [0, 1], times=3)
    bodies = [b'{"i": %d}' % i for i in range(4)]
    with pytest.raises(SendError) as info:
        t.send(unique_name, bodies)
    # First call fails index 0 and 1 of [0..3]; the retries carry [0, 1] and fail both again.
    assert info.value.failed == (0, 1)
    assert len(fault_proxy.actions("SendMessageBatch")) == 3
    assert sorted(bodies[2:]) == sorted(d.body for d in receive_all(t, unique_name, 2))


def test_delete_batch_partial_failure_is_retried(
    fault_proxy: FaultProxy, make_queue: Callable[..., str], sqs_client: Any, unique_name: str
) -> None:
    """DeleteMessageBatch entries the service failed are retried, and only then counted done."""
    url = make_queue(unique_name)
    t = SQSTransport(endpoint_url=fault_proxy.url, retry_delay=0.01)
    t.send(unique_name, [b"{}"] * 4)
    got = receive_all(t, unique_name, 4)
    fault_proxy.fail_entries("DeleteMessageBatch", [0, 2])
    assert t.ack_many(got) == [None] * 4
    assert [len(c["Entries"]) for c in fault_proxy.actions("DeleteMessageBatch")] == [4, 2]
    assert visible_count(sqs_client, url) == (0, 0)


def test_delete_batch_failure_is_never_counted_done(
    transport: SQSTransport, make_queue: Callable[..., str], sqs_client: Any, unique_name: str
) -> None:
    """An entry SQS refuses (an invalid receipt handle) is reported, the others are deleted."""
    url = make_queue(unique_name)
    transport.send(unique_name, [b"{}"])
    (good,) = receive_all(transport, unique_name, 1)
    forged = Delivery(topic=unique_name, body=b"{}", message_id="forged", handle="not-a-handle")
    outcomes = transport.ack_many([good, forged])
    assert None is outcomes[0]
    assert isinstance(outcomes[1], LeaseExpired)
    assert visible_count(sqs_client, url) == (0, 0)


def test_ack_with_invalid_handle_raises_lease_expired(
    transport: SQSTransport, make_queue: Callable[..., str], unique_name: str
) -> None:
    """Acking with a receipt handle SQS does not know raises LeaseExpired."""
    make_queue(unique_name)
    forged = Delivery(topic=unique_name, body=b"{}", message_id="forged", handle="not-a-handle")
    with pytest.raises(LeaseExpired):
        transport.ack(forged)


def test_nack_delays_and_release_does_not(
    transport: SQSTransport, make_queue: Callable[..., str], unique_name: str
) -> None:
    """nack(delay) hides the message for that long; release makes it visible at once; each
    receipt counts one more receive."""
    make_queue(unique_name)
    transport.send(unique_name, [b"{}"])
    (first,) = receive_all(transport, unique_name, 1)
    transport.release(first)
    (second,) = transport.receive(unique_name, wait=0, lease=30)
    assert second.receive_count == 2
    started = time.monotonic()
    transport.nack(second, delay=2)
    assert transport.receive(unique_name, wait=1, lease=30) == []
    (third,) = wait_for(lambda: transport.receive(unique_name, wait=1, lease=30), timeout=10)
    assert time.monotonic() - started >= 1.5
    assert third.receive_count == 3


def test_extend_lease_keeps_message_hidden(
    transport: SQSTransport, make_queue: Callable[..., str], unique_name: str
) -> None:
    """extend_lease pushes the visibility timeout out."""
    make_queue(unique_name)
    transport.send(unique_name, [b"{}"])
    (d,) = transport.receive(unique_name, wait=1, lease=1)
    transport.extend_lease(d, 4)
    time.sleep(1.5)
    assert transport.receive(unique_name, wait=0, lease=30) == []


def test_extend_lease_past_twelve_hours_raises_lease_expired(
    transport: SQSTransport, unique_name: str
) -> None:
    """A delivery received 12 hours ago cannot be extended further."""
    old = Delivery(
        topic=unique_name,
        body=b"{}",
        message_id="old",
        handle="h",
        received_at=time.monotonic() - 12 * 3600,
    )
    with pytest.raises(LeaseExpired):
        transport.extend_lease(old, 30)


def test_binary_body_roundtrip(
    transport: SQSTransport, make_queue: Callable[..., str], unique_name: str
) -> None:
    """Bodies SQS cannot carry as text (invalid UTF-8, NUL) come back byte for byte."""
    make_queue(unique_name)
    bodies = [b"\xff\xfe not utf-8", b"nul \x00 inside", b'{"ok": "\xc3\xa9"}']
    transport.send(unique_name, bodies)
    got = receive_all(transport, unique_name, 3)
    assert sorted(bodies) == sorted(d.body for d in got)
    assert [dict(d.headers) for d in got] == [{}, {}, {}]


def test_fifo_group_from_event_field_and_dedup_from_event_id(
    transport: SQSTransport, make_queue: Callable[..., str], sqs_client: Any, unique_name: str
) -> None:
    """On a FIFO queue the group id is the event's channel and the dedup id its id, so a
    resent event is not delivered twice."""
    name = unique_name[:60] + ".fifo"
    url = make_queue(name)
    event = new_event("myapp.jobs.done", {"cls_type": "log", "message": "m", "severity": "info"})
    body = encode(event)
    transport.send(name, [body, body])
    response = sqs_client.receive_message(
        QueueUrl=url,
        MaxNumberOfMessages=10,
        MessageSystemAttributeNames=["MessageGroupId", "MessageDeduplicationId"],
    )
    messages = response["Messages"]
    assert len(messages) == 1
    assert messages[0]["Attributes"]["MessageGroupId"] == "myapp.jobs.done"
    assert event["header"]["id"] == messages[0]["Attributes"]["MessageDeduplicationId"]


def test_redrive_policy_names_the_dead_letter_queue(
    transport: SQSTransport, make_queue: Callable[..., str], sqs_client: Any, unique_name: str
) -> None:
    """A queue's redrive policy gives its dead-letter queue and maxReceiveCount."""
    dlq = make_queue(unique_name + "-dlq")
    arn = sqs_client.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    make_queue(
        unique_name, RedrivePolicy=f'{{"deadLetterTargetArn": "{arn}", "maxReceiveCount": "3"}}'
    )
    make_queue(unique_name + "-plain")
    assert unique_name + "-dlq" == transport.dead_letter_topic(unique_name)
    assert transport.max_receive_count(unique_name) == 3
    assert unique_name + "-plain-dead-letter" == transport.dead_letter_topic(unique_name + "-plain")
    assert None is transport.max_receive_count(unique_name + "-plain")


def test_dead_letter_keeps_reason_and_deletes_original(
    sqs_endpoint: str, make_queue: Callable[..., str], sqs_client: Any, unique_name: str
) -> None:
    """dead_letter sends the body with reason, source and attempts to <topic>-dead-letter
    (created on demand with create_queues) and deletes the original."""
    url = make_queue(unique_name)
    t = SQSTransport(endpoint_url=sqs_endpoint, create_queues=True)
    t.send(unique_name, [b"{bad"])
    (d,) = receive_all(t, unique_name, 1)
    t.dead_letter(d, "invalid event: DecodeError")
    (dead,) = t.dead_letters(unique_name)
    assert (b"{bad", "invalid event: DecodeError", 1, unique_name) == (
        dead.body,
        dead.reason,
        dead.receive_count,
        dead.topic,
    )
    assert visible_count(sqs_client, url) == (0, 0)


def test_dead_letter_without_queue_raises_topic_not_found(
    transport: SQSTransport, make_queue: Callable[..., str], sqs_client: Any, unique_name: str
) -> None:
    """Without create_queues a missing dead-letter queue raises TopicNotFound and the message
    is not deleted."""
    url = make_queue(unique_name)
    transport.send(unique_name, [b"{bad"])
    (d,) = receive_all(transport, unique_name, 1)
    with pytest.raises(TopicNotFound):
        transport.dead_letter(d, "reason")
    assert visible_count(sqs_client, url) == (0, 1)


def test_dead_letter_headers_reach_the_queue(
    sqs_endpoint: str, make_queue: Callable[..., str], sqs_client: Any, unique_name: str
) -> None:
    """The reason travels as an SQS message attribute that any SQS tool can read."""
    make_queue(unique_name)
    dlq = make_queue(unique_name + "-dead-letter")
    t = SQSTransport(endpoint_url=sqs_endpoint)
    t.send(unique_name, [b"{}"])
    (d,) = receive_all(t, unique_name, 1)
    t.dead_letter(d, "because")
    (message,) = sqs_client.receive_message(QueueUrl=dlq, MessageAttributeNames=["All"])["Messages"]
    attributes = {k: v["StringValue"] for k, v in message["MessageAttributes"].items()}
    assert {REASON_HEADER: "because", SOURCE_TOPIC_HEADER: unique_name, ATTEMPTS_HEADER: "1"} == (
        attributes
    )


def test_throttling_is_retried_then_succeeds(
    fault_proxy: FaultProxy, make_queue: Callable[..., str], unique_name: str
) -> None:
    """A throttled call is retried with backoff and succeeds once the throttling stops."""
    make_queue(unique_name)
    t = SQSTransport(endpoint_url=fault_proxy.url)
    t.queue_url(unique_name)
    fault_proxy.error("SendMessageBatch", "ThrottlingException", times=1)
    t.send(unique_name, [b"{}"])
    assert len(fault_proxy.actions("SendMessageBatch")) == 2
    assert len(receive_all(t, unique_name, 1)) == 1


def test_throttling_that_persists_raises_throttled_error(
    fault_proxy: FaultProxy, make_queue: Callable[..., str], unique_name: str
) -> None:
    """Throttling beyond the retries raises ThrottledError, chained to botocore's error."""
    make_queue(unique_name)
    config = botocore.config.Config(retries={"mode": "standard", "max_attempts": 1})
    t = SQSTransport(endpoint_url=fault_proxy.url, config=config)
    t.queue_url(unique_name)
    fault_proxy.error("SendMessageBatch", "ThrottlingException", times=5)
    with pytest.raises(ThrottledError) as info:
        t.send(unique_name, [b"{}"])
    assert isinstance(info.value.__cause__, botocore.exceptions.ClientError)
    assert len(fault_proxy.actions("SendMessageBatch")) == 2


def test_unreachable_endpoint_raises_connection_error(unique_name: str) -> None:
    """An endpoint nobody listens on raises TransportConnectionError."""
    _, t = unreachable()
    with pytest.raises(TransportConnectionError):
        t.send(unique_name, [b"{}"])


def test_no_credentials_raises_authentication_error(
    sqs_endpoint: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Any, unique_name: str
) -> None:
    """With no credentials anywhere, calls raise AuthenticationError."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    t = SQSTransport(endpoint_url=sqs_endpoint)
    with pytest.raises(AuthenticationError):
        t.send(unique_name, [b"{}"])


def test_no_secret_in_repr_errors_or_logs(
    fault_proxy: FaultProxy,
    make_queue: Callable[..., str],
    unique_name: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Canary credentials appear in no repr, no exception text and no log line, even when the
    service echoes them back in an error message."""
    caplog.set_level(logging.DEBUG)
    make_queue(unique_name)
    t = SQSTransport(
        endpoint_url=fault_proxy.url,
        region="us-east-1",
        aws_access_key_id=CANARY_KEY,
        aws_secret_access_key=CANARY_SECRET,
        retry_delay=0.01,
    )
    texts = [repr(t), str(vars(t).get("_urls"))]
    fault_proxy.error(
        "GetQueueUrl",
        "InvalidClientTokenId",
        message=f"The key {CANARY_KEY} with secret {CANARY_SECRET} is not valid",
        status=403,
    )
    with pytest.raises(AuthenticationError) as auth:
        t.send(unique_name, [b"{}"])
    texts += [str(auth.value), repr(auth.value)]
    fault_proxy.fail_entries("SendMessageBatch", [0], times=10, code=f"Bad{CANARY_KEY}")
    with pytest.raises(SendError) as partial:
        t.send(unique_name, [b"{}"])
    texts += [str(partial.value), repr(partial.value)]
    balog_logs = [r.getMessage() for r in caplog.records if r.name.startswith("balog")]
    assert [x for x in texts + balog_logs if CANARY_KEY in x or CANARY_SECRET in x] == []
    assert "The key ** with secret ** is not valid" in str(auth.value)


def test_secret_never_logged_in_normal_traffic(
    sqs_endpoint: str,
    make_queue: Callable[..., str],
    unique_name: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """With every logger at DEBUG (botocore's included), sending, receiving, failing and
    deleting never log the secret key."""
    caplog.set_level(logging.DEBUG)
    make_queue(unique_name)
    t = SQSTransport(
        endpoint_url=sqs_endpoint,
        region="us-east-1",
        aws_access_key_id=CANARY_KEY,
        aws_secret_access_key=CANARY_SECRET,
    )
    t.send(unique_name, [b"{}"])
    (d,) = receive_all(t, unique_name, 1)
    t.ack(d)
    with pytest.raises(TopicNotFound) as info:
        t.send(unique_name + "-missing", [b"{}"])
    assert CANARY_SECRET not in caplog.text
    assert CANARY_KEY not in str(info.value) + repr(t)


def raw_messages(client: Any, url: str, expected: int, timeout: float = 10.0) -> list[Any]:
    """Messages of a queue read with plain boto3, attributes included."""
    got: list[Any] = []
    deadline = time.monotonic() + timeout
    while len(got) < expected and time.monotonic() < deadline:
        got += client.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1, MessageAttributeNames=["All"]
        ).get("Messages", [])
    return got


def message_size(message: dict[str, Any]) -> int:
    """Bytes of a received message as SQS counts them against its size limit."""
    return wire_size(
        {"MessageBody": message["Body"], "MessageAttributes": message.get("MessageAttributes", {})}
    )


def test_dead_letter_of_a_body_of_exactly_the_limit_keeps_the_body(
    sqs_endpoint: str, make_queue: Callable[..., str], sqs_client: Any, unique_name: str
) -> None:
    """A body of exactly max_body_size (256 KiB) leaves no room for attributes: its dead letter
    still goes, whole, with the shortest reason possible (none), and the original is deleted."""
    url = make_queue(unique_name)
    dead_url = make_queue(unique_name + "-dead-letter")
    t = SQSTransport(endpoint_url=sqs_endpoint)
    body = (b'{"filler": "' + b"x" * 262_144)[:262_143] + b"}"
    assert len(body) == 262_144
    t.send(unique_name, [body])
    (d,) = receive_all(t, unique_name, 1)
    t.dead_letter(d, "invalid event: DecodeError: " + "why " * 500)
    (message,) = raw_messages(sqs_client, dead_url, 1)
    assert (body, {}) == (message["Body"].encode(), message.get("MessageAttributes", {}))
    assert visible_count(sqs_client, url) == (0, 0)


def test_dead_letter_just_under_the_limit_shortens_the_reason_and_drops_attributes(
    sqs_endpoint: str, make_queue: Callable[..., str], sqs_client: Any, unique_name: str
) -> None:
    """A message just under the limit with an attribute of its own dead-letters within the
    limit: its own attribute is left out, the reason shortened, the source and attempts kept."""
    make_queue(unique_name)
    dead_url = make_queue(unique_name + "-dead-letter")
    t = SQSTransport(endpoint_url=sqs_endpoint)
    body = b"y" * (262_144 - 300)
    t.send(unique_name, [body], headers={"origin": "o" * 150})
    (d,) = receive_all(t, unique_name, 1)
    t.dead_letter(d, "consumer app.handle raised ValueError: " + "r" * 2000)
    (message,) = raw_messages(sqs_client, dead_url, 1)
    attributes = {k: v["StringValue"] for k, v in message["MessageAttributes"].items()}
    assert body == message["Body"].encode()
    assert message_size(message) <= 262_144
    assert sorted(attributes) == [ATTEMPTS_HEADER, REASON_HEADER, SOURCE_TOPIC_HEADER]
    assert (unique_name, "1") == (attributes[SOURCE_TOPIC_HEADER], attributes[ATTEMPTS_HEADER])
    reason = attributes[REASON_HEADER]
    assert reason.startswith("consumer app.handle raised ValueError: rrr")
    assert reason.endswith("...")
    assert message_size(message) > 262_144 - 10  # shortened only as far as needed


def test_dead_letter_of_a_binary_body_at_the_limit_keeps_its_encoding(
    sqs_endpoint: str, make_queue: Callable[..., str], unique_name: str
) -> None:
    """A body that travels base64-encoded and fills the limit dead-letters with its encoding
    attribute, so the dead letter reads back as the same bytes."""
    make_queue(unique_name)
    make_queue(unique_name + "-dead-letter")
    t = SQSTransport(endpoint_url=sqs_endpoint, max_body_size=4096)
    body = bytes(range(256)) * 11  # 2816 bytes, 3756 base64-encoded with its attribute
    t.send(unique_name, [body])
    (d,) = receive_all(t, unique_name, 1)
    t.dead_letter(d, "invalid event: DecodeError: " + "z" * 2000)
    (letter,) = t.dead_letters(unique_name)
    assert body == letter.body
    assert letter.reason.startswith("invalid event: DecodeError: zzz")


def test_fifo_deliveries_carry_their_message_group(
    transport: SQSTransport, make_queue: Callable[..., str], unique_name: str
) -> None:
    """On a FIFO queue each delivery's group is its MessageGroupId (the event's channel), so
    the engine never runs two of one group at once; a standard queue's deliveries have none."""
    name = unique_name[:60] + ".fifo"
    make_queue(name)
    make_queue(unique_name)
    bodies = [
        encode(new_event(channel, {"cls_type": "n", "n": n}))
        for n, channel in enumerate(["orders.eu", "orders.us", "orders.eu"])
    ]
    transport.send(name, bodies)
    transport.send(unique_name, bodies[:1])
    got = receive_all(transport, name, 3)
    channels = [loads(d.body)["header"]["channel"] for d in got]
    assert sorted(channels) == sorted(str(d.group) for d in got)
    assert sorted(channels) == ["orders.eu", "orders.eu", "orders.us"]
    assert [d.group for d in receive_all(transport, unique_name, 1)] == [None]


@pytest.mark.parametrize(
    ("encoding", "words"),
    [("base64", "not base64"), ("gzip", "unknown balog-encoding 'gzip'")],
)
def test_body_whose_encoding_cannot_be_read_is_refused_with_the_text_that_arrived(
    transport: SQSTransport,
    make_queue: Callable[..., str],
    sqs_client: Any,
    unique_name: str,
    encoding: str,
    words: str,
) -> None:
    """A message marked balog-encoding that balog cannot decode comes back refused, holding
    the text as it arrived, and its dead letter keeps that text."""
    url = make_queue(unique_name)
    make_queue(unique_name + "-dead-letter")
    sqs_client.send_message(
        QueueUrl=url,
        MessageBody="this is not base64!",
        MessageAttributes={"balog-encoding": {"DataType": "String", "StringValue": encoding}},
    )
    (d,) = receive_all(transport, unique_name, 1)
    assert d.body == b"this is not base64!"
    assert words in str(d.refused)
    transport.dead_letter(d, d.refused)
    (letter,) = transport.dead_letters(unique_name)
    assert (b"this is not base64!", d.refused) == (letter.body, letter.reason)


def test_credentials_in_the_endpoint_url_are_hidden(unique_name: str) -> None:
    """An endpoint URL carrying a user and password shows neither in the repr nor in errors."""
    url, t = unreachable(f"proxyuser:{URL_SECRET}@")
    with pytest.raises(TransportConnectionError) as info:
        t.send(unique_name, [b"{}"])
    assert f"endpoint_url={url.replace(URL_SECRET, '**')!r}" in repr(t)
    assert [x for x in (repr(t), str(info.value)) if URL_SECRET in x] == []


@pytest.mark.parametrize("url", [f"http://u:{CANARY_SECRET}@127.0.0.1:1", "ftp://127.0.0.1:1"])
def test_unusable_endpoint_url_is_a_configuration_error_that_hides_the_password(url: str) -> None:
    """An endpoint URL botocore cannot use (a password with an unencoded /, a scheme that is
    not http) is refused when the transport is built, without the password."""
    with pytest.raises(ConfigurationError) as info:
        SQSTransport(endpoint_url=url, region="us-east-1")
    assert CANARY_SECRET not in str(info.value)
    assert "endpoint_url" in str(info.value)
