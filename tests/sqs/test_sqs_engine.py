"""SQSEngine against the moto server over HTTP: at-least-once, retries, dead letters, leases,
clean stops, old events, and no secret in its repr or logs."""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqs_helpers import FaultProxy, visible_count, wait_for

from balog.consumers import Consumer, ConsumerHub
from balog.consumers.sqs import SQSEngine as LegacySQSEngine
from balog.engines import Backoff, create_engine
from balog.engines.sqs import SQSEngine
from balog.events import encode, new_event
from balog.exceptions import ConfigurationError
from balog.transports.base import ATTEMPTS_HEADER, REASON_HEADER, SOURCE_TOPIC_HEADER
from balog.transports.sqs import SQSTransport

METRICS = {"cls_type": "metrics", "values": [{"name": "total", "value": 1}]}


def event_body(n: int = 0) -> bytes:
    return encode(new_event("app.done", {**METRICS, "values": [{"name": "n", "value": n}]}))


def hub_for(topic: str, func: Callable[[dict[str, Any]], Any]) -> ConsumerHub:
    return ConsumerHub([Consumer(func, topic, cls_type="metrics", version="<1.0", name="c")])


def engine_for(endpoint: str, hub: ConsumerHub, **options: Any) -> SQSEngine:
    options.setdefault("wait", 1)
    options.setdefault("backoff", Backoff(base=1.0, factor=2.0, jitter=0.0))
    return SQSEngine(hub, endpoint_url=endpoint, region="us-east-1", **options)


@contextmanager
def running(engine: SQSEngine) -> Iterator[threading.Thread]:
    thread = threading.Thread(target=engine.run, daemon=True)
    thread.start()
    try:
        yield thread
    finally:
        engine.stop()
        thread.join(15)
        assert not thread.is_alive()
        engine.close()


def dead_letter_messages(client: Any, url: str, expected: int) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    deadline = time.monotonic() + 10
    while len(found) < expected and time.monotonic() < deadline:
        found += client.receive_message(
            QueueUrl=url,
            MaxNumberOfMessages=10,
            MessageAttributeNames=["All"],
            VisibilityTimeout=30,
            WaitTimeSeconds=1,
        ).get("Messages", [])
    return found


def attributes_of(message: dict[str, Any]) -> dict[str, str]:
    return {k: v["StringValue"] for k, v in message.get("MessageAttributes", {}).items()}


def test_consumers_sqs_reexports_the_engine() -> None:
    """``balog.consumers.sqs.SQSEngine`` is ``balog.engines.sqs.SQSEngine``."""
    assert LegacySQSEngine is SQSEngine


def test_engine_by_name_with_options(sqs_endpoint: str, unique_name: str) -> None:
    """create_engine('sqs', ...) builds an SQSEngine with its options."""
    hub = hub_for(unique_name, lambda e: None)
    engine = create_engine(
        "sqs", hub=hub, endpoint_url=sqs_endpoint, wait=5, batch_size=4, lease=10, concurrency=2
    )
    assert isinstance(engine, SQSEngine)
    assert (engine.wait, engine.batch_size, engine.lease, engine.concurrency) == (5, 4, 10, 2)


@pytest.mark.parametrize(
    "options", [{"wait": 21}, {"batch_size": 11}, {"batch_size": 0}, {"lease": 43201}]
)
def test_options_beyond_sqs_limits_are_refused(sqs_endpoint: str, options: dict[str, Any]) -> None:
    """wait over 20 s, more than 10 messages per receive or a lease over 12 h are refused."""
    with pytest.raises(ConfigurationError):
        SQSEngine(hub_for("q", lambda e: None), endpoint_url=sqs_endpoint, **options)


def test_delete_only_after_success(
    sqs_endpoint: str, make_queue: Callable[..., str], sqs_client: Any, unique_name: str
) -> None:
    """While the consumer runs the message is in flight, not deleted; once it returns the
    message is deleted."""
    url = make_queue(unique_name)
    make_queue(unique_name + "-dead-letter")  # the engine checks it at start-up
    started, finish = threading.Event(), threading.Event()
    seen: list[dict[str, Any]] = []

    def consume(event: dict[str, Any]) -> None:
        seen.append(event)
        started.set()
        assert finish.wait(10)

    engine = engine_for(sqs_endpoint, hub_for(unique_name, consume))
    SQSTransport(endpoint_url=sqs_endpoint).send(unique_name, [event_body()])
    with running(engine):
        assert started.wait(10)
        assert visible_count(sqs_client, url) == (0, 1)
        finish.set()
        wait_for(lambda: visible_count(sqs_client, url) == (0, 0))
        wait_for(lambda: engine.stats()[unique_name].processed == 1)
    assert len(seen) == 1


