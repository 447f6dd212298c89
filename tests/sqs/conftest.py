"""Fixtures for the SQS tests: boto3 against the moto server, and a fault-injecting proxy."""

from __future__ import annotations

import json
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqs_helpers import FaultProxy

from balog.transports.sqs import SQSTransport


@pytest.fixture
def sqs_client(sqs_endpoint: str) -> Any:
    """A plain boto3 SQS client on the moto server (for setting up and inspecting queues)."""
    import boto3

    return boto3.client("sqs", endpoint_url=sqs_endpoint, region_name="us-east-1")


@pytest.fixture
def make_queue(sqs_client: Any) -> Callable[..., str]:
    """Create a queue with boto3 (attributes as keywords); return its URL."""

    def make(name: str, **attributes: str) -> str:
        if name.endswith(".fifo"):
            attributes.setdefault("FifoQueue", "true")
        url: str = sqs_client.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
        return url

    return make


@pytest.fixture
def transport(sqs_endpoint: str) -> Iterator[SQSTransport]:
    """An SQSTransport on the moto server with fast retries."""
    t = SQSTransport(endpoint_url=sqs_endpoint, region="us-east-1", retry_delay=0.01)
    yield t
    t.close()


@pytest.fixture
def fault_proxy(sqs_endpoint: str) -> Iterator[FaultProxy]:
    """A fault-injecting proxy in front of the (reset) moto server."""
    proxy = FaultProxy(sqs_endpoint)
    yield proxy
    proxy.close()


def _moto_auth(endpoint: str, count: str) -> None:
    request = urllib.request.Request(
        f"{endpoint}/moto-api/reset-auth",
        data=count.encode(),
        method="POST",
        headers={"Content-Type": "text/plain"},
    )
    urllib.request.urlopen(request).close()


@pytest.fixture
def aws_auth(sqs_endpoint: str) -> Iterator[tuple[str, str]]:
    """An IAM user allowed every SQS action, and moto checking every request's signature and
    permissions from now on (as AWS does); moto trusts every request again afterwards."""
    import boto3

    iam = boto3.client("iam", endpoint_url=sqs_endpoint, region_name="us-east-1")
    name = f"balog-{uuid.uuid4().hex[:8]}"
    iam.create_user(UserName=name)
    iam.put_user_policy(
        UserName=name,
        PolicyName="sqs",
        PolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": "sqs:*", "Resource": "*"}],
            }
        ),
    )
    key = iam.create_access_key(UserName=name)["AccessKey"]
    _moto_auth(sqs_endpoint, "0")
    try:
        yield key["AccessKeyId"], key["SecretAccessKey"]
    finally:
        _moto_auth(sqs_endpoint, "inf")
