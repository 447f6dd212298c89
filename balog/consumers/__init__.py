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
import inspect
import pkgutil
from collections.abc import Callable, Iterable, Iterator, Mapping
from types import ModuleType
from typing import Any, Protocol, TypeVar, runtime_checkable

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

from balog._options import check_known, unknown_option
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

_F = TypeVar("_F", bound=CONSUMER_CALLABLE)


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


def _specifier(texts: tuple[str, ...] | None) -> SpecifierSet | None:
    """Every condition of ``texts`` at once: a tuple means "and", as a comma inside one does."""
    if texts is None:
        return None
    combined = SpecifierSet()
    for text in texts:
        try:
            combined &= SpecifierSet(text)
        except InvalidSpecifier as exc:
            raise ConfigurationError(f"invalid version specifier {text!r}: {exc}") from exc
    return combined


def _unwrap(func: Any) -> Any:
    """What actually runs when ``func`` is called: partials unwrapped, an object's ``__call__``."""
    while isinstance(func, functools.partial):
        func = func.func
    if isinstance(func, Consumer):
        return _unwrap(func.func)
    if inspect.isfunction(func) or inspect.ismethod(func) or isinstance(func, type):
        return func
    call = getattr(type(func), "__call__", None)  # noqa: B004 - the method, not callable()
    if inspect.isfunction(call) or inspect.ismethod(call):
        return call
    return func


def _check_callable(func: Any) -> bool:
    """Whether ``func`` is a coroutine function; raise for what a consumer cannot be.

    A generator function, sync or async, would be "called" without its body ever running, and
    its events acked; refusing it here is the only way that cannot happen silently.
    """
    if not callable(func):
        raise ConfigurationError(f"a consumer must be callable, not {type(func).__name__}")
    target = _unwrap(func)
    if inspect.isasyncgenfunction(target):
        raise ConfigurationError(
            f"{func!r} is an async generator function; a consumer must be a function (def or "
            "async def) that processes the event, not one that yields"
        )
    if inspect.isgeneratorfunction(target):
        raise ConfigurationError(
            f"{func!r} is a generator function; its body would never run: a consumer must "
            "process the event, not yield"
        )
    return inspect.iscoroutinefunction(target) or inspect.iscoroutinefunction(func)


class Consumer:
    """A function that wants events of some ``cls_type`` and schema ``version`` from a ``topic``.

    ``cls_type`` is a string or a tuple of them (any matches); ``version`` a specifier string such
    as ``'<1.0'``, or a tuple of them that must all hold: ``('>=1.0.1', '<2.0')`` means the same as
    ``'>=1.0.1,<2.0'``. ``None`` matches all. Both are kept as tuples (``'eggs'`` becomes
    ``('eggs',)``), as balog 1.x kept them. ``func`` may be ``async def`` (:attr:`is_async`).
    ``extra`` holds application data about the consumer, for the operator to read; ``name``
    (default ``module.qualname`` of ``func``) appears in dead-letter reasons and ``balog
    describe``. Any other keyword is a :class:`~balog.exceptions.ConfigurationError`.
    """

    __slots__ = (
        "_cls_types",
        "_versions_seen",
        "cls_type",
        "extra",
        "func",
        "is_async",
        "name",
        "specifier",
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
        *,
        extra: Mapping[str, Any] | None = None,
        **unknown: Any,
    ) -> None:
        if unknown:
            check_known(type(self).__name__, unknown, _CONSUMER_OPTIONS)
        if not isinstance(topic, str) or not topic:
            raise ConfigurationError("topic must be a non-empty string")
        if extra is not None and not isinstance(extra, Mapping):
            raise ConfigurationError(f"extra must be a mapping, not {type(extra).__name__}")
        self.is_async: bool = _check_callable(func)
        """True if calling ``func`` returns an awaitable (``async def``, a partial of one, or an
        object whose ``__call__`` is one); computed once, when declared."""
        self.func = func
        self.topic = topic
        self.cls_type: tuple[str, ...] | None = _as_tuple(cls_type, "cls_type")
        self.version: tuple[str, ...] | None = _as_tuple(version, "version")
        self.specifier: SpecifierSet | None = _specifier(self.version)
        """Every condition of ``version`` in one specifier set (``None``: any version)."""
        self.name = name or f"{func.__module__}.{getattr(func, '__qualname__', repr(func))}"
        self.extra: dict[str, Any] = dict(extra or {})
        self._cls_types = None if self.cls_type is None else frozenset(self.cls_type)
        # Whether each schema version string seen so far matches: a stream carries a handful
        # of versions, and SpecifierSet.contains costs more than the rest of the match.
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
            cls_type = (
                payload.get("cls_type")
                if type(payload) is dict or isinstance(payload, Mapping)
                else None
            )
            if cls_type not in self._cls_types:
                return False
        if self.specifier is not None:
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
        if version is None or self.specifier is None:
            return False
        return self.specifier.contains(version, prereleases=True)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.func(*args, **kwargs)


_CONSUMER_OPTIONS = ("topic", "cls_type", "version", "name", "extra")
"""The keywords :class:`Consumer` takes besides ``func``."""


