"""balog-postgres: the conformance suite and the plugin wiring, on a real PostgreSQL server.

Set BALOG_POSTGRES_TEST_DSN to point elsewhere; without a server the tests skip, except under CI
(``CI`` set), where they fail.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from balog_postgres import PostgresTransport

from balog.consumers import Consumer, ConsumerHub
from balog.engines import TransportEngine, create_engine
from balog.events import encode, new_event
from balog.exceptions import (
    ConfigurationError,
    LeaseExpired,
    TransportConnectionError,
    TransportError,
)
from balog.testing import EngineHarness
from balog.testing.conformance import TransportConformance
from balog.transports import Transport, available, create_transport

DSN = os.environ.get("BALOG_POSTGRES_TEST_DSN", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture(scope="module")
def dsn() -> str:
    """The test database; skip without a server (fail under CI)."""
    parts = urlsplit(DSN)
    try:
        socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 5432), 1).close()
    except OSError:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is not reachable at {parts.hostname}:{parts.port}")
        pytest.skip("PostgreSQL is not reachable")
    return DSN


@pytest.fixture
def table() -> Iterator[str]:
    """A fresh pair of tables for one test, dropped afterwards."""
    name = f"balog_test_{uuid.uuid4().hex[:10]}"
    yield name
    import psycopg

    with psycopg.connect(DSN, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {name}, {name}_dead")


class TestPostgresConformance(TransportConformance):
    """The shipped conformance suite, on PostgreSQL."""

    lease = 1.0

    @pytest.fixture(autouse=True)
    def _database(self, dsn: str, table: str) -> None:
        self.dsn = dsn
        self.table = table

    def make_transport(self) -> Transport:
        return PostgresTransport(self.dsn, table=self.table, max_body_size=256 * 1024)


def test_found_by_name_once_installed(dsn: str, table: str) -> None:
    """create_transport('postgres') finds the transport through its entry point."""
    assert "postgres" in available()
    transport = create_transport("postgres", dsn=dsn, table=table)
    try:
        assert isinstance(transport, PostgresTransport)
        transport.send("by-name", [b"hello"])
        assert [d.body for d in transport.receive("by-name", wait=1)] == [b"hello"]
    finally:
        transport.close()


def test_generic_engine_runs_it_by_name(dsn: str, table: str) -> None:
    """create_engine('postgres', ...) runs a hub on the generic TransportEngine."""
    seen: list[int] = []
    hub = ConsumerHub([Consumer(lambda e: seen.append(e["payload"]["n"]), "orders")])
    engine = create_engine("postgres", hub=hub, dsn=dsn, table=table, wait=0.2)
    assert isinstance(engine, TransportEngine)
    bodies = [encode(new_event("shop", {"cls_type": "order", "n": n})) for n in range(5)]
    engine.transport.send("orders", bodies)
    try:
        with EngineHarness(engine, raise_errors=True) as harness:
            harness.wait_for_events(5, timeout=10)
    finally:
        engine.close()
    assert seen == [0, 1, 2, 3, 4]


def test_dead_letters_are_rows_that_can_be_replayed(dsn: str, table: str) -> None:
    """A dead-lettered message keeps body, headers, reason and count, and replays to its topic."""
    with PostgresTransport(dsn, table=table) as t:
        t.send("jobs", [b"poison"], headers={"trace": "abc"})
        (d,) = t.receive("jobs", wait=1)
        t.nack(d)
        (d,) = t.receive("jobs", wait=1)
        t.dead_letter(d, "consumer raised ValueError")
        (letter,) = t.dead_letters("jobs")
        assert (
            letter.body,
            letter.reason,
            letter.receive_count,
        ) == (b"poison", "consumer raised ValueError", 2)
        assert t.receive("jobs", wait=0) == []
        assert t.replay_dead_letters("jobs") == 1
        assert t.dead_letters("jobs") == []
        (again,) = t.receive("jobs", wait=1)
        assert (again.body, again.headers["trace"], again.receive_count) == (b"poison", "abc", 1)


def test_a_lost_lease_cannot_settle_another_receivers_row(dsn: str, table: str) -> None:
    """After a lease expired and another receiver took the row, the old holder's ack fails."""
    with PostgresTransport(dsn, table=table) as a, PostgresTransport(dsn, table=table) as b:
        a.send("leases", [b"x"])
        (first,) = a.receive("leases", wait=1, lease=0.2)
        (second,) = b.receive("leases", wait=2, lease=30)
        with pytest.raises(LeaseExpired):
            a.ack(first)
        b.ack(second)


def test_release_does_not_count_as_an_attempt(dsn: str, table: str) -> None:
    """release() puts the row back at once with its receive count unchanged."""
    with PostgresTransport(dsn, table=table) as t:
        t.send("released", [b"x"])
        (d,) = t.receive("released", wait=1)
        t.release(d)
        (again,) = t.receive("released", wait=1)
        assert again.receive_count == 1


def test_unreachable_server_is_a_connection_error_without_the_password(table: str) -> None:
    """A server that is not there raises TransportConnectionError; the password never shows."""
    t = PostgresTransport("postgresql://app:sekret@127.0.0.1:1/app", table=table)
    with pytest.raises(TransportConnectionError) as info:
        t.send("x", [b"y"])
    assert "sekret" not in str(info.value)
    assert "sekret" not in repr(t)
    t.close()


def test_bad_table_name_is_refused() -> None:
    """Table names are plain identifiers, never SQL."""
    with pytest.raises(ConfigurationError, match="identifier"):
        PostgresTransport(DSN, table="x; DROP TABLE y")


def test_closed_transport_refuses_work(dsn: str, table: str) -> None:
    """Using a closed transport raises a TransportError rather than reconnecting."""
    t = PostgresTransport(dsn, table=table)
    t.close()
    with pytest.raises(TransportError, match="closed"):
        t.send("x", [b"y"])
