"""Declaring consumers, matching events to them, and collecting them in a hub."""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import AsyncIterator, Iterator

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
        (None, (">=1.0.1", "<2.0"), _event("x", "1.5"), True),
        (None, (">=1.0.1", "<2.0"), _event("x", "2.0"), False),
        (None, (">=1.0.1", "<2.0"), _event("x", "0.9"), False),
        (None, (">=1.0.1", "<2.0"), _event("x", "1.0.0"), False),
        (None, ("<0.1", ">=2.0"), _event("x", "0.0.1"), False),
        (None, "<1.0", _event("x", "not-a-version"), False),
        ("metrics", "<1.0", _event("metrics", "0.1.0"), True),
        ("metrics", "<1.0", _event("metrics", "1.1.0"), False),
    ],
)
def test_match_event(cls_type: object, version: object, event: dict, expected: bool) -> None:
    """cls_type (single or tuple: any matches) and version (a specifier, or a tuple of them that
    must all hold) select events."""
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


def test_consumer_attributes_match_balog_1x() -> None:
    """Consumer keeps func, topic, and cls_type and version as tuples, as balog 1.x did; data
    of the application goes in extra."""

    @consumer_config(
        topic="events-{env}", cls_type="metrics", version="<1.0", extra={"owner": "ops"}
    )
    def handler(event: dict) -> None:
        pass

    hub = ConsumerHub()
    hub.add_consumer(handler)
    (consumer,) = hub.consumers
    assert (consumer.func, consumer.topic, consumer.cls_type, consumer.version) == (
        handler,
        "events-{env}",
        ("metrics",),
        ("<1.0",),
    )
    assert consumer.name == f"{__name__}.test_consumer_attributes_match_balog_1x.<locals>.handler"
    assert consumer.extra == {"owner": "ops"}


def test_none_stays_none_and_tuples_stay_tuples() -> None:
    """cls_type and version left out are None; given as tuples they are kept as given."""
    consumer = Consumer(_noop, "t", cls_type=("a", "b"), version=(">=1.0.1", "<2.0"))
    assert (consumer.cls_type, consumer.version) == (("a", "b"), (">=1.0.1", "<2.0"))
    assert (Consumer(_noop, "t").cls_type, Consumer(_noop, "t").version) == (None, None)


def test_version_tuple_and_comma_mean_the_same() -> None:
    """('>=1.0.1', '<2.0') and '>=1.0.1,<2.0' take exactly the same versions."""
    as_tuple = Consumer(_noop, "t", version=(">=1.0.1", "<2.0"))
    as_text = Consumer(_noop, "t", version=">=1.0.1,<2.0")
    versions = ["0.9", "1.0", "1.0.1", "1.5", "1.999999", "2.0", "2.0.0", "2.1"]
    assert [as_tuple.match_event({"schema": v}) for v in versions] == [
        as_text.match_event({"schema": v}) for v in versions
    ]
    assert as_tuple.specifier == as_text.specifier


@pytest.mark.parametrize(
    ("keyword", "nearest"),
    [("versoin", "version"), ("cls_types", "cls_type"), ("topik", "topic"), ("owner", None)],
)
def test_unknown_keyword_to_consumer_config_is_refused(keyword: str, nearest: str | None) -> None:
    """A misspelt consumer_config keyword is an error at import naming the nearest valid one,
    instead of a consumer that takes every event."""
    kwargs = {"topic": "t", keyword: "order.paid"}
    if keyword == "topik":
        kwargs = {"topik": "t"}
    with pytest.raises(ConfigurationError) as info:
        consumer_config(**kwargs)
    assert repr(keyword) in str(info.value)
    if nearest is not None:
        assert f"did you mean {nearest!r}" in str(info.value)


def test_unknown_keyword_to_consumer_is_refused() -> None:
    """Consumer itself refuses an unknown keyword, naming the nearest valid one."""
    with pytest.raises(ConfigurationError, match="did you mean 'version'"):
        Consumer(_noop, "t", versoin="<1.0")


def test_consumer_config_without_topic_is_a_configuration_error() -> None:
    """Forgetting the topic is a ConfigurationError, not a TypeError from deep inside."""
    with pytest.raises(ConfigurationError, match="topic"):
        consumer_config(cls_type="metrics")


def test_extra_must_be_a_mapping() -> None:
    """extra holds the application's data as a mapping; anything else is refused."""
    with pytest.raises(ConfigurationError, match="extra must be a mapping"):
        consumer_config(topic="t", extra=["owner"])


def test_consumer_cls_builds_the_consumer() -> None:
    """consumer_config(consumer_cls=...) builds the consumer with that class, with its own
    keywords, as balog 1.x did."""

    class Prioritised(Consumer):
        def __init__(self, func: object, topic: str, priority: int = 0, **kw: object) -> None:
            super().__init__(func, topic, **kw)  # type: ignore[arg-type]
            self.priority = priority

    @consumer_config("t", consumer_cls=Prioritised, priority=5, cls_type="metrics")
    def handler(event: dict) -> None:
        pass

    (consumer,) = _declared(handler)
    assert isinstance(consumer, Prioritised)
    assert (consumer.priority, consumer.cls_type) == (5, ("metrics",))


