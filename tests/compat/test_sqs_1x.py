"""balog 1.x's tests/unit/engines/test_sqs.py, ported to pytest against a real SQS API (moto).

balog 1.x built ``SQSEngine(hub, region, aws_access_key_id, aws_secret_access_key,
polling_period=1, num_messages=10, consumer_operator=None, default_event_handler=None)``, with
the first four positional, and tested it with a mocked boto connection. These tests build it as
balog 1.x code did and check what it did: receive from the operator's queue, hand the body to
the consumers, delete the message.
"""

from __future__ import annotations

from typing import Any

import boto3
import pytest

from balog.consumers import Consumer, ConsumerHub, DefaultConsumerOperator
from balog.consumers.sqs import SQSEngine

from . import balog1x


class QueueOperator(DefaultConsumerOperator):
    """Gives each consumer a queue of this test (SQS queue names take no dots)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def get_topic(self, consumer: Consumer) -> str:  # type: ignore[override]
        return f"{self.prefix}-{consumer.topic.replace('.', '-')}"

    def process_event(self, consumer: Consumer, event: dict[str, Any]) -> Any:  # type: ignore[override]
        self.calls.append((consumer.func.__name__, event))
        return None


@pytest.fixture
def sqs(sqs_endpoint: str) -> Any:
    return boto3.client("sqs", endpoint_url=sqs_endpoint, region_name="us-east-1")


def _engine_1x(hub: ConsumerHub, operator: QueueOperator, endpoint: str) -> SQSEngine:
    """The engine built as balog 1.x code built it, pointed at the test's SQS endpoint."""
    return SQSEngine(
        hub, "us-east-1", "AK123", "secret", consumer_operator=operator, endpoint_url=endpoint
    )


def _queues(sqs: Any, operator: QueueOperator, hub: ConsumerHub) -> dict[str, str]:
    return {
        topic: sqs.create_queue(QueueName=topic)["QueueUrl"] for topic in hub.by_topic(operator)
    }


def test_positional_arguments(
    hub: ConsumerHub, sqs_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQSEngine(hub, region, aws_access_key_id, aws_secret_access_key) as balog 1.x took it."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", sqs_endpoint)
    engine = SQSEngine(hub, "us-east-1", "AK123", "secret")  # type: ignore[misc]
    try:
        assert isinstance(engine.consumer_operator, DefaultConsumerOperator)
        assert "secret" not in repr(engine)
    finally:
        engine.close()


def test_polling_period_and_num_messages(hub: ConsumerHub, sqs_endpoint: str) -> None:
    """polling_period (seconds of long polling) and num_messages (messages per receive) are
    today's wait and batch_size."""
    engine = SQSEngine(
        hub,
        "us-east-1",
        "AK123",
        "secret",
        polling_period=1,  # type: ignore[call-arg]
        num_messages=10,
        endpoint_url=sqs_endpoint,
    )
    try:
        assert (engine.wait, engine.batch_size) == (1, 10)
    finally:
        engine.close()


def test_messages(hub: ConsumerHub, sqs: Any, sqs_endpoint: str, unique_name: str) -> None:
    """The engine receives from each consumer's queue (as messages(topic) did) and hands the
    body to the consumers of that queue."""
    operator = QueueOperator(unique_name)
    urls = _queues(sqs, operator, hub)
    sqs.send_message(
        QueueUrl=urls[f"{unique_name}-spam-eggs"],
        MessageBody=balog1x.body("tests.unit", {"cls_type": "eggs"}).decode(),
    )
    engine = _engine_1x(hub, operator, sqs_endpoint)
    try:
        assert engine.drain(raise_errors=True, timeout=10) == 1
    finally:
        engine.close()
    assert [(name, e["payload"]["cls_type"]) for name, e in operator.calls] == [
        ("consumer_b", "eggs")
    ]


def test_on_message(hub: ConsumerHub, sqs: Any, sqs_endpoint: str, unique_name: str) -> None:
    """balog 1.x's message.json is processed, then its message deleted from the queue."""
    operator = QueueOperator(unique_name)
    urls = _queues(sqs, operator, hub)
    url = urls[f"{unique_name}-spam-eggs"]
    sqs.send_message(QueueUrl=url, MessageBody=balog1x.MESSAGE_JSON.decode())
    engine = _engine_1x(hub, operator, sqs_endpoint)
    try:
        assert engine.drain(raise_errors=True, timeout=10) == 1
    finally:
        engine.close()
    assert [e["header"]["id"] for _, e in operator.calls] == ["LGk37Fo3xLLVx9GrfnyTuvBd"]
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert (
        attributes["ApproximateNumberOfMessages"],
        attributes["ApproximateNumberOfMessagesNotVisible"],
    ) == ("0", "0")


def test_keywords_as_today(hub: ConsumerHub, sqs: Any, sqs_endpoint: str, unique_name: str) -> None:
    """The seed README's keyword form (hub=, region=, credentials=, consumer_operator=) works
    today, on the same queues."""
    operator = QueueOperator(unique_name)
    urls = _queues(sqs, operator, hub)
    sqs.send_message(
        QueueUrl=urls[f"{unique_name}-5566"],
        MessageBody=balog1x.body("tests.unit", {"cls_type": "88"}).decode(),
    )
    engine = SQSEngine(
        hub=hub,
        region="us-east-1",
        aws_access_key_id="AK123",
        aws_secret_access_key="secret",
        consumer_operator=operator,
        endpoint_url=sqs_endpoint,
    )
    try:
        assert engine.drain(raise_errors=True, timeout=10) == 1
    finally:
        engine.close()
    assert sorted(name for name, _ in operator.calls) == ["consumer_d", "consumer_e"]
