"""Fixtures shared by every test module: real services, and a clean balog state per test.

Backend tests talk to the real services on loopback. Outside CI a missing service skips its
tests; under CI (``CI`` set) it fails them, so CI can never pass by skipping.
"""

from __future__ import annotations

import os
import socket
import urllib.request
import uuid
from collections.abc import Iterator

import pytest

import balog.testing

RABBITMQ_URL = os.environ.get("BALOG_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
REDIS_URL = os.environ.get("BALOG_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
POSTGRES_DSN = os.environ.get(
    "BALOG_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test"
)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--slow", action="store_true", help="run the full-length fault loops")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Tests that restart a shared broker run last, so no other test meets a broker that is
    # still coming back (quorum queues refuse publishes until their leader is elected).
    items.sort(key=lambda item: "disruptive" in item.keywords)
    if config.getoption("--slow"):
        return
    skip = pytest.mark.skip(reason="full-length loop; run with --slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


def port_open(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def require_service(name: str, host: str, port: int) -> None:
    """Skip (outside CI) or fail (under CI) when a service is not listening."""
    if port_open(host, port):
        return
    message = f"{name} is not reachable at {host}:{port}"
    if os.environ.get("CI"):
        pytest.fail(message + " (CI must run every backend test)")
    pytest.skip(message)


@pytest.fixture(autouse=True)
def _clean_balog_state() -> Iterator[None]:
    """Every test starts and ends with balog's process-wide state as at import."""
    balog.testing.reset()
    yield
    balog.testing.reset()


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> str:
    """A queue/topic name no other test uses: letters, digits and hyphens only (SQS-safe)."""
    base = "".join(c if c.isalnum() else "-" for c in request.node.name)[:40].strip("-")
    return f"t-{base}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session")
def rabbitmq_url() -> str:
    require_service("RabbitMQ", "127.0.0.1", 5672)
    return RABBITMQ_URL


@pytest.fixture(scope="session")
def redis_url() -> str:
    require_service("Redis", "127.0.0.1", 6379)
    return REDIS_URL


@pytest.fixture(scope="session")
def postgres_dsn() -> str:
    require_service("PostgreSQL", "127.0.0.1", 5432)
    return POSTGRES_DSN


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """A moto server (real HTTP, real boto3 on the client side) on a free loopback port."""
    try:
        from moto.server import ThreadedMotoServer
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("moto[server] is not installed (CI must run the SQS tests)")
        pytest.skip("moto[server] is not installed")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def sqs_endpoint(moto_server: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The moto server's URL, reset before the test, with fake AWS credentials in the env."""
    urllib.request.urlopen(urllib.request.Request(f"{moto_server}/moto-api/reset", method="POST"))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    return moto_server
