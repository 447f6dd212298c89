"""The SQLite engine: the embedded default, running a hub on a database file."""

from __future__ import annotations

import os
from typing import Any

from balog.consumers import ConsumerHub, ConsumerOperator
from balog.engines.base import TransportEngine
from balog.transports.sqlite import SQLiteTransport

__all__ = ["SQLiteEngine"]


class SQLiteEngine(TransportEngine):
    """A :class:`~balog.engines.base.TransportEngine` on a :class:`SQLiteTransport`.

    ``path`` (or ``url="sqlite:///path"``) is the database file that producers write to; any
    number of engines in any number of processes on the machine may share it and split the work.
    Every other :class:`~balog.transports.sqlite.SQLiteTransport` option (``poll_interval``,
    ``timeout``, ``synchronous``, ``max_body_size``, ...) goes to the transport, which also takes
    the engine's ``lease``; the rest are the engine's (``max_attempts``, ``backoff``, ...).
    """

    transport_class = SQLiteTransport

    def __init__(
        self,
        hub: ConsumerHub,
        consumer_operator: ConsumerOperator | None = None,
        path: str | os.PathLike[str] | None = None,
        **options: Any,
    ) -> None:
        if path is not None:
            options["path"] = path
        super().__init__(hub, consumer_operator, **options)

    @property
    def path(self) -> str:
        """The database file, as an absolute path."""
        assert isinstance(self.transport, SQLiteTransport)
        return self.transport.path
