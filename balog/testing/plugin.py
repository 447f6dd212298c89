"""balog's pytest plugin: fixtures for testing code that produces and consumes balog events.

Installed with balog and registered through the ``pytest11`` entry point, so the fixtures are
there in any project that has balog installed. Options (or the environment variables beside them)
choose the backend the backend-neutral fixtures build; memory is the default::

    pytest --balog-engine=kombu --balog-url=redis://127.0.0.1:6379/0
    BALOG_TEST_ENGINE=sqs BALOG_TEST_OPTIONS="endpoint_url=http://127.0.0.1:5000" pytest

Memory fixtures: ``balog_broker`` (a fresh :class:`~balog.transports.memory.MemoryBroker`),
``balog_memory_transport``, ``balog_memory_engine`` (on ``balog_hub``).

Backend-neutral fixtures: ``balog_backend`` (the :class:`~balog.testing.BackendChoice`),
``balog_transport``, ``balog_engine_factory`` (``factory(hub, consumer_operator=None,
**options)``), ``balog_engine`` (on ``balog_hub``), ``balog_producer`` (balog's producer
configured to send to ``balog_transport``), ``balog_namespace`` (a short unique string to put in
topic names, so tests on a shared broker never see each other's messages).

Capture: ``balog_events`` (the events logged during the test, no broker involved).

State: ``balog_reset`` (balog's process-wide state reset around the test).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from balog.consumers import ConsumerHub, ConsumerOperator
from balog.engines.base import Engine
from balog.engines.memory import MemoryEngine
from balog.handler import EventHandler
from balog.testing._backend import ENGINE_ENV, OPTIONS_ENV, URL_ENV, BackendChoice, parse_options
from balog.testing._capture import CapturedEvents, capture_events
from balog.transports.base import Transport
from balog.transports.memory import MemoryBroker, MemoryTransport

EngineFactory = Callable[..., Engine]


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("balog", "balog backend for the balog_* fixtures")
    group.addoption(
        "--balog-engine",
        default=None,
        metavar="NAME",
        help=f"engine/transport the balog fixtures build (default: ${ENGINE_ENV} or memory)",
    )
    group.addoption(
        "--balog-url",
        default=None,
        metavar="URL",
        help=f"the backend's url option (default: ${URL_ENV})",
    )
    group.addoption(
        "--balog-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"a further backend option; repeatable (added to ${OPTIONS_ENV})",
    )


def _choice(config: pytest.Config) -> BackendChoice:
    from_env = BackendChoice.from_env()
    name = config.getoption("--balog-engine", None) or from_env.name
    url = config.getoption("--balog-url", None) or from_env.url
    options = {**dict(from_env.options), **parse_options(config.getoption("--balog-option", []))}
    return BackendChoice(name=name, url=url, options=options)


def pytest_report_header(config: pytest.Config) -> str | None:
    choice = _choice(config)
    return None if choice.is_memory else f"balog backend: {choice.describe()}"


@pytest.fixture(scope="session")
def balog_backend(pytestconfig: pytest.Config) -> BackendChoice:
    """The backend chosen by ``--balog-engine``/``--balog-url``/``--balog-option`` or the env."""
    return _choice(pytestconfig)


@pytest.fixture
def balog_namespace() -> str:
    """A short unique string (letters and digits) to put in this test's topic names."""
    return "t" + uuid.uuid4().hex[:10]


@pytest.fixture
def balog_broker() -> MemoryBroker:
    """A fresh, empty memory broker shared by the memory fixtures of this test."""
    return MemoryBroker()


@pytest.fixture
def balog_hub() -> ConsumerHub:
    """An empty consumer hub; add consumers before the engine runs."""
    return ConsumerHub()


@pytest.fixture
def balog_memory_transport(balog_broker: MemoryBroker) -> Iterator[MemoryTransport]:
    """A memory transport on ``balog_broker``; its ``sent`` list records what was sent."""
    transport = MemoryTransport(broker=balog_broker)
    yield transport
    transport.close()


@pytest.fixture
def balog_memory_engine(
    balog_hub: ConsumerHub, balog_broker: MemoryBroker
) -> Iterator[MemoryEngine]:
    """A memory engine for ``balog_hub`` on ``balog_broker`` (immediate retries)."""
    engine = MemoryEngine(balog_hub, broker=balog_broker, handle_signals=False)
    yield engine
    engine.close()


@pytest.fixture
def balog_transport(
    balog_backend: BackendChoice, balog_broker: MemoryBroker
) -> Iterator[Transport]:
    """A transport of the chosen backend (memory on ``balog_broker`` by default)."""
    transport = balog_backend.create_transport(broker=balog_broker)
    yield transport
    transport.close()


@pytest.fixture
def balog_engine_factory(
    balog_backend: BackendChoice, balog_broker: MemoryBroker
) -> Iterator[EngineFactory]:
    """``factory(hub, consumer_operator=None, **options)``: an engine of the chosen backend.

    On memory it shares ``balog_broker`` with ``balog_transport``. Every engine built is stopped
    and closed when the test ends.
    """
    built: list[Engine] = []

    def factory(
        hub: ConsumerHub, consumer_operator: ConsumerOperator | None = None, **options: Any
    ) -> Engine:
        engine = balog_backend.create_engine(hub, consumer_operator, broker=balog_broker, **options)
        built.append(engine)
        return engine

    yield factory
    for engine in built:
        engine.stop()
        engine.close()


@pytest.fixture
def balog_engine(balog_engine_factory: EngineFactory, balog_hub: ConsumerHub) -> Engine:
    """An engine of the chosen backend for ``balog_hub``."""
    return balog_engine_factory(balog_hub)


@pytest.fixture
def balog_producer(balog_transport: Transport) -> Iterator[Callable[..., EventHandler]]:
    """``configure(topic, **options)``: point balog's producer at ``balog_transport``.

    Returns the :class:`~balog.handler.EventHandler`, as :func:`balog.configure` does; the
    producer is reset when the test ends. Call ``balog.flush()`` before expecting events on the
    transport.
    """
    import balog.producer

    def configure(topic: str = "balog-events", **options: Any) -> EventHandler:
        return balog.producer.configure(balog_transport, topic, **options)

    yield configure
    balog.producer.state.reset()


@pytest.fixture
def balog_events() -> Iterator[CapturedEvents]:
    """The balog events logged during the test, captured with no broker (see capture_events)."""
    with capture_events() as events:
        yield events


@pytest.fixture
def balog_reset() -> Iterator[None]:
    """balog's process-wide state reset before and after the test (:func:`balog.testing.reset`).

    Use it autouse in a ``conftest.py`` so that no test sees another's producer setup, memory
    broker contents or registered payload schemas::

        @pytest.fixture(autouse=True)
        def _balog(balog_reset): ...
    """
    from balog.testing._reset import reset

    reset()
    yield
    reset()