def test_failing_consumer_retried_with_growing_delay_then_dead_lettered(
    sqs_endpoint: str, make_queue: Callable[..., str], sqs_client: Any, unique_name: str
) -> None:
    """A consumer that always fails sees the message max_attempts times, each wait longer than
    the last, then it goes to the dead-letter queue with the reason in message attributes."""
    url = make_queue(unique_name)
    dlq = make_queue(unique_name + "-dead-letter")
    attempts: list[float] = []

    def consume(event: dict[str, Any]) -> None:
        attempts.append(time.monotonic())
        raise ValueError("boom")

    engine = engine_for(sqs_endpoint, hub_for(unique_name, consume), max_attempts=3)
    body = event_body()
    SQSTransport(endpoint_url=sqs_endpoint).send(unique_name, [body])
    with running(engine):
        (dead,) = dead_letter_messages(sqs_client, dlq, 1)
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    assert len(attempts) == 3
    assert gaps[0] >= 0.9
    assert gaps[1] >= 1.9
    assert gaps[1] > gaps[0]
    attributes = attributes_of(dead)
    assert attributes[SOURCE_TOPIC_HEADER] == unique_name
    assert attributes[ATTEMPTS_HEADER] == "3"
    assert "raised ValueError: boom" in attributes[REASON_HEADER]
    assert dead["Body"].encode() == body
    assert visible_count(sqs_client, url) == (0, 0)
    assert engine.stats()[unique_name].dead_lettered == 1


def test_redrive_policy_max_receive_count_wins(
    sqs_endpoint: str, make_queue: Callable[..., str], sqs_client: Any, unique_name: str
) -> None:
    """With a redrive policy allowing 2 receives, the message is dead-lettered by balog, with
    its reason, to the policy's queue on the second failure, although max_attempts is 5."""
    dlq = make_queue(unique_name + "-dlq")
    arn = sqs_client.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    make_queue(
        unique_name, RedrivePolicy=f'{{"deadLetterTargetArn": "{arn}", "maxReceiveCount": "2"}}'
    )
    calls: list[float] = []

    def consume(event: dict[str, Any]) -> None:
        calls.append(time.monotonic())
        raise RuntimeError("nope")

    engine = engine_for(sqs_endpoint, hub_for(unique_name, consume), max_attempts=5)
    SQSTransport(endpoint_url=sqs_endpoint).send(unique_name, [event_body()])
    with running(engine):
        (dead,) = dead_letter_messages(sqs_client, dlq, 1)
    assert len(calls) == 2
    attributes = attributes_of(dead)
    assert "redrive policy allows 2" in attributes[REASON_HEADER]
    assert attributes[ATTEMPTS_HEADER] == "2"


def test_malformed_body_dead_lettered_at_once_and_next_processed(
    sqs_endpoint: str, make_queue: Callable[..., str], sqs_client: Any, unique_name: str
) -> None:
    """A body that is not an event goes to the dead-letter queue on its first receive, and the
    message after it is processed."""
    url = make_queue(unique_name)
    seen: list[dict[str, Any]] = []
    engine = engine_for(sqs_endpoint, hub_for(unique_name, seen.append), create_queues=True)
    SQSTransport(endpoint_url=sqs_endpoint).send(unique_name, [b"{not json", event_body(7)])
    with running(engine):
        wait_for(lambda: len(seen) == 1)
        dlq = sqs_client.get_queue_url(QueueName=unique_name + "-dead-letter")["QueueUrl"]
        (dead,) = dead_letter_messages(sqs_client, dlq, 1)
    assert dead["Body"] == "{not json"
    attributes = attributes_of(dead)
    assert attributes[ATTEMPTS_HEADER] == "1"
    assert attributes[REASON_HEADER].startswith("invalid event: DecodeError")
    assert seen[0]["payload"]["values"] == [{"name": "n", "value": 7}]
    assert visible_count(sqs_client, url) == (0, 0)


