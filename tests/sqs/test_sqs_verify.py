"""SQSTransport.verify() against the moto server over HTTP: what an engine learns at start-up.

A queue without a dead-letter place, refused credentials and an unreachable endpoint are found
when the engine starts, not at the first bad message.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sqs_helpers import unreachable

from balog.exceptions import AuthenticationError, TopicNotFound, TransportConnectionError
from balog.transports.sqs import SQSTransport

CANARY_SECRET = "canary/Wrong+Secret0123456789abcdefghijkl"


def queue_exists(client: Any, name: str) -> bool:
    try:
        client.get_queue_url(QueueName=name)
    except client.exceptions.QueueDoesNotExist:
        return False
    return True


def test_queue_without_dead_letter_queue_is_fatal_at_start_up(
    transport: SQSTransport, make_queue: Callable[..., str], unique_name: str
) -> None:
    """With create_queues off, a queue that has neither <queue>-dead-letter nor a redrive
    policy is a fatal TopicNotFound from verify(), naming the queue and what to change."""
    make_queue(unique_name)
    with pytest.raises(TopicNotFound) as info:
        transport.verify(unique_name)
    message = str(info.value)
    assert info.value.fatal
    assert f"{unique_name + '-dead-letter'!r}" in message
    assert "create_queues=True" in message
    assert "redrive policy" in message


def test_missing_queue_is_fatal_at_start_up(transport: SQSTransport, unique_name: str) -> None:
    """A queue that does not exist is a fatal TopicNotFound from verify()."""
    with pytest.raises(TopicNotFound) as info:
        transport.verify(unique_name)
    assert info.value.fatal
    assert "create_queues=True" in str(info.value)


def test_existing_queue_and_dead_letter_queue_verify(
    transport: SQSTransport, make_queue: Callable[..., str], unique_name: str
) -> None:
    """A queue with its <queue>-dead-letter queue verifies."""
    make_queue(unique_name)
    make_queue(unique_name + "-dead-letter")
    transport.verify(unique_name)


@pytest.mark.parametrize("fifo", [False, True], ids=["standard", "fifo"])
def test_create_queues_creates_the_queue_and_its_dead_letter_queue(
    sqs_endpoint: str, sqs_client: Any, unique_name: str, fifo: bool
) -> None:
    """With create_queues, verify() creates the queue and its dead-letter queue (a FIFO one
    for a FIFO queue), so the first bad message has somewhere to go."""
    name = unique_name[:60] + (".fifo" if fifo else "")
    dead = unique_name[:60] + ("-dead-letter.fifo" if fifo else "-dead-letter")
    with SQSTransport(endpoint_url=sqs_endpoint, create_queues=True) as t:
        t.verify(name)
    assert [queue_exists(sqs_client, n) for n in (name, dead)] == [True, True]
    url = sqs_client.get_queue_url(QueueName=dead)["QueueUrl"]
    attributes = sqs_client.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])
    assert fifo == (attributes["Attributes"].get("FifoQueue") == "true")


def _with_redrive_policy(
    sqs_client: Any, make_queue: Callable[..., str], name: str, dead: str
) -> str:
    dead_url = make_queue(dead)
    arn = sqs_client.get_queue_attributes(QueueUrl=dead_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    make_queue(name, RedrivePolicy=f'{{"deadLetterTargetArn": "{arn}", "maxReceiveCount": "4"}}')
    return dead_url


def test_redrive_policy_is_a_dead_letter_place(
    transport: SQSTransport, make_queue: Callable[..., str], sqs_client: Any, unique_name: str
) -> None:
    """A queue whose redrive policy names an existing queue verifies without any
    <queue>-dead-letter queue, and none is created."""
    _with_redrive_policy(sqs_client, make_queue, unique_name, unique_name + "-dlq")
    transport.verify(unique_name)
    assert not queue_exists(sqs_client, unique_name + "-dead-letter")


def test_redrive_policy_naming_a_deleted_queue_is_fatal(
    transport: SQSTransport, make_queue: Callable[..., str], sqs_client: Any, unique_name: str
) -> None:
    """A redrive policy whose dead-letter queue was deleted is a fatal TopicNotFound naming
    that queue and the policy."""
    dead_url = _with_redrive_policy(sqs_client, make_queue, unique_name, unique_name + "-dlq")
    sqs_client.delete_queue(QueueUrl=dead_url)
    with pytest.raises(TopicNotFound) as info:
        transport.verify(unique_name)
    assert f"{unique_name + '-dlq'!r}" in str(info.value)
    assert "redrive policy" in str(info.value)


def test_wrong_secret_is_fatal_at_start_up(
    sqs_endpoint: str, aws_auth: tuple[str, str], unique_name: str
) -> None:
    """With SQS checking signatures, a wrong secret key is a fatal AuthenticationError from
    verify(), naming neither the secret nor the key id; the right secret verifies."""
    key_id, secret = aws_auth
    with SQSTransport(
        endpoint_url=sqs_endpoint,
        region="us-east-1",
        aws_access_key_id=key_id,
        aws_secret_access_key=secret,
        create_queues=True,
    ) as right:
        right.verify(unique_name)
    with (
        SQSTransport(
            endpoint_url=sqs_endpoint,
            region="us-east-1",
            aws_access_key_id=key_id,
            aws_secret_access_key=CANARY_SECRET,
        ) as wrong,
        pytest.raises(AuthenticationError) as info,
    ):
        wrong.verify(unique_name)
    assert info.value.fatal
    assert "SignatureDoesNotMatch" in str(info.value)
    assert [s for s in (CANARY_SECRET, key_id) if s in str(info.value) + repr(wrong)] == []


def test_unknown_access_key_is_fatal_at_start_up(
    sqs_endpoint: str, aws_auth: tuple[str, str], unique_name: str
) -> None:
    """An access key id SQS does not know is a fatal AuthenticationError from verify()."""
    with (
        SQSTransport(
            endpoint_url=sqs_endpoint,
            region="us-east-1",
            aws_access_key_id="AKIAUNKNOWNKEY000000",
            aws_secret_access_key=CANARY_SECRET,
        ) as t,
        pytest.raises(AuthenticationError) as info,
    ):
        t.verify(unique_name)
    assert "InvalidClientTokenId" in str(info.value)
    assert "AKIAUNKNOWNKEY000000" not in str(info.value)


def test_unreachable_endpoint_is_a_connection_error_at_start_up(unique_name: str) -> None:
    """An endpoint nobody listens on is a TransportConnectionError from verify(), which is not
    fatal: the engine retries it."""
    _, t = unreachable()
    with t, pytest.raises(TransportConnectionError) as info:
        t.verify(unique_name)
    assert not info.value.fatal
