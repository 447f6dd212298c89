"""The public API is pinned: a change to what balog exports must change this test too."""

from __future__ import annotations

import subprocess
import sys

import balog
import balog.consumers
import balog.engines
import balog.exceptions
import balog.transports


def test_top_level_exports() -> None:
    """balog's top-level names."""
    assert sorted(balog.__all__) == sorted(
        [
            "FACILITY_VERSION",
            "BalogLogger",
            "EventDict",
            "EventFormatter",
            "EventHandler",
            "__version__",
            "configure",
            "consumer_config",
            "flush",
            "get_logger",
        ]
    )
    for name in balog.__all__:
        assert hasattr(balog, name), name


def test_balog_1x_top_level_names() -> None:
    """balog.consumer_config, balog.consumers and balog.engines work after `import balog`, as
    in balog 1.x, without `import balog` importing the consumer side; a misspelt name is still
    an AttributeError."""
    code = (
        "import sys, balog\n"
        "assert 'balog.consumers' not in sys.modules\n"
        "from balog.consumers import consumer_config\n"
        "assert balog.consumer_config is consumer_config\n"
        "assert balog.engines.create_engine and balog.consumers.ConsumerHub\n"
        "try:\n"
        "    balog.confgure\n"
        "except AttributeError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "module 'balog' has no attribute 'confgure'"


def test_events_exports() -> None:
    """balog.events' names, upcasters included."""
    import balog.events

    assert sorted(balog.events.__all__) == sorted(
        [
            "BUILTIN_UPCASTERS",
            "DEFAULT_MAX_DEPTH",
            "DEFAULT_MAX_SIZE",
            "FACILITY_VERSION",
            "UPCASTER_GROUP",
            "EventDict",
            "SchemaRegistry",
            "UpcastEvent",
            "UpcastFunc",
            "Upcaster",
            "decode",
            "default_registry",
            "dumps",
            "encode",
            "loads",
            "new_event",
            "raw",
            "timestamp",
            "upcaster",
            "validate",
        ]
    )
    for name in balog.events.__all__:
        assert hasattr(balog.events, name), name


def test_subpackage_exports() -> None:
    """The consumers, engines and transports packages' names."""
    assert sorted(balog.consumers.__all__) == sorted(
        [
            "Consumer",
            "ConsumerHub",
            "ConsumerOperator",
            "DefaultConsumerOperator",
            "consumer_config",
        ]
    )
    assert sorted(balog.engines.__all__) == sorted(
        [
            "DEFAULT_ENGINE",
            "Backoff",
            "Engine",
            "EngineStats",
            "TransportEngine",
            "available",
            "create_engine",
            "engine_from_settings",
        ]
    )
    assert sorted(balog.transports.__all__) == sorted(
        [
            "Capabilities",
            "DeadLetter",
            "Delivery",
            "Transport",
            "available",
            "create_transport",
        ]
    )


def test_every_exception_derives_from_balog_error() -> None:
    """One hierarchy: every exported exception is a BalogError."""
    for name in balog.exceptions.__all__:
        assert issubclass(getattr(balog.exceptions, name), balog.exceptions.BalogError), name


def test_import_balog_imports_no_backend_library() -> None:
    """`import balog` works without importing boto3, kombu, jsonschema or stevedore."""
    code = (
        "import sys, balog, balog.consumers, balog.engines, balog.transports; "
        "heavy = [m for m in ('boto3', 'botocore', 'kombu', 'redis', 'jsonschema', 'stevedore') "
        "if m in sys.modules]; print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