def test_heartbeat_keeps_long_work_from_a_second_engine(
    sqs_endpoint: str, make_queue: Callable[..., str], sqs_client: Any, unique_name: str
) -> None:
    """A consumer running for twice the visibility timeout keeps its message: a second engine
    polling the queue meanwhile never gets it, and it is deleted once done."""
    url = make_queue(unique_name)
    make_queue(unique_name + "-dead-letter")  # the engine checks it at start-up
    first: list[dict[str, Any]] = []
    second: list[dict[str, Any]] = []

    def slow(event: dict[str, Any]) -> None:
        first.append(event)
        time.sleep(4.5)

    long_engine = engine_for(sqs_endpoint, hub_for(unique_name, slow), lease=2)
    other_engine = engine_for(sqs_endpoint, hub_for(unique_name, second.append), lease=2)
    SQSTransport(endpoint_url=sqs_endpoint).send(unique_name, [event_body()])
    with running(long_engine):
        wait_for(lambda: first)
        with running(other_engine):
            wait_for(lambda: long_engine.stats()[unique_name].processed == 1, timeout=15)
        assert second == []
    assert len(first) == 1
    assert visible_count(sqs_client, url) == (0, 0)


def test_stop_finishes_in_flight_and_releases_the_rest_at_once(
    sqs_endpoint: str, make_queue: Callable[..., str], sqs_client: Any, unique_name: str
) -> None:
    """On stop the running consumer finishes and its message is deleted; the received but
    unstarted messages are visible again at once, not after the 30 s visibility timeout."""
    url = make_queue(unique_name)
    make_queue(unique_name + "-dead-letter")  # the engine checks it at start-up
    started, finish = threading.Event(), threading.Event()
    seen: list[dict[str, Any]] = []

    def consume(event: dict[str, Any]) -> None:
        seen.append(event)
        started.set()
        assert finish.wait(10)

    engine = engine_for(sqs_endpoint, hub_for(unique_name, consume), lease=30, wait=0)
    SQSTransport(endpoint_url=sqs_endpoint).send(unique_name, [event_body(i) for i in range(5)])
    # Make sure one receive gets all five: the engine asks for 10 with no wait.
    wait_for(lambda: visible_count(sqs_client, url) == (5, 0))
    thread = threading.Thread(target=engine.run, daemon=True)
    thread.start()
    assert started.wait(10)
    in_flight = visible_count(sqs_client, url)
    engine.stop()
    finish.set()
    thread.join(10)
    assert not thread.is_alive()
    engine.close()
    assert len(seen) == 1
    assert visible_count(sqs_client, url) == (in_flight[1] - 1, 0)
    assert in_flight[1] >= 2


def test_stop_is_prompt_during_a_long_poll(
    sqs_endpoint: str, make_queue: Callable[..., str], unique_name: str
) -> None:
    """With the default 20 s long poll, run() returns within a couple of seconds of stop()."""
    make_queue(unique_name)
    make_queue(unique_name + "-dead-letter")  # the engine checks it at start-up
    engine = SQSEngine(hub_for(unique_name, lambda e: None), endpoint_url=sqs_endpoint)
    assert engine.wait == 20
    thread = threading.Thread(target=engine.run, daemon=True)
    thread.start()
    time.sleep(1.0)
    stopped = time.monotonic()
    engine.stop()
    thread.join(10)
    assert not thread.is_alive()
    assert time.monotonic() - stopped < 3


def test_message_received_after_stop_is_released(
    sqs_endpoint: str, make_queue: Callable[..., str], sqs_client: Any, unique_name: str
) -> None:
    """A message that a long poll brings back after stop() is made visible again at once."""
    url = make_queue(unique_name)
    make_queue(unique_name + "-dead-letter")  # the engine checks it at start-up
    seen: list[dict[str, Any]] = []
    engine = engine_for(sqs_endpoint, hub_for(unique_name, seen.append), wait=3, lease=30)
    thread = threading.Thread(target=engine.run, daemon=True)
    thread.start()
    time.sleep(0.5)
    engine.stop()
    thread.join(10)
    SQSTransport(endpoint_url=sqs_endpoint).send(unique_name, [event_body()])
    engine.close()
    # The abandoned poll gets the message and releases it: visible, nobody processed it.
    wait_for(lambda: visible_count(sqs_client, url) == (1, 0), timeout=8)
    assert seen == []


