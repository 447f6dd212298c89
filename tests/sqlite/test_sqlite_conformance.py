"""The shipped conformance suite over the sqlite transport, and over the sqlite engine."""

from __future__ import annotations

import sqlite3
import time
import uuid
from pathlib import Path

import pytest

from balog.consumers import ConsumerHub
from balog.engines.base import Backoff, Engine
from balog.engines.sqlite import SQLiteEngine
from balog.testing.conformance import TransportConformance
from balog.transports.base import Transport
from balog.transports.sqlite import SQLiteTransport


class TestSQLiteTransport(TransportConformance):
    """The sqlite transport on a fresh database file, on the generic TransportEngine."""

    lease = 0.5

    @pytest.fixture(autouse=True)
    def _database(self, tmp_path: Path) -> None:
        self.path = tmp_path / "conformance.sqlite3"

    def make_transport(self) -> Transport:
        return SQLiteTransport(self.path)

    def push_foreign(self, transport: Transport, topic: str) -> bytes:
        """A row inserted with plain sqlite3, as a cron job or a shell script would: the body
        as TEXT, not JSON, and headers that are not JSON either."""
        transport.verify(topic)  # the table exists, as once any balog process has started
        text = f"foreign row from a shell script {uuid.uuid4().hex}"
        conn = sqlite3.connect(self.path)
        try:
            now = time.time()
            conn.execute(
                "INSERT INTO balog_messages (topic, body, headers, visible_after, sent_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (topic, text, "origin=cron", now, now),
            )
            conn.commit()
        finally:
            conn.close()
        return text.encode()


class TestSQLiteEngine(TestSQLiteTransport):
    """The same file under SQLiteEngine, the default engine."""

    def make_engine(
        self, hub: ConsumerHub, transport: Transport, *, max_attempts: int, batch_size: int
    ) -> Engine:
        return SQLiteEngine(
            hub,
            path=self.path,
            max_attempts=max_attempts,
            batch_size=batch_size,
            backoff=Backoff(base=0.05, factor=1.0, jitter=0.0),
            wait=0.2,
            lease=self.engine_lease,
            handle_signals=False,
        )
