"""Finding engines and transports by name through entry points (stevedore)."""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any

from balog._options import check_known
from balog._text import clip
from balog.exceptions import ConfigurationError, PluginLoadError, PluginNotFound

ENGINES = "balog.engines"
TRANSPORTS = "balog.transports"

if TYPE_CHECKING:
    from importlib import metadata


def installed(namespace: str) -> list[str]:
    """Names registered in ``namespace``, without importing any plugin."""
    from importlib import metadata  # imported on use: it alone costs `import balog` 25 ms

    return sorted({ep.name for ep in metadata.entry_points(group=namespace)})


def entry_point(namespace: str, name: str) -> metadata.EntryPoint | None:
    from importlib import metadata

    for ep in metadata.entry_points(group=namespace):
        if ep.name == name:
            return ep
    return None


def load(namespace: str, name: str) -> Any:
    """Import the plugin ``name`` of ``namespace``; raise a :class:`PluginError` saying why not."""
    from stevedore import DriverManager, ExtensionManager
    from stevedore.exception import NoMatches

    ep = entry_point(namespace, name)
    if ep is None:
        raise PluginNotFound(namespace, name, installed(namespace))
    # stevedore keeps entry points per namespace on the ExtensionManager class; drop that so the
    # loader sees exactly what available() sees (plugins are loaded at startup, so this is cheap).
    ExtensionManager.ENTRY_POINT_CACHE.pop(namespace, None)
    failures: list[BaseException] = []

    def on_failure(manager: Any, entrypoint: Any, exc: BaseException) -> None:
        failures.append(exc)

    try:
        manager = DriverManager(
            namespace,
            name,
            invoke_on_load=False,
            on_load_failure_callback=on_failure,
        )
    except NoMatches as exc:
        cause = failures[0] if failures else exc
        package = ep.dist.name if ep.dist is not None else "unknown package"
        raise PluginLoadError(
            namespace, name, f"{ep.value} from {package}", clip(f"{type(cause).__name__}: {cause}")
        ) from cause
    return manager.driver


def parameters(factory: Any) -> tuple[frozenset[str], bool]:
    """The keyword names ``factory`` takes (not ``*args``), and whether it also takes any other
    (``**options``, or a signature that cannot be read)."""
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):
        return frozenset(), True
    values = signature.parameters.values()
    names = frozenset(p.name for p in values if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))
    return names, any(p.kind is p.VAR_KEYWORD for p in values)


def url_key(factory: Any) -> str:
    """The option under which ``factory`` takes a backend URL: ``url``, or ``endpoint_url``.

    Engines and transports built on an HTTP API (SQS) name it ``endpoint_url``; the rest
    ``url``. A named engine that passes its options on to its ``transport_class`` takes it as
    that transport does. A factory that takes neither gets ``url`` and reports it as an unknown
    option.
    """
    names, _ = parameters(factory)
    if "url" in names:
        return "url"
    if "endpoint_url" in names:
        return "endpoint_url"
    transport_class = getattr(factory, "transport_class", None)
    if transport_class is not None:
        return url_key(transport_class)
    return "url"


def backend_factory(name: str) -> Any:
    """The class registered as engine ``name``, else as transport ``name`` (run on the
    generic engine), for reading its signature; ``None`` when neither is installed."""
    if entry_point(ENGINES, name) is not None:
        return load(ENGINES, name)
    if entry_point(TRANSPORTS, name) is not None:
        return load(TRANSPORTS, name)
    return None


def engine_only_options(engine: str) -> set[str]:
    """Option names engine ``engine`` takes and its transport does not (a producer or
    ``balog send`` leaves them out): the generic engine's, and a named engine's own keywords that
    its ``transport_class`` does not take (``SQSEngine(polling_period=...)``)."""
    from balog.engines.base import TransportEngine
    from balog.exceptions import PluginError

    names = set(TransportEngine.option_names())
    if entry_point(ENGINES, engine) is not None:
        try:
            factory = load(ENGINES, engine)
        except PluginError:
            return names  # the transport may still load; its own errors are what matter there
        transport_class = getattr(factory, "transport_class", None)
        own = set(parameters(factory)[0]) - {"self", "hub", "consumer_operator"}
        names |= own - (set(parameters(transport_class)[0]) if transport_class else set())
    return names - {"url", "endpoint_url", "path"}


def build(factory: Any, what: str, **options: Any) -> Any:
    """Call ``factory(**options)``, turning an unknown or missing option into a clear error."""
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):
        signature = None
    if signature is not None:
        parameters = signature.parameters.values()
        if not any(p.kind is p.VAR_KEYWORD for p in parameters):
            keywords = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
            check_known(what, options, {p.name for p in parameters if p.kind in keywords})
        try:
            signature.bind(**options)
        except TypeError as exc:
            raise ConfigurationError(f"bad options for {what}: {exc}") from exc
    try:
        return factory(**options)
    except TypeError as exc:
        # Backends that pass **options on to their base class only learn of an unknown
        # option there; that is still a configuration mistake, not a bug.
        if "unexpected keyword argument" in str(exc):
            raise ConfigurationError(f"bad options for {what}: {exc}") from exc
        raise


def coerce_option(value: Any, *, what: str = "option value") -> Any:
    """Turn the strings of settings files, environment variables and ``--option`` into values.

    ``10`` and ``0.5`` become numbers, ``true/yes/on`` and ``false/no/off`` booleans, and text
    that starts with ``{`` or ``[`` is read as JSON (``{"x-queue-type": "quorum"}``); anything
    else is returned as it is. JSON that does not parse is a
    :class:`~balog.exceptions.ConfigurationError` naming ``what`` (never quoting the value,
    which may be a secret).
    """
    if not isinstance(value, str):
        return value
    stripped = value.strip()
    if stripped[:1] in ("{", "["):
        import json

        try:
            return json.loads(stripped)
        except json.JSONDecodeError as exc:
            raise ConfigurationError(
                f"{what} starts with {stripped[0]!r} but is not valid JSON: {exc.msg} at "
                f"character {exc.pos + 1}; write a JSON object or array, "
                'e.g. {"x-max-length": 1000}'
            ) from exc
    lowered = stripped.lower()
    if lowered in {"true", "yes", "on"}:
        return True
    if lowered in {"false", "no", "off"}:
        return False
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value
