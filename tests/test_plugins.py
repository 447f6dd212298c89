"""Finding engines and transports by name, and the errors when that fails."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from balog.consumers import Consumer, ConsumerHub
from balog.engines import TransportEngine, available, create_engine, engine_from_settings
from balog.engines.memory import MemoryEngine
from balog.exceptions import ConfigurationError, PluginLoadError, PluginNotFound
from balog.transports import available as transports_available
from balog.transports import create_transport
from balog.transports.memory import MemoryBroker, MemoryTransport

BUILT_IN = ["kombu", "memory", "redis", "sqlite", "sqs"]


def hub() -> ConsumerHub:
    return ConsumerHub([Consumer(lambda e: None, "t")])


@pytest.fixture
def fake_distribution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An installed distribution (a dist-info on sys.path) with a good and a broken plugin."""
    dist = tmp_path / "balog_fake_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: balog-fake-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[balog.transports]\n"
        "fake = balog_fake_plugin:FakeTransport\n"
        "broken = balog_fake_plugin_missing:Nope\n"
    )
    (tmp_path / "balog_fake_plugin.py").write_text(
        "from balog.transports.memory import MemoryTransport\n"
        "class FakeTransport(MemoryTransport):\n"
        "    pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    sys.modules.pop("balog_fake_plugin", None)


def test_built_ins_are_registered_as_entry_points() -> None:
    """Every built-in is found by name, like a third party's plugin would be."""
    assert set(BUILT_IN) <= set(transports_available())
    assert set(BUILT_IN) <= set(available())


def test_memory_loads_by_name() -> None:
    """create_transport/create_engine build the memory backend by name with options."""
    broker = MemoryBroker()
    transport = create_transport("memory", broker=broker)
    assert isinstance(transport, MemoryTransport)
    assert transport.broker is broker
    engine = create_engine("memory", hub=hub(), broker=broker, max_attempts=2)
    assert isinstance(engine, MemoryEngine)
    assert engine.max_attempts == 2


def test_unknown_name_lists_installed_names() -> None:
    """An unknown name is an error that lists what is installed."""
    with pytest.raises(PluginNotFound) as info:
        create_transport("carrier-pigeon")
    assert "carrier-pigeon" in str(info.value)
    assert "memory" in str(info.value)
    with pytest.raises(PluginNotFound):
        create_engine("carrier-pigeon", hub=hub())


def test_unknown_option_is_a_clear_error() -> None:
    """An option the backend does not take is a ConfigurationError naming it."""
    with pytest.raises(ConfigurationError, match="colour"):
        create_transport("memory", colour="blue")


def test_unknown_option_passed_down_is_a_clear_error() -> None:
    """An engine that hands **options to its base still reports an unknown one clearly."""
    with pytest.raises(ConfigurationError, match="colour"):
        create_engine("memory", hub=hub(), broker=MemoryBroker(), colour="blue")


def test_instance_is_accepted_where_a_name_is() -> None:
    """An instance passes straight through create_transport and create_engine."""
    transport = MemoryTransport(MemoryBroker())
    assert create_transport(transport) is transport
    engine = MemoryEngine(hub(), broker=MemoryBroker())
    assert create_engine(engine) is engine
    with pytest.raises(ConfigurationError):
        create_transport(transport, broker=MemoryBroker())


def test_third_party_transport_found_by_name(fake_distribution: Path) -> None:
    """A transport registered by another distribution loads by name and runs on the generic
    engine even though it ships no engine."""
    assert "fake" in transports_available()
    transport = create_transport("fake")
    assert type(transport).__name__ == "FakeTransport"
    broker = MemoryBroker()
    engine = create_engine("fake", hub=hub(), broker=broker, max_attempts=4)
    assert type(engine) is TransportEngine
    assert engine.max_attempts == 4
    assert engine.transport.broker is broker  # type: ignore[attr-defined]


def test_broken_plugin_says_which_package_and_why(fake_distribution: Path) -> None:
    """A plugin that fails to import names its package and the reason."""
    with pytest.raises(PluginLoadError) as info:
        create_transport("broken")
    message = str(info.value)
    assert "balog-fake-plugin" in message
    assert "balog_fake_plugin_missing" in message
    assert isinstance(info.value.__cause__, ModuleNotFoundError)


def test_engine_from_settings() -> None:
    """A flat settings mapping names the engine and its options; strings are coerced."""
    settings = {
        "balog.engine": "memory",
        "balog.engine.max_attempts": "7",
        "balog.engine.lease": "2.5",
        "balog.engine.handle_signals": "false",
        "unrelated": "x",
    }
    engine = engine_from_settings(settings, hub=hub())
    assert isinstance(engine, MemoryEngine)
    assert (engine.max_attempts, engine.lease, engine.handle_signals) == (7, 2.5, False)