def _placeholder(event: Any) -> None:
    """Stands for the function while a declaration is checked, before it decorates one."""


def _keywords(consumer_cls: type[Consumer]) -> tuple[str, ...] | None:
    """The keywords ``consumer_cls`` takes besides ``func`` (``None``: any, it has ``**``)."""
    if consumer_cls is Consumer:
        return _CONSUMER_OPTIONS
    try:
        parameters = list(inspect.signature(consumer_cls).parameters.values())
    except (TypeError, ValueError):
        return None
    if any(p.kind is p.VAR_KEYWORD for p in parameters):
        return None
    return tuple(
        p.name for p in parameters[1:] if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    )


def consumer_config(
    *args: Any,
    consumer_cls: type[Consumer] = Consumer,
    **kwargs: Any,
) -> Callable[[_F], _F]:
    """Declare the decorated function a consumer; :meth:`ConsumerHub.scan` collects it.

    Takes :class:`Consumer`'s arguments after ``func``: ``topic``, ``cls_type``, ``version``,
    ``name`` and ``extra``. ``consumer_cls``, a :class:`Consumer` subclass, builds the consumer
    instead, as ``consumer_cls(func, *args, **kwargs)``, and may take more keywords. A keyword
    neither takes, or a bad ``version`` specifier, raises
    :class:`~balog.exceptions.ConfigurationError` here, when the module is imported. The function
    is returned unchanged; stacking declares several consumers on one function.
    """
    if not isinstance(consumer_cls, type) or not issubclass(consumer_cls, Consumer):
        raise ConfigurationError(
            f"consumer_cls must be a subclass of balog.consumers.Consumer, not {consumer_cls!r}"
        )
    valid = _keywords(consumer_cls)
    if valid is not None:
        for keyword in kwargs:
            if keyword not in valid:
                raise unknown_option("consumer_config", keyword, valid)
    try:
        inspect.signature(consumer_cls).bind(_placeholder, *args, **kwargs)
    except TypeError as exc:  # a missing topic, too many positional arguments
        raise ConfigurationError(f"consumer_config: {exc}") from exc
    except ValueError:  # pragma: no cover - a class whose signature cannot be read
        pass
    if consumer_cls is Consumer:
        Consumer(_placeholder, *args, **kwargs)  # every value checked now, before decoration

    def decorate(func: _F) -> _F:
        consumer = consumer_cls(func, *args, **kwargs)
        declared = list(getattr(func, _MARKER, ()))
        declared.append(consumer)
        setattr(func, _MARKER, declared)
        return func

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
    """Subscribes to ``consumer.topic`` as written and calls ``consumer.func(event)``.

    Its methods are static, so the class itself works as an operator too, as in balog 1.x.
    ``process_event`` returns what the function returns: for an ``async def`` consumer, the
    awaitable, which the engine awaits.
    """

    @staticmethod
    def get_topic(consumer: Consumer) -> str:
        return consumer.topic

    @staticmethod
    def process_event(consumer: Consumer, event: dict[str, Any]) -> Any:
        return consumer.func(event)


IgnoreRule = str | Callable[[str], bool]


class ConsumerHub:
    """A collection of consumers, filled by :meth:`add_consumer` and :meth:`scan`."""

    def __init__(self, consumers: Iterable[Consumer] = ()) -> None:
        self.consumers: list[Consumer] = []
        """The consumers, in the order added: a plain list, as in balog 1.x."""
        for consumer in consumers:
            self.add_consumer(consumer)

    def __iter__(self) -> Iterator[Consumer]:
        return iter(list(self.consumers))

    def __len__(self) -> int:
        return len(self.consumers)

    def __repr__(self) -> str:
        return f"ConsumerHub({len(self.consumers)} consumers)"

    def add_consumer(self, consumer: Consumer | CONSUMER_CALLABLE) -> None:
        """Add a :class:`Consumer`, or every consumer declared on a decorated function."""
        if isinstance(consumer, Consumer):
            found = [consumer]
        else:
            found = list(getattr(consumer, _MARKER, ()))
            if not found:
                raise ConfigurationError(f"{consumer!r} is not declared with consumer_config")
        for c in found:
            if c not in self.consumers:
                self.consumers.append(c)

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
        before = len(self.consumers)
        for mod in modules:
            if self._ignored(mod.__name__, rules) and mod is not module:
                continue
            for value in list(vars(mod).values()):
                declared = getattr(value, _MARKER, None)
                if declared and getattr(value, "__module__", None) == mod.__name__:
                    for consumer in declared:
                        if consumer not in self.consumers:
                            self.consumers.append(consumer)
        return self.consumers[before:]

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
        """Every consumer whose conditions the event meets (on any topic), in a list (balog
        1.x gave a generator: iterate it the same way)."""
        return [c for c in self.consumers if c.match_event(event)]

    def by_topic(self, operator: ConsumerOperator | None = None) -> dict[str, list[Consumer]]:
        """The consumers grouped by the topic ``operator.get_topic`` gives each."""
        op = operator or DefaultConsumerOperator()
        topics: dict[str, list[Consumer]] = {}
        for consumer in self.consumers:
            topics.setdefault(op.get_topic(consumer), []).append(consumer)
        return topics