def test_balog_001_event_consumed(
    sqs_endpoint: str, make_queue: Callable[..., str], unique_name: str
) -> None:
    """An event written by balog 0.0.1 (old id, timestamp and string metric values) reaches a
    consumer declared with version '<1.0', its metric values read as numbers (upcast), its
    schema version as written."""
    make_queue(unique_name)
    make_queue(unique_name + "-dead-letter")  # the engine checks it at start-up
    old = (
        b'{"schema": "0.0.1", "header": {"id": "LGk37Fo3xLLVx9GrfnyTuvBd", '
        b'"channel": "justitia.scripts.process_results.done", '
        b'"timestamp": "2014-10-07T15:06:51.641083+00:00", '
        b'"context": {"fqdn": "host.example.com", "application": "justitia"}}, '
        b'"payload": {"cls_type": "metrics", "values": [{"name": "total", "value": "1234.0"}]}}'
    )
    seen: list[dict[str, Any]] = []
    engine = engine_for(sqs_endpoint, hub_for(unique_name, seen.append))
    SQSTransport(endpoint_url=sqs_endpoint).send(unique_name, [old])
    assert engine.drain(raise_errors=True, timeout=10) == 1
    engine.close()
    assert [(e["schema"], e["header"]["id"], e["payload"]["values"]) for e in seen] == [
        ("0.0.1", "LGk37Fo3xLLVx9GrfnyTuvBd", [{"name": "total", "value": 1234.0}])
    ]


def test_deletes_of_a_batch_go_out_together(
    fault_proxy: FaultProxy, make_queue: Callable[..., str], sqs_client: Any, unique_name: str
) -> None:
    """Ten messages received together are deleted with one DeleteMessageBatch call, and none
    with DeleteMessage."""
    url = make_queue(unique_name)
    make_queue(unique_name + "-dead-letter")  # the engine checks it at start-up
    seen: list[dict[str, Any]] = []
    engine = engine_for(fault_proxy.url, hub_for(unique_name, seen.append))
    SQSTransport(endpoint_url=fault_proxy.url).send(unique_name, [event_body(i) for i in range(10)])
    wait_for(lambda: visible_count(sqs_client, url) == (10, 0))
    assert engine.drain(timeout=10) == 10
    engine.close()
    assert len(seen) == 10
    assert [len(c["Entries"]) for c in fault_proxy.actions("DeleteMessageBatch")] == [10]
    assert fault_proxy.actions("DeleteMessage") == []
    assert visible_count(sqs_client, url) == (0, 0)


def test_failed_delete_is_not_counted_processed(
    fault_proxy: FaultProxy, make_queue: Callable[..., str], sqs_client: Any, unique_name: str
) -> None:
    """When the service keeps failing a delete entry, that message is counted as an error, not
    processed, and stays on the queue to come back."""
    url = make_queue(unique_name)
    make_queue(unique_name + "-dead-letter")  # the engine checks it at start-up
    engine = engine_for(fault_proxy.url, hub_for(unique_name, lambda e: None))
    engine.transport.retry_delay = 0.01
    SQSTransport(endpoint_url=fault_proxy.url).send(unique_name, [event_body(1), event_body(2)])
    wait_for(lambda: visible_count(sqs_client, url) == (2, 0))
    fault_proxy.fail_entries("DeleteMessageBatch", [0], times=10)
    assert engine.drain(timeout=10) == 2
    engine.close()
    stats = engine.stats()[unique_name]
    assert (stats.processed, stats.errors) == (1, 1)
    assert visible_count(sqs_client, url) == (0, 1)


def test_fifo_queue_consumed_in_order(
    sqs_endpoint: str, make_queue: Callable[..., str], unique_name: str
) -> None:
    """Events sent to a FIFO queue are consumed in the order sent."""
    name = unique_name[:60] + ".fifo"
    make_queue(name)
    seen: list[int] = []
    engine = engine_for(
        sqs_endpoint, hub_for(name, lambda e: seen.append(e["payload"]["values"][0]["value"]))
    )
    SQSTransport(endpoint_url=sqs_endpoint).send(name, [event_body(i) for i in range(15)])
    engine.drain(timeout=10)
    engine.close()
    assert seen == list(range(15))


CANARY_KEY = "AKIAENGINECANARY7654"
CANARY_SECRET = "engine/canary+Secret9876543210zyxwvu"


