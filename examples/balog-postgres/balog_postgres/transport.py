"""PostgreSQL as a balog transport: one table of messages, one of dead letters.

Each message is a row. Receiving leases rows the way SQS leases messages: one statement picks the
oldest visible rows of the topic with ``SELECT ... FOR UPDATE SKIP LOCKED`` (so concurrent
receivers never block on, or take, each other's rows) and, in the same statement, moves their
``visible_after`` forward by the lease, counts the receive and stamps a fresh lease token. A row
whose lease runs out is simply visible again. Ack deletes the row, nack moves ``visible_after``,
dead-lettering moves the row to the dead-letter table in one statement: every operation that
settles a delivery checks its lease token, so a receiver whose lease was lost cannot touch a row
that another receiver holds now.

Tables (created on first use unless ``create_tables=False``)::

    balog_messages(id bigserial, topic text, body bytea, headers jsonb, receive_count int,
                   visible_after timestamptz, lease_token uuid, created_at timestamptz)
    balog_dead_letters(id bigserial, topic text, body bytea, headers jsonb, reason text,
                       receive_count int, message_id text, dead_at timestamptz)
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from balog.exceptions import (
    AuthenticationError,
    ConfigurationError,
    LeaseExpired,
    TransportConnectionError,
    TransportError,
)
from balog.transports import Capabilities, DeadLetter, Delivery, Transport

__all__ = ["PostgresTransport"]

DEFAULT_MAX_BODY_SIZE = 1024 * 1024
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _clip(text: str, limit: int = 200) -> str:
    text = _CONTROL.sub("?", text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class PostgresTransport(Transport):
    """A :class:`balog.transports.Transport` on a PostgreSQL database.

    ``dsn`` (or ``url``, the same thing) is a libpq connection string or URI. ``table`` and
    ``dead_letter_table`` name the tables; ``lease`` is the default lease in seconds;
    ``max_body_size`` the largest body accepted; ``poll_interval`` the longest pause between two
    looks at an empty topic while a receive waits. One connection per transport, in autocommit
    mode, shared by the engine's threads under a lock; it is reopened after a connection error.
    """

    def __init__(
        self,
        dsn: str | None = None,
        *,
        url: str | None = None,
        table: str = "balog_messages",
        dead_letter_table: str | None = None,
        lease: float = 30.0,
        max_body_size: int = DEFAULT_MAX_BODY_SIZE,
        poll_interval: float = 0.2,
        connect_timeout: float = 5.0,
        create_tables: bool = True,
    ) -> None:
        if dsn is not None and url is not None and dsn != url:
            raise ConfigurationError("give dsn or url, not both")
        conninfo = dsn if dsn is not None else url
        if not conninfo:
            raise ConfigurationError("PostgresTransport needs dsn= (or url=)")
        dead_letter_table = dead_letter_table or f"{table}_dead"
        for name in (table, dead_letter_table):
            if not _IDENTIFIER.match(name):
                raise ConfigurationError(f"{name!r} is not a plain SQL identifier")
        try:
            params = psycopg.conninfo.conninfo_to_dict(conninfo)
        except psycopg.ProgrammingError as exc:
            raise ConfigurationError("the PostgreSQL dsn is not a valid connection string") from exc
        self._conninfo = conninfo
        self._where = f"{params.get('host', 'localhost')}/{params.get('dbname', '')}"
        self.table = table
        self.dead_letter_table = dead_letter_table
        self.default_lease = lease
        self.poll_interval = poll_interval
        self.connect_timeout = connect_timeout
        self.create_tables = create_tables
        self.capabilities = Capabilities(
            max_body_size=max_body_size,
            lease_expiry=True,
            lease_extension=True,
            receive_count=True,
            ordering=True,
            delay=True,
        )
        self._lock = threading.RLock()
        self._conn: psycopg.Connection[Any] | None = None
        self._closed = False
        self._t = sql.Identifier(table)
        self._dt = sql.Identifier(dead_letter_table)

    def __repr__(self) -> str:
        return f"PostgresTransport({self._where!r}, table={self.table!r})"

    # -- connection and errors ------------------------------------------------------------

    def _connect(self) -> psycopg.Connection[Any]:
        if self._closed:
            raise TransportConnectionError("the PostgreSQL transport is closed")
        if self._conn is not None and not self._conn.closed:
            return self._conn
        conn = psycopg.connect(
            self._conninfo, autocommit=True, connect_timeout=max(1, int(self.connect_timeout))
        )
        if self.create_tables:
            self._create_tables(conn)
        self._conn = conn
        return conn

    def _create_tables(self, conn: psycopg.Connection[Any]) -> None:
        with conn.transaction():
            # Concurrent CREATE ... IF NOT EXISTS can still collide; serialise them.
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (self.table,))
            conn.execute(
                sql.SQL(
                    """CREATE TABLE IF NOT EXISTS {t} (
                        id bigserial PRIMARY KEY,
                        topic text NOT NULL,
                        body bytea NOT NULL,
                        headers jsonb NOT NULL DEFAULT '{{}}',
                        receive_count integer NOT NULL DEFAULT 0,
                        visible_after timestamptz NOT NULL DEFAULT clock_timestamp(),
                        lease_token uuid,
                        created_at timestamptz NOT NULL DEFAULT clock_timestamp())"""
                ).format(t=self._t)
            )
            conn.execute(
                sql.SQL("CREATE INDEX IF NOT EXISTS {i} ON {t} (topic, visible_after, id)").format(
                    i=sql.Identifier(f"{self.table}_ready"), t=self._t
                )
            )
            conn.execute(
                sql.SQL(
                    """CREATE TABLE IF NOT EXISTS {t} (
                        id bigserial PRIMARY KEY,
                        topic text NOT NULL,
                        body bytea NOT NULL,
                        headers jsonb NOT NULL DEFAULT '{{}}',
                        reason text NOT NULL,
                        receive_count integer NOT NULL,
                        message_id text NOT NULL,
                        dead_at timestamptz NOT NULL DEFAULT clock_timestamp())"""
                ).format(t=self._dt)
            )
            conn.execute(
                sql.SQL("CREATE INDEX IF NOT EXISTS {i} ON {t} (topic, id)").format(
                    i=sql.Identifier(f"{self.dead_letter_table}_topic"), t=self._dt
                )
            )

    @contextlib.contextmanager
    def _session(self, operation: str) -> Iterator[psycopg.Connection[Any]]:
        """The connection, under the lock, with psycopg errors turned into balog's."""
        with self._lock:
            try:
                yield self._connect()
            except psycopg.OperationalError as exc:
                self._drop()
                state = getattr(exc, "sqlstate", None) or ""
                message = f"PostgreSQL {operation} on {self._where} failed: {_clip(str(exc))}"
                if state.startswith("28") or "authentication failed" in str(exc):
                    raise AuthenticationError(message) from exc
                raise TransportConnectionError(message) from exc
            except psycopg.Error as exc:
                if self._conn is not None and self._conn.broken:
                    self._drop()
                raise TransportError(
                    f"PostgreSQL {operation} on {self._where} failed: "
                    f"{type(exc).__name__}: {_clip(str(exc))}"
                ) from exc

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except psycopg.Error:
                pass

    # -- the contract ---------------------------------------------------------------------

    def send(
        self,
        topic: str,
        bodies: Sequence[bytes],
        *,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.check_body_sizes(bodies)
        if not bodies:
            return
        query = sql.SQL("INSERT INTO {t} (topic, body, headers) VALUES (%s, %s, %s)").format(
            t=self._t
        )
        header_value = Jsonb(dict(headers or {}))
        with self._session("send") as conn, conn.transaction(), conn.cursor() as cur:
            cur.executemany(query, [(topic, bytes(body), header_value) for body in bodies])

    def receive(
        self,
        topic: str,
        *,
        max_messages: int = 10,
        wait: float = 1.0,
        lease: float | None = None,
    ) -> list[Delivery]:
        lease = self.default_lease if lease is None else lease
        query = sql.SQL(
            """WITH picked AS (
                   SELECT id FROM {t}
                   WHERE topic = %(topic)s AND visible_after <= clock_timestamp()
                   ORDER BY id
                   LIMIT %(limit)s
                   FOR UPDATE SKIP LOCKED)
               UPDATE {t} AS m
               SET receive_count = m.receive_count + 1,
                   visible_after = clock_timestamp() + make_interval(secs => %(lease)s),
                   lease_token = gen_random_uuid()
               FROM picked WHERE m.id = picked.id
               RETURNING m.id, m.body, m.headers, m.receive_count, m.lease_token"""
        ).format(t=self._t)
        params = {"topic": topic, "limit": max(1, max_messages), "lease": float(lease)}
        deadline = time.monotonic() + max(wait, 0.0)
        pause = 0.02
        while True:
            with self._session("receive") as conn:
                rows = conn.execute(query, params).fetchall()
            if rows:
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            time.sleep(min(pause, remaining))
            pause = min(pause * 2, self.poll_interval)
        rows.sort(key=lambda row: row[0])
        return [
            Delivery(
                topic=topic,
                body=bytes(body),
                message_id=str(row_id),
                receive_count=count,
                headers={str(k): str(v) for k, v in (row_headers or {}).items()},
                handle=(row_id, token),
                lease=lease,
            )
            for row_id, body, row_headers, count, token in rows
        ]

    def _settle(self, operation: str, query: sql.Composed, delivery: Delivery, *extra: Any) -> None:
        row_id, token = delivery.handle
        with self._session(operation) as conn:
            rowcount = conn.execute(query, (*extra, row_id, token)).rowcount
        if rowcount != 1:
            raise LeaseExpired(
                f"lease on message {delivery.message_id} of topic {delivery.topic!r} was lost"
            )

    def ack(self, delivery: Delivery) -> None:
        query = sql.SQL("DELETE FROM {t} WHERE id = %s AND lease_token = %s").format(t=self._t)
        self._settle("ack", query, delivery)

    def nack(self, delivery: Delivery, *, delay: float = 0.0) -> None:
        query = sql.SQL(
            """UPDATE {t} SET lease_token = NULL,
                   visible_after = clock_timestamp() + make_interval(secs => %s)
               WHERE id = %s AND lease_token = %s"""
        ).format(t=self._t)
        self._settle("nack", query, delivery, float(max(delay, 0.0)))

    def release(self, delivery: Delivery) -> None:
        """Make the row visible at once, without counting the receive as an attempt."""
        query = sql.SQL(
            """UPDATE {t} SET lease_token = NULL, visible_after = clock_timestamp(),
                   receive_count = greatest(receive_count - 1, 0)
               WHERE id = %s AND lease_token = %s"""
        ).format(t=self._t)
        self._settle("release", query, delivery)

    def extend_lease(self, delivery: Delivery, lease: float) -> None:
        query = sql.SQL(
            """UPDATE {t} SET visible_after = clock_timestamp() + make_interval(secs => %s)
               WHERE id = %s AND lease_token = %s"""
        ).format(t=self._t)
        self._settle("extend_lease", query, delivery, float(lease))

    def dead_letter(self, delivery: Delivery, reason: str) -> None:
        """Move the row to the dead-letter table, body, headers and count kept, in one statement."""
        query = sql.SQL(
            """WITH moved AS (
                   DELETE FROM {t} WHERE id = %s AND lease_token = %s
                   RETURNING topic, body, headers, receive_count, id)
               INSERT INTO {dt} (topic, body, headers, reason, receive_count, message_id)
               SELECT topic, body, headers, %s, receive_count, id::text FROM moved"""
        ).format(t=self._t, dt=self._dt)
        row_id, token = delivery.handle
        with self._session("dead_letter") as conn:
            rowcount = conn.execute(query, (row_id, token, reason)).rowcount
        if rowcount != 1:
            raise LeaseExpired(
                f"lease on message {delivery.message_id} of topic {delivery.topic!r} was lost"
            )

    def dead_letters(self, topic: str, *, limit: int = 100) -> list[DeadLetter]:
        query = sql.SQL(
            """SELECT topic, body, reason, receive_count, message_id FROM {dt}
               WHERE topic = %s ORDER BY id LIMIT %s"""
        ).format(dt=self._dt)
        with self._session("dead_letters") as conn:
            rows = conn.execute(query, (topic, limit)).fetchall()
        return [
            DeadLetter(
                topic=row_topic,
                body=bytes(body),
                reason=reason,
                receive_count=count,
                message_id=message_id,
            )
            for row_topic, body, reason, count, message_id in rows
        ]

    def replay_dead_letters(self, topic: str, *, limit: int | None = None) -> int:
        query = sql.SQL(
            """WITH moved AS (
                   DELETE FROM {dt} WHERE id IN (
                       SELECT id FROM {dt} WHERE topic = %s ORDER BY id LIMIT %s
                       FOR UPDATE SKIP LOCKED)
                   RETURNING id, body, headers)
               INSERT INTO {t} (topic, body, headers)
               SELECT %s, body, headers FROM moved ORDER BY id"""
        ).format(t=self._t, dt=self._dt)
        with self._session("replay_dead_letters") as conn:
            return conn.execute(query, (topic, limit, topic)).rowcount

    def purge(self, topic: str) -> int:
        query = sql.SQL(
            "DELETE FROM {t} WHERE topic = %s AND visible_after <= clock_timestamp()"
        ).format(t=self._t)
        with self._session("purge") as conn:
            return conn.execute(query, (topic,)).rowcount

    def purge_dead_letters(self, topic: str) -> int:
        """Remove every dead letter of ``topic``; return how many were removed."""
        query = sql.SQL("DELETE FROM {dt} WHERE topic = %s").format(dt=self._dt)
        with self._session("purge_dead_letters") as conn:
            return conn.execute(query, (topic,)).rowcount

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._drop()
