"""The seed README's "put it altogether" example, run verbatim against the moto server."""

from __future__ import annotations

import sys
import threading
import time
from typing import Any

import pytest
import seedapp
from sqs_helpers import wait_for

import balog
from balog import get_logger
from balog.engines.base import TransportEngine

# Copied verbatim from the seed README; only ``yourpackage`` is bound to a test package.
README_EXAMPLE = '''
from __future__ import unicode_literals

from balog.consumers import ConsumerHub
from balog.consumers.sqs import SQSEngine

import yourpackage


class ConsumerOperator(object):

    def __init__(self, settings):
        self.settings = settings

    def get_topic(self, consumer):
        env = self.settings['api.sqs.queue_env']
        return consumer.topic.format(env=env)

    def process_event(self, consumer, event):
        return consumer.func(self.settings, event)


def process_events(settings):
    """Process log events in SQS

    """
    hub = ConsumerHub()
    hub.scan(yourpackage)
    consumer_op = ConsumerOperator(settings)
    engine = SQSEngine(
        hub=hub,
        region=settings['api.sqs.region'],
        aws_access_key_id=settings['api.sqs.aws_access_key_id'],
        aws_secret_access_key=settings['api.sqs.aws_secret_access_key'],
        consumer_operator=consumer_op,
    )
    engine.run()
'''


def test_readme_example_consumes_what_get_logger_produced(
    sqs_endpoint: str,
    sqs_client: Any,
    unique_name: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """process_events(settings) from the README, with the endpoint from AWS_ENDPOINT_URL,
    receives the metrics events that get_logger(...).info(...) sent through the sqs transport,
    and stops when asked."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", sqs_endpoint)
    monkeypatch.setitem(sys.modules, "yourpackage", seedapp)
    seedapp.RECEIVED.clear()
    env = unique_name
    queue = f"myproj-events-{env}"
    sqs_client.create_queue(QueueName=queue)
    sqs_client.create_queue(QueueName=f"other-{env}")  # seedapp's nested consumer listens here
    for name in (queue, f"other-{env}"):  # the engine checks the dead-letter queues at start-up
        sqs_client.create_queue(QueueName=f"{name}-dead-letter")
    settings = {
        "api.sqs.queue_env": env,
        "api.sqs.region": "us-east-1",
        "api.sqs.aws_access_key_id": "testing",
        "api.sqs.aws_secret_access_key": "testing",
    }

    # Catch the engine the example builds so that the test can stop it.
    engines: list[TransportEngine] = []
    original_run = TransportEngine.run

    def run_and_record(self: TransportEngine) -> None:
        engines.append(self)
        original_run(self)

    monkeypatch.setattr(TransportEngine, "run", run_and_record)
    namespace: dict[str, Any] = {"__name__": "readme_example"}
    exec(compile(README_EXAMPLE, "README.md", "exec"), namespace)
    thread = threading.Thread(target=namespace["process_events"], args=(settings,), daemon=True)
    thread.start()

    balog.configure("sqs", topic=queue)
    balogger = get_logger("justitia.scripts.process_results")
    for n in range(3):
        balogger.info(
            "done",
            payload={
                "cls_type": "metrics",
                "values": [
                    {"name": "total", "value": 123 + n},
                    {"name": "succeeded", "value": 456},
                    {"name": "failed", "value": 789},
                ],
            },
        )
    assert balog.flush(10)
    wait_for(lambda: len(seedapp.RECEIVED) == 3, timeout=15)

    (engine,) = engines
    stopped = time.monotonic()
    engine.stop()
    thread.join(10)
    assert not thread.is_alive()
    assert time.monotonic() - stopped < 5
    engine.close()
    totals = sorted(e["payload"]["values"][0]["value"] for _, e in seedapp.RECEIVED)
    channels = {e["header"]["channel"] for _, e in seedapp.RECEIVED}
    assert totals == [123, 124, 125]
    assert channels == {"justitia.scripts.process_results.done"}
    attributes = sqs_client.get_queue_attributes(
        QueueUrl=sqs_client.get_queue_url(QueueName=queue)["QueueUrl"],
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    assert attributes == {
        "ApproximateNumberOfMessages": "0",
        "ApproximateNumberOfMessagesNotVisible": "0",
    }