def test_engine_repr_and_logs_hold_no_secret(
    sqs_endpoint: str,
    make_queue: Callable[..., str],
    unique_name: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The engine's repr and everything logged while it fails and dead-letters hold neither
    the access key nor the secret."""
    caplog.set_level(logging.DEBUG)
    make_queue(unique_name)  # and no dead-letter queue: drain() does not check at start-up

    def consume(event: dict[str, Any]) -> None:
        raise ValueError("bad")

    engine = SQSEngine(
        hub_for(unique_name, consume),
        region="us-east-1",
        endpoint_url=sqs_endpoint,
        aws_access_key_id=CANARY_KEY,
        aws_secret_access_key=CANARY_SECRET,
        max_attempts=1,
        wait=0,
    )
    engine.transport.send(unique_name, [event_body()])
    engine.drain(timeout=10)  # dead-lettering fails: no dead-letter queue
    texts = [repr(engine), repr(engine.transport), str(engine.stats())]
    engine.close()
    balog_logs = [r.getMessage() for r in caplog.records if r.name.startswith("balog")]
    assert any("could not dead-letter" in line for line in balog_logs)
    assert [t for t in texts + balog_logs if CANARY_KEY in t or CANARY_SECRET in t] == []
    assert CANARY_SECRET not in caplog.text


def test_processed_message_keeps_its_lease_while_the_next_one_runs(
    sqs_endpoint: str, make_queue: Callable[..., str], sqs_client: Any, unique_name: str
) -> None:
    """A processed message whose delete waits for the rest of its batch is kept leased while a
    slow consumer runs on the next message: a second engine never gets it."""
    url = make_queue(unique_name)
    make_queue(unique_name + "-dead-letter")  # the engine checks it at start-up
    first: list[int] = []
    second: list[int] = []

    def slow_second(event: dict[str, Any]) -> None:
        n = event["payload"]["values"][0]["value"]
        first.append(n)
        if n == 1:
            time.sleep(4.5)

    SQSTransport(endpoint_url=sqs_endpoint).send(unique_name, [event_body(0), event_body(1)])
    wait_for(lambda: visible_count(sqs_client, url) == (2, 0))
    engine = engine_for(sqs_endpoint, hub_for(unique_name, slow_second), lease=2, wait=0)
    other = engine_for(
        sqs_endpoint,
        hub_for(unique_name, lambda e: second.append(e["payload"]["values"][0]["value"])),
        lease=2,
    )
    with running(engine):
        wait_for(lambda: len(first) == 2)
        with running(other):
            wait_for(lambda: engine.stats()[unique_name].processed == 2, timeout=15)
    assert (sorted(first), second) == ([0, 1], [])
    assert visible_count(sqs_client, url) == (0, 0)


def test_fifo_group_is_never_processed_twice_at_once(
    sqs_endpoint: str, make_queue: Callable[..., str], unique_name: str
) -> None:
    """On a FIFO queue, with async consumers run four at a time, two events of one message
    group are never processed at once and each group keeps its order; groups run together."""
    import asyncio

    name = unique_name[:50] + ".fifo"
    make_queue(name)
    make_queue(unique_name[:50] + "-dead-letter.fifo")
    busy: dict[str, int] = {}
    overlaps: list[str] = []
    order: dict[str, list[int]] = {}
    lock = threading.Lock()

    async def consume(event: dict[str, Any]) -> None:
        group, n = event["header"]["channel"], event["payload"]["values"][0]["value"]
        with lock:
            busy[group] = busy.get(group, 0) + 1
            if busy[group] > 1:
                overlaps.append(group)
            order.setdefault(group, []).append(n)
        await asyncio.sleep(0.05 if n % 2 else 0.01)
        with lock:
            busy[group] -= 1

    bodies = [
        encode(new_event(f"app.group{n % 2}", {**METRICS, "values": [{"name": "n", "value": n}]}))
        for n in range(12)
    ]
    SQSTransport(endpoint_url=sqs_endpoint).send(name, bodies)
    engine = engine_for(sqs_endpoint, hub_for(name, consume), max_in_flight=4)
    with running(engine):
        wait_for(lambda: sum(len(v) for v in order.values()) == 12, timeout=20)
    assert overlaps == []
    assert order == {"app.group0": list(range(0, 12, 2)), "app.group1": list(range(1, 12, 2))}
