"""Helpers of the kombu tests: event bodies, polling, and what the brokers say about our queues."""

from __future__ import annotations

import functools
import os
import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from balog.events import encode, new_event
from balog.transports.kombu import KombuTransport

METRICS = {"cls_type": "metrics", "values": [{"name": "total", "value": 1}]}
LOG = {"cls_type": "log", "severity": "info", "message": "hello"}


def wait_for(condition: Callable[[], bool], timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def body(payload: dict[str, Any], schema: str | None = None, ident: str | None = None) -> bytes:
    event = new_event("app.done", payload, id=ident)
    if schema is not None:
        event["schema"] = schema
    return encode(event)


def named(url: str, name: str) -> dict[str, Any]:
    """Transport options that name every connection, so a test can cut only its own."""
    if url.startswith("amqp"):
        return {"client_properties": {"connection_name": name}}
    return {"client_name": name}


def require_rabbitmqctl() -> None:
    """Skip (outside CI) or fail (under CI) when rabbitmqctl cannot reach the broker."""
    if _rabbitmqctl_works():
        return
    message = "rabbitmqctl cannot reach the broker"
    if os.environ.get("CI"):
        pytest.fail(message + " (CI must run every backend test)")
    pytest.skip(message)


@functools.cache
def _rabbitmqctl_works() -> bool:
    try:
        done = subprocess.run(
            ["rabbitmqctl", "status"], capture_output=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        if os.environ.get("CI"):
            raise
        return False
    return done.returncode == 0


def unacked(url: str, topic: str, prefix: str) -> int:
    if url.startswith("amqp"):
        listed = subprocess.run(
            [
                "rabbitmqctl",
                "list_queues",
                "-q",
                "--no-table-headers",
                "name",
                "messages_unacknowledged",
            ],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        for line in listed.stdout.splitlines():
            name, _, count = line.partition("\t")
            if name == topic:
                return int(count)
        return -1
    import redis

    client = redis.Redis.from_url(url)
    try:
        return int(client.zcard(prefix + "unacked_index"))
    finally:
        client.close()


def receive_one(transport: KombuTransport, topic: str) -> list[Any]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        got = transport.receive(topic, wait=0.5)
        if got:
            return got
    return []


def rabbitmq_connection_timeouts(name: str) -> list[int]:
    """The heartbeat timeout RabbitMQ negotiated with each open connection named ``name``."""
    listed = subprocess.run(
        [
            "rabbitmqctl",
            "list_connections",
            "-q",
            "--no-table-headers",
            "timeout",
            "client_properties",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return [int(line.split("\t")[0]) for line in listed.stdout.splitlines() if name in line]


def receive_some(
    transport: KombuTransport, topic: str, count: int, timeout: float = 10.0
) -> list[Any]:
    """Deliveries from ``topic`` until ``count`` arrived or ``timeout`` seconds passed."""
    got: list[Any] = []
    deadline = time.monotonic() + timeout
    while len(got) < count and time.monotonic() < deadline:
        got += transport.receive(topic, max_messages=count - len(got), wait=0.5)
    return got


def run_in_thread(engine: Any) -> tuple[threading.Thread, list[BaseException]]:
    """Start ``engine.run()`` in a thread; the list receives what it raised, if anything."""
    raised: list[BaseException] = []

    def target() -> None:
        try:
            engine.run()
        except BaseException as exc:  # handed to the test
            raised.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, raised
