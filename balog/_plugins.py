"""Finding engines and transports by name through entry points (stevedore)."""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any

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


def build(factory: Any, what: str, **options: Any) -> Any:
    """Call ``factory(**options)``, turning an unknown or missing option into a clear error."""
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):
        signature = None
    if signature is not None:
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
