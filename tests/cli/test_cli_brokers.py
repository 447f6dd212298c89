"""``balog consume`` against the real brokers: what a wrong password, a dead port or a queue
someone else declared does to the command, and options that only a real broker checks."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import RunBalog, StartBalog, error_line, wait_for, write_module

from balog.events import encode, new_event
from balog.transports.base import DEAD_LETTER_SUFFIX

STARTUP_DEADLINE = 120.0
"""Seconds a consume that cannot start may take to give up (its start-up retry is bounded)."""

WORKER = """
import os

from balog.consumers import consumer_config


@consumer_config(topic=os.environ["TOPIC"], cls_type="job")
def work(event):
    fd = os.open(os.environ["LEDGER"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (event["header"]["id"] + "\\n").encode())
    finally:
        os.close(fd)
"""


def dead_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@pytest.fixture
def worker(packages: Path, tmp_path: Path, unique_name: str) -> dict[str, str]:
    """The environment of a consumer package 'brokerworker' on a topic of this test alone."""
    write_module(packages, "brokerworker", WORKER)
    return {"TOPIC": unique_name, "LEDGER": str(tmp_path / "ledger.txt")}


@pytest.fixture
def amqp_queues(rabbitmq_url: str, unique_name: str) -> Iterator[str]:
    """The test's queue name; the queue and its dead-letter queue are deleted afterwards."""
    yield unique_name
    import kombu

    with kombu.Connection(rabbitmq_url) as connection:
        for name in (unique_name, unique_name + DEAD_LETTER_SUFFIX):
            channel = connection.channel()
            try:
                channel.queue_delete(name)
            finally:
                channel.close()


def declare(url: str, name: str, arguments: dict[str, object]) -> None:
    """Declare ``name`` as someone else would: durable, on the default exchange."""
    import kombu

    with kombu.Connection(url) as connection:
        queue = kombu.Queue(
            name,
            exchange=kombu.Exchange(""),
            routing_key=name,
            durable=True,
            queue_arguments=arguments,
        )
        queue(connection.default_channel).declare()


def test_wrong_rabbitmq_password_exits_1_naming_the_url(
    start_balog: StartBalog, worker: dict[str, str], amqp_queues: str
) -> None:
    """RabbitMQ's ACCESS_REFUSED ends consume with exit 1 and one line that says to check the
    password in --url, without the password; it is not retried for ever."""
    url = "amqp://guest:WRONGCANARY@127.0.0.1:5672//"
    consumer = start_balog("consume", "brokerworker", "--engine", "kombu", "--url", url, env=worker)
    assert consumer.wait_exit(STARTUP_DEADLINE) == 1
    line = error_line(consumer.stderr)
    assert line.endswith("; check the user name and password in --url")
    assert "WRONGCANARY" not in consumer.stderr


@pytest.mark.parametrize(
    ("engine", "url"),
    [("kombu", "amqp://guest:guest@127.0.0.1:{port}//"), ("redis", "redis://127.0.0.1:{port}/0")],
)
def test_port_nothing_listens_on_exits_1_naming_the_url(
    start_balog: StartBalog, worker: dict[str, str], engine: str, url: str
) -> None:
    """A broker that stays unreachable through the start-up retry ends consume with exit 1 and
    one line pointing at the host and port of the URL, and where it was set."""
    # A short start-up retry (the default is 10 s) keeps the test quick; the path is the same.
    env = {
        **worker,
        "BALOG_URL": url.format(port=dead_port()),
        "BALOG_OPTION_STARTUP_TIMEOUT": "2",
    }
    consumer = start_balog("consume", "brokerworker", "--engine", engine, env=env)
    assert consumer.wait_exit(STARTUP_DEADLINE) == 1
    line = error_line(consumer.stderr)
    assert line.endswith("; check the host and port in BALOG_URL, and that the backend is running")


def test_queue_declared_with_other_arguments_exits_1_naming_queue_arguments(
    start_balog: StartBalog, worker: dict[str, str], rabbitmq_url: str, amqp_queues: str
) -> None:
    """A queue declared beforehand with x-max-length 10, consumed with -o queue_arguments asking
    for 20, is RabbitMQ's 406: consume exits 1 with one line naming queue_arguments and -o."""
    declare(rabbitmq_url, amqp_queues, {"x-max-length": 10})
    consumer = start_balog(
        "consume", "brokerworker", "--engine", "kombu", "--url", rabbitmq_url,
        "-o", 'queue_arguments={"x-max-length": 20}', env=worker,
    )  # fmt: skip
    assert consumer.wait_exit(STARTUP_DEADLINE) == 1
    line = error_line(consumer.stderr)
    assert line.endswith(
        "; make queue_arguments (-o queue_arguments) match the existing queue, or delete it"
    )


def test_json_queue_arguments_make_a_quorum_queue(
    run_balog: RunBalog,
    start_balog: StartBalog,
    worker: dict[str, str],
    rabbitmq_url: str,
    amqp_queues: str,
) -> None:
    """-o queue_arguments={"x-queue-type": "quorum"} reaches RabbitMQ as a mapping: consume
    declares a quorum queue, send delivers to it, the consumer runs, SIGTERM exits 0."""
    options = ["--engine", "kombu", "--url", rabbitmq_url]
    options += ["-o", 'queue_arguments={"x-queue-type": "quorum"}']
    consumer = start_balog("consume", "brokerworker", *options, "-o", "wait=0.2", env=worker)
    consumer.wait_for_line("engine running")
    event = new_event("tests.cli", {"cls_type": "job"})
    sent = run_balog("send", amqp_queues, *options, input=encode(event).decode() + "\n")
    assert sent.returncode == 0, sent.stderr
    ledger = Path(worker["LEDGER"])
    wait_for(lambda: ledger.exists() and ledger.read_text() != "", what="the event")
    assert [event["header"]["id"]] == ledger.read_text().split()
    assert consumer.stop() == 0
    # Declaring it again as a quorum queue is accepted only if that is what it is.
    declare(rabbitmq_url, amqp_queues, {"x-queue-type": "quorum"})


@pytest.mark.parametrize(
    ("args", "shown"),
    [
        (
            ["--engine", "redis", "--url", "redis://127.0.0.1:6379/0?password=QUERYCANARY"],
            "url redis://127.0.0.1:6379/0?password=**",
        ),
        (
            [
                "--engine", "kombu", "--url", "amqp://guest:guest@127.0.0.1:5672//",
                "-o", 'transport_options={"client_properties": {"password": "NESTEDCANARY"}}',
            ],
            'options transport_options={"client_properties": {"password": "**"}}',
        ),
    ],
    ids=["redis-query-password", "nested-option"],
)  # fmt: skip
def test_startup_line_masks_every_secret(
    start_balog: StartBalog,
    worker: dict[str, str],
    redis_url: str,
    amqp_queues: str,
    args: list[str],
    shown: str,
) -> None:
    """consume's start-up line shows the URL and the options with a Redis ?password= and nested
    secret options masked; no secret is anywhere on stderr."""
    consumer = start_balog("consume", "brokerworker", "-o", "wait=0.2", *args, env=worker)
    line = consumer.wait_for_line("balog: consuming")
    assert shown in line
    consumer.stop()
    assert "CANARY" not in consumer.stderr
