"""Declaring consumers, collecting them in a hub, and calling them through an operator.

::

    @consumer_config(topic="myproj-events-{env}", cls_type="metrics", version="<1.0")
    def process_metrics(settings, event):
        ...

    hub = ConsumerHub()
    hub.scan(yourpackage)
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
from collections.abc import Callable, Iterable, Iterator, Mapping
from types import ModuleType
from typing import Any, Protocol, runtime_checkable

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

from balog.exceptions import ConfigurationError

__all__ = [
    "Consumer",
    "ConsumerHub",
    "ConsumerOperator",
    "DefaultConsumerOperator",
    "consumer_config",
]

_MARKER = "__balog_consumers__"

CONSUMER_CALLABLE = Callable[..., Any]


@functools.lru_cache(maxsize=512)
def _version(text: str) -> Version | None:
    try:
        return Version(text)
    except InvalidVersion:
        return None


def _as_tuple(value: str | Iterable[str] | None, what: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    items = (value,) if isinstance(value, str) else tuple(value)
    if not items or not all(isinstance(v, str) and v for v in items):
        raise ConfigurationError(f"{what} must be a non-empty string or tuple of strings")
    return items


def _specifiers(version: str | Iterable[str] | None) -> tuple[SpecifierSet, ...] | None:
    texts = _as_tuple(version, "version")
    if texts is None:
        return None
    try:
        return tuple(SpecifierSet(t) for t in texts)
    except InvalidSpecifier as exc:
        raise ConfigurationError(f"invalid version specifier {version!r}: {exc}") from exc


class Consumer:
    """A function that wants events of some ``cls_type`` and schema ``version`` from a ``topic``.

    ``cls_type`` is a string or a tuple of them (any matches); ``version`` a specifier string such
    as ``'<1.0'`` or ``'>=1.0.1,<2.0'``, or a tuple of them (any matches). ``None`` matches all.
    """

    __slots__ = (
        "_cls_types",
        "_specs",
        "_versions_seen",
        "cls_type",
        "extra",
        "func",
        "name",
        "topic",
        "version",
    )

    def __init__(
        self,
        func: CONSUMER_CALLABLE,
        topic: str,
        cls_type: str | Iterable[str] | None = None,
        version: str | Iterable[str] | None = None,
        name: str | None = None,
        **extra: Any,
    ) -> None:
        if not isinstance(topic, str) or not topic:
            raise ConfigurationError("topic must be a non-empty string")
        self.func = func
        self.topic = topic
        self.cls_type = cls_type
        self.version = version
        self.name = name or f"{func.__module__}.{getattr(func, '__qualname__', repr(func))}"
        self.extra: dict[str, Any] = extra
        cls_types = _as_tuple(cls_type, "cls_type")
        self._cls_types = None if cls_types is None else frozenset(cls_types)
        self._specs = _specifiers(version)
        # Whether each schema version string seen so far matches _specs: a stream carries a
        # handful of versions, and SpecifierSet.contains costs more than the rest of the match.
        self._versions_seen: dict[str, bool] = {}

    def __repr__(self) -> str:
        return (
            f"Consumer({self.name!r}, topic={self.topic!r}, cls_type={self.cls_type!r}, "
            f"version={self.version!r})"
        )

    def match_event(self, event: Mapping[str, Any]) -> bool:
        """True if the event's cls_type and schema version are ones this consumer wants."""
        if self._cls_types is not None:
            payload = event.get("payload")
            cls_type = payload.get("cls_type") if isinstance(payload, Mapping) else None
            if cls_type not in self._cls_types:
                return False
        if self._specs is not None:
            schema = event.get("schema")
            if not isinstance(schema, str):
                return False
            wanted = self._versions_seen.get(schema)
            if wanted is None:
                wanted = self._version_matches(schema)
                if len(self._versions_seen) < 256:  # versions come off the wire: bound it
                    self._versions_seen[schema] = wanted
            return wanted
        return True

    def _version_matches(self, schema: str) -> bool:
        version = _version(schema)
        if version is None or self._specs is None:
            return False
        return any(spec.contains(version, prereleases=True) for spec in self._specs)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.func(*args, **kwargs)


def consumer_config(
    topic: str,
    cls_type: str | Iterable[str] | None = None,
    version: str | Iterable[str] | None = None,
    **extra: Any,
) -> Callable[[CONSUMER_CALLABLE], CONSUMER_CALLABLE]:
    """Declare the decorated function a consumer; :meth:`ConsumerHub.scan` collects it.

    A bad ``version`` specifier raises :class:`~balog.exceptions.ConfigurationError` here, when
    the module is imported. The function is returned unchanged; stacking declares several
    consumers on one function.
    """
    name = extra.pop("name", None)

    def decorate(func: CONSUMER_CALLABLE) -> CONSUMER_CALLABLE:
        consumer = Consumer(func, topic, cls_type=cls_type, version=version, name=name, **extra)
        declared = list(getattr(func, _MARKER, ()))
        declared.append(consumer)
        setattr(func, _MARKER, declared)
        return func

    # Validate at declaration time even before decoration.
    Consumer(consumer_config, topic, cls_type=cls_type, version=version)
    return decorate


