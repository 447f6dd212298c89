"""The pytest plugin: fixtures on memory, and choosing a backend by option or environment."""

from __future__ import annotations

import pytest

import balog
from balog.consumers import Consumer, ConsumerHub
from balog.engines.base import Engine
from balog.events import EventDict
from balog.testing import BackendChoice, wait_for_dead_letters, wait_for_events
from balog.transports.base import Transport
from balog.transports.memory import MemoryBroker, MemoryTransport

pytest_plugins = ["pytester"]


def test_memory_fixtures_share_one_fresh_broker(
    balog_broker: MemoryBroker,
    balog_memory_transport: MemoryTransport,
    balog_memory_engine: Engine,
    balog_hub: ConsumerHub,
) -> None:
    """The memory transport and engine fixtures work on the same fresh broker."""
    seen: list[EventDict] = []
    balog_hub.add_consumer(Consumer(seen.append, "plugin-topic"))
    balog_memory_transport.send("plugin-topic", [b'{"not": "an event"}'])
    assert balog_broker.size("plugin-topic") == 1
    assert balog_memory_transport.sent == [("plugin-topic", b'{"not": "an event"}')]
    letters = wait_for_dead_letters(balog_memory_engine, "plugin-topic", timeout=5)
    assert [d.body for d in letters] == [b'{"not": "an event"}']
    assert seen == []


def test_backend_defaults_to_memory(
    balog_backend: BackendChoice, balog_transport: Transport
) -> None:
    """With no option or variable, the chosen backend is memory."""
    assert balog_backend.is_memory
    assert isinstance(balog_transport, MemoryTransport)


def test_producer_fixture_reaches_the_engine(
    balog_producer: object,
    balog_engine_factory: object,
    balog_namespace: str,
) -> None:
    """Events logged through balog_producer are consumed by an engine from balog_engine_factory."""
    topic = f"orders-{balog_namespace}"
    balog_producer(topic)  # type: ignore[operator]
    seen: list[int] = []
    hub = ConsumerHub([Consumer(lambda e: seen.append(e["payload"]["n"]), topic)])
    engine = balog_engine_factory(hub)  # type: ignore[operator]
    log = balog.get_logger("shop")
    for n in range(3):
        log.info("paid", payload={"cls_type": "order", "n": n})
    assert balog.flush(5)
    wait_for_events(engine, 3, timeout=5)
    assert seen == [0, 1, 2]


PROBE = """
def test_probe(balog_backend):
    options = ",".join(f"{k}={v!r}" for k, v in sorted(balog_backend.options.items()))
    print("CHOSEN", balog_backend.name, balog_backend.url, options)
"""


def test_options_choose_the_backend(pytester: pytest.Pytester) -> None:
    """--balog-engine, --balog-url and --balog-option reach balog_backend; the header says so."""
    pytester.makepyfile(test_probe=PROBE)
    result = pytester.runpytest_subprocess(
        "-s",
        "--balog-engine=kombu",
        "--balog-url=amqp://guest:secret@127.0.0.1:5672//",
        "--balog-option=prefetch=3",
    )
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        [
            "balog backend: kombu at amqp://guest:**@127.0.0.1:5672//",
            "*CHOSEN kombu amqp://guest:secret@127.0.0.1:5672// prefetch=3*",
        ]
    )


def test_environment_chooses_the_backend(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """BALOG_TEST_ENGINE/BALOG_TEST_URL/BALOG_TEST_OPTIONS choose it when no option is given."""
    pytester.makepyfile(test_probe=PROBE)
    monkeypatch.setenv("BALOG_TEST_ENGINE", "sqs")
    monkeypatch.setenv("BALOG_TEST_OPTIONS", "endpoint_url=http://127.0.0.1:9 region=us-east-1")
    result = pytester.runpytest_subprocess("-s")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        ["*CHOSEN sqs None endpoint_url='http://127.0.0.1:9',region='us-east-1'*"]
    )


def test_unknown_backend_fails_with_the_installed_names(pytester: pytest.Pytester) -> None:
    """A backend name that is not installed errors in the fixture, listing what is installed."""
    pytester.makepyfile(
        test_uses="""
def test_uses(balog_transport):
    pass
"""
    )
    result = pytester.runpytest_subprocess("--balog-engine=nosuchbackend")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*no balog.transports plugin named 'nosuchbackend'*memory*"])


def test_a_transport_loads_by_name_without_warnings() -> None:
    """Loading a plugin by name emits no deprecation warning (pytest turns those into errors)."""
    from balog.transports import create_transport

    transport = create_transport("memory")
    assert isinstance(transport, MemoryTransport)
    transport.close()
