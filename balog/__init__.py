"""balog: structured event logging and event consumption over pluggable transports."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from balog.events import FACILITY_VERSION, EventDict
from balog.handler import EventFormatter, EventHandler
from balog.producer import BalogLogger, configure, flush, get_logger

if TYPE_CHECKING:
    from balog.consumers import consumer_config

__all__ = [
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

__version__ = "0.1.0.dev0"

# Imported on first use, as balog 1.x offered them at the top level (``balog.consumer_config``,
# ``balog.consumers``, ``balog.engines``), without making every producer pay for importing the
# consumer side (``packaging``'s specifiers alone cost ``import balog`` about 15 ms).
_LAZY = {"consumer_config": "balog.consumers", "consumers": None, "engines": None}

if not TYPE_CHECKING:

    def __getattr__(name: str) -> Any:
        if name not in _LAZY:
            raise AttributeError(f"module 'balog' has no attribute {name!r}")
        module = importlib.import_module(_LAZY[name] or f"balog.{name}")
        return module if _LAZY[name] is None else getattr(module, name)