@runtime_checkable
class ConsumerOperator(Protocol):
    """How an engine calls consumers: any object with these two methods works."""

    def get_topic(self, consumer: Consumer) -> str:
        """The topic (queue name) to subscribe ``consumer`` to."""
        ...

    def process_event(self, consumer: Consumer, event: dict[str, Any]) -> Any:
        """Call ``consumer`` for ``event``; raising means the event was not processed."""
        ...


class DefaultConsumerOperator:
    """Subscribes to ``consumer.topic`` as written and calls ``consumer.func(event)``."""

    def get_topic(self, consumer: Consumer) -> str:
        return consumer.topic

    def process_event(self, consumer: Consumer, event: dict[str, Any]) -> Any:
        return consumer.func(event)


IgnoreRule = str | Callable[[str], bool]


class ConsumerHub:
    """A collection of consumers, filled by :meth:`add_consumer` and :meth:`scan`."""

    def __init__(self, consumers: Iterable[Consumer] = ()) -> None:
        self._consumers: list[Consumer] = []
        for consumer in consumers:
            self.add_consumer(consumer)

    @property
    def consumers(self) -> list[Consumer]:
        return list(self._consumers)

    def __iter__(self) -> Iterator[Consumer]:
        return iter(list(self._consumers))

    def __len__(self) -> int:
        return len(self._consumers)

    def __repr__(self) -> str:
        return f"ConsumerHub({len(self._consumers)} consumers)"

    def add_consumer(self, consumer: Consumer | CONSUMER_CALLABLE) -> None:
        """Add a :class:`Consumer`, or every consumer declared on a decorated function."""
        if isinstance(consumer, Consumer):
            found = [consumer]
        else:
            found = list(getattr(consumer, _MARKER, ()))
            if not found:
                raise ConfigurationError(f"{consumer!r} is not declared with consumer_config")
        for c in found:
            if c not in self._consumers:
                self._consumers.append(c)

    def scan(
        self,
        package_or_module: ModuleType | str,
        ignore: Iterable[IgnoreRule] | IgnoreRule | None = None,
    ) -> list[Consumer]:
        """Import a module, or a package and all its submodules, and add declared consumers.

        Only functions defined in the scanned modules count (an import of a consumer from
        elsewhere is not a second declaration). ``ignore`` takes module names (a name skips that
        module and everything below it; a name starting with ``.`` is relative to the package) or
        callables given the dotted module name. Returns the consumers added.
        """
        module = (
            importlib.import_module(package_or_module)
            if isinstance(package_or_module, str)
            else package_or_module
        )
        rules = self._ignore_rules(module.__name__, ignore)
        modules = [module]
        if hasattr(module, "__path__"):
            # Each module is imported here as it is listed, so an ImportError surfaces as itself.
            for info in pkgutil.walk_packages(module.__path__, module.__name__ + "."):
                if self._ignored(info.name, rules):
                    continue
                modules.append(importlib.import_module(info.name))
        before = len(self._consumers)
        for mod in modules:
            if self._ignored(mod.__name__, rules) and mod is not module:
                continue
            for value in list(vars(mod).values()):
                declared = getattr(value, _MARKER, None)
                if declared and getattr(value, "__module__", None) == mod.__name__:
                    for consumer in declared:
                        if consumer not in self._consumers:
                            self._consumers.append(consumer)
        return self._consumers[before:]

    @staticmethod
    def _ignore_rules(base: str, ignore: Iterable[IgnoreRule] | IgnoreRule | None) -> list[Any]:
        if ignore is None:
            return []
        items = [ignore] if isinstance(ignore, str) or callable(ignore) else list(ignore)
        return [base + r if isinstance(r, str) and r.startswith(".") else r for r in items]

    @staticmethod
    def _ignored(name: str, rules: list[Any]) -> bool:
        for rule in rules:
            if callable(rule):
                if rule(name):
                    return True
            elif name == rule or name.startswith(rule + "."):
                return True
        return False

    def route(self, event: Mapping[str, Any]) -> list[Consumer]:
        """Every consumer whose conditions the event meets (on any topic)."""
        return [c for c in self._consumers if c.match_event(event)]

    def by_topic(self, operator: ConsumerOperator | None = None) -> dict[str, list[Consumer]]:
        """The consumers grouped by the topic ``operator.get_topic`` gives each."""
        op = operator or DefaultConsumerOperator()
        topics: dict[str, list[Consumer]] = {}
        for consumer in self._consumers:
            topics.setdefault(op.get_topic(consumer), []).append(consumer)
        return topics
