"""Declaring consumers, matching events to them, and collecting them in a hub."""

from __future__ import annotations

import pytest

from balog.consumers import (
    Consumer,
    ConsumerHub,
    ConsumerOperator,
    DefaultConsumerOperator,
    consumer_config,
)
from balog.events import new_event
from balog.exceptions import ConfigurationError


def _event(cls_type: str, schema: str = "0.1.0") -> dict:
    event = new_event("a.b", {"cls_type": cls_type})
    event["schema"] = schema
    return event


def _noop(event: dict) -> None:
    pass


@pytest.mark.parametrize(
    ("cls_type", "version", "event", "expected"),
    [
        ("metrics", None, _event("metrics"), True),
        ("metrics", None, _event("log"), False),
        (("metrics", "log"), None, _event("log"), True),
        (None, None, _event("whatever"), True),
        (None, "<1.0", _event("x", "0.0.1"), True),
        (None, "<1.0", _event("x", "1.0.0"), False),
        (None, ">=1.0.1,<2.0", _event("x", "1.0.0"), False),
        (None, ">=1.0.1,<2.0", _event("x", "1.5"), True),
        (None, ("<0.1", ">=2.0"), _event("x", "0.0.1"), True),
        (None, ("<0.1", ">=2.0"), _event("x", "1.0"), False),
        (None, ("<0.1", ">=2.0"), _event("x", "2.1"), True),
        (None, "<1.0", _event("x", "not-a-version"), False),
        ("metrics", "<1.0", _event("metrics", "0.1.0"), True),
        ("metrics", "<1.0", _event("metrics", "1.1.0"), False),
    ],
)
def test_match_event(cls_type: object, version: object, event: dict, expected: bool) -> None:
    """cls_type (single or tuple) and version (range or tuple of ranges) select events."""
    consumer = Consumer(_noop, "t", cls_type=cls_type, version=version)  # type: ignore[arg-type]
    assert consumer.match_event(event) is expected


def test_match_event_ignores_parts_it_does_not_need() -> None:
    """A consumer with no conditions matches even an event missing schema and payload."""
    assert Consumer(_noop, "t").match_event({}) is True
    assert Consumer(_noop, "t", cls_type="x").match_event({"payload": "not a mapping"}) is False


def test_bad_specifier_fails_at_declaration() -> None:
    """A bad version specifier is an error when the module is imported, not at delivery."""
    with pytest.raises(ConfigurationError, match="invalid version specifier"):
        consumer_config(topic="t", version="<<1.0")


@pytest.mark.parametrize("cls_type", ["", (), ("ok", "")])
def test_bad_cls_type_fails_at_declaration(cls_type: object) -> None:
    """An empty cls_type is refused when declared."""
    with pytest.raises(ConfigurationError):
        consumer_config(topic="t", cls_type=cls_type)  # type: ignore[arg-type]


def test_consumer_attributes_match_balog_0x() -> None:
    """Consumer keeps func, topic, cls_type, version and a name, as balog 0.x did."""

    @consumer_config(topic="events-{env}", cls_type="metrics", version="<1.0", owner="ops")
    def handler(event: dict) -> None:
        pass

    hub = ConsumerHub()
    hub.add_consumer(handler)
    (consumer,) = hub.consumers
    assert (consumer.func, consumer.topic, consumer.cls_type, consumer.version) == (
        handler,
        "events-{env}",
        "metrics",
        "<1.0",
    )
    assert consumer.name.endswith("handler")
    assert consumer.extra == {"owner": "ops"}


def test_scan_collects_a_nested_package() -> None:
    """scan imports a package and every submodule, once per declaration, stacked ones too."""
    import seedapp

    hub = ConsumerHub()
    added = hub.scan(seedapp)
    names = sorted((c.func.__name__, c.topic) for c in added)
    assert names == [
        ("process_future_metrics", "myproj-events-{env}"),
        ("process_future_metrics", "other-{env}"),
        ("process_logs", "myproj-events-{env}"),
        ("process_metrics", "myproj-events-{env}"),
    ]
    assert len(hub) == 4
    assert hub.scan(seedapp) == []  # scanning again adds nothing


def test_scan_by_name_with_ignore() -> None:
    """scan takes a dotted name, and ignore skips a subpackage (relative names allowed)."""
    hub = ConsumerHub()
    hub.scan("seedapp", ignore=".consumers.nested")
    assert [c.func.__name__ for c in hub] == ["process_metrics"]
    hub2 = ConsumerHub()
    hub2.scan("seedapp", ignore=lambda name: name.endswith(".metrics"))
    assert {c.func.__name__ for c in hub2} == {"process_logs", "process_future_metrics"}


def test_scan_surfaces_import_errors(
    tmp_path: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A module that fails to import makes scan fail with that module's own error."""
    pkg = tmp_path / "brokenapp"  # type: ignore[operator]
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "bad.py").write_text("import no_such_module_anywhere\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError, match="no_such_module_anywhere"):
        ConsumerHub().scan("brokenapp")


def test_route_returns_every_matching_consumer() -> None:
    """route gives all consumers whose conditions an event meets."""
    import seedapp

    hub = ConsumerHub()
    hub.scan(seedapp)
    routed = sorted(c.func.__name__ for c in hub.route(_event("metrics", "0.1.0")))
    assert routed == ["process_future_metrics", "process_metrics"]  # the untyped-version one


def test_by_topic_uses_the_operator() -> None:
    """Topics come from the operator, so templates can be filled from settings."""
    import seedapp

    class Op:
        def get_topic(self, consumer: Consumer) -> str:
            return consumer.topic.format(env="prod")

        def process_event(self, consumer: Consumer, event: dict) -> None:
            pass

    hub = ConsumerHub()
    hub.scan(seedapp)
    assert isinstance(Op(), ConsumerOperator)
    assert sorted(hub.by_topic(Op())) == ["myproj-events-prod", "other-prod"]
    assert sorted(hub.by_topic()) == ["myproj-events-{env}", "other-{env}"]


def test_default_operator_calls_func_with_event() -> None:
    """DefaultConsumerOperator subscribes to the topic as written and calls func(event)."""
    seen: list[dict] = []
    consumer = Consumer(seen.append, "t")
    op = DefaultConsumerOperator()
    assert op.get_topic(consumer) == "t"
    op.process_event(consumer, {"x": 1})
    assert seen == [{"x": 1}]


def test_add_consumer_refuses_undeclared_function() -> None:
    """Adding a plain function is an error that says it is not declared."""
    with pytest.raises(ConfigurationError, match="not declared"):
        ConsumerHub().add_consumer(_noop)