def _declared(func: object) -> list[Consumer]:
    hub = ConsumerHub()
    hub.add_consumer(func)  # type: ignore[arg-type]
    return hub.consumers


def test_consumer_cls_unknown_keyword_is_refused() -> None:
    """A keyword neither the consumer class nor Consumer takes is refused at declaration."""

    class Strict(Consumer):
        def __init__(self, func: object, topic: str, priority: int = 0) -> None:
            super().__init__(func, topic)  # type: ignore[arg-type]

    with pytest.raises(ConfigurationError, match="did you mean 'priority'"):
        consumer_config("t", consumer_cls=Strict, priorty=1)

    class Passing(Consumer):
        def __init__(self, func: object, topic: str, **kw: object) -> None:
            super().__init__(func, topic, **kw)  # type: ignore[arg-type]

    declare = consumer_config("t", consumer_cls=Passing, versoin="<1.0")
    with pytest.raises(ConfigurationError, match="did you mean 'version'"):
        declare(_noop)


def test_consumer_cls_must_be_a_consumer() -> None:
    """consumer_cls must build a Consumer, which the hub and engines rely on."""
    with pytest.raises(ConfigurationError, match=r"subclass of balog\.consumers\.Consumer"):
        consumer_config("t", consumer_cls=dict)  # type: ignore[arg-type]


async def _async_consumer(event: dict) -> None:
    pass


class _AsyncCallable:
    async def __call__(self, event: dict) -> None:
        pass


class _SyncCallable:
    def __call__(self, event: dict) -> None:
        pass


@pytest.mark.parametrize(
    ("func", "expected"),
    [
        (_noop, False),
        (_async_consumer, True),
        (functools.partial(_async_consumer), True),
        (functools.partial(functools.partial(_async_consumer)), True),
        (_AsyncCallable(), True),
        (_SyncCallable(), False),
        (functools.partial(_noop), False),
        (print, False),
    ],
)
def test_is_async(func: object, expected: bool) -> None:
    """is_async is true for coroutine functions, partials of them and objects whose __call__ is
    one; false for plain callables."""
    assert Consumer(func, "t").is_async is expected  # type: ignore[arg-type]


def _generator(event: dict) -> Iterator[None]:
    yield None


async def _async_generator(event: dict) -> AsyncIterator[None]:
    yield None


class _GeneratorCallable:
    def __call__(self, event: dict) -> Iterator[None]:
        yield None


@pytest.mark.parametrize(
    ("func", "message"),
    [
        (_generator, "generator function"),
        (functools.partial(_generator), "generator function"),
        (_GeneratorCallable(), "generator function"),
        (_async_generator, "async generator function"),
        ("not callable", "must be callable"),
        (None, "must be callable"),
    ],
)
def test_uncallable_or_generator_consumers_are_refused(func: object, message: str) -> None:
    """A generator (whose body would never run) or a non-callable is refused when declared."""
    with pytest.raises(ConfigurationError, match=message):
        consumer_config(topic="t")(func)  # type: ignore[type-var]
    with pytest.raises(ConfigurationError, match=message):
        Consumer(func, "t")  # type: ignore[arg-type]


def test_default_operator_returns_the_awaitable_of_an_async_consumer() -> None:
    """process_event returns what the function returns: for async def, an awaitable that runs
    the consumer when awaited."""
    seen: list[dict] = []

    async def handler(event: dict) -> str:
        seen.append(event)
        return "done"

    consumer = Consumer(handler, "t")
    result = DefaultConsumerOperator().process_event(consumer, {"x": 1})
    assert inspect.isawaitable(result)
    assert seen == []
    assert asyncio.run(result) == "done"
    assert seen == [{"x": 1}]


def test_default_operator_class_works_as_an_operator() -> None:
    """As in balog 1.x, the DefaultConsumerOperator class itself can be passed as the operator."""
    seen: list[dict] = []
    consumer = Consumer(seen.append, "topic-a")
    assert isinstance(DefaultConsumerOperator, ConsumerOperator)
    assert DefaultConsumerOperator.get_topic(consumer) == "topic-a"
    DefaultConsumerOperator.process_event(consumer, {"x": 1})
    assert seen == [{"x": 1}]


def test_hub_consumers_is_the_hubs_list() -> None:
    """hub.consumers is a plain list, as in balog 1.x: appending to it adds a consumer."""
    hub = ConsumerHub()
    consumer = Consumer(_noop, "t")
    hub.consumers.append(consumer)
    assert list(hub) == [consumer]
    assert hub.route({"payload": {"cls_type": "x"}}) == [consumer]


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
