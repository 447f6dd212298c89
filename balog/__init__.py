"""balog: structured event logging and event consumption over pluggable transports."""

from __future__ import annotations

from balog.events import FACILITY_VERSION, EventDict
from balog.handler import EventFormatter, EventHandler
from balog.producer import BalogLogger, configure, flush, get_logger

__all__ = [
    "FACILITY_VERSION",
    "BalogLogger",
    "EventDict",
    "EventFormatter",
    "EventHandler",
    "__version__",
    "configure",
    "flush",
    "get_logger",
]

__version__ = "0.1.0.dev0"
