"""SQLite transport: durable queues in one database file, shared by processes on one machine.

The embedded default backend. It needs no server: producers and consumers in any number of
processes open the same file. Delivery semantics are SQS's:

- a received message is *leased*: its ``visible_after`` moves ``lease`` seconds ahead and it gets a
  fresh lease token, so no other receiver sees it until then;
- ``ack`` deletes it; ``nack`` makes it visible again (after ``delay``); a lease that runs out
  makes it visible again by itself; each delivery counts one more receive;
- an ack, nack or extension whose token no longer matches (the lease ran out and someone else
  received the message) raises :class:`~balog.exceptions.LeaseExpired`;
- dead letters move, in one statement, to the topic's dead-letter topic, keeping the body, the
  reason, the source topic and the receive count (in the balog headers).

The file is created readable and writable by its owner only (``file_mode``, default ``0o600``);
SQLite gives its ``-wal`` and ``-shm`` files the same mode. A row another client inserted that is
not in balog's format (headers that are not a JSON object) is received as a delivery marked
``refused``, for the engine to dead-letter; a body stored as text is handed over as its UTF-8
bytes.

Concurrency: the file is in WAL mode (readers never block the writer); every write is one short
transaction (``BEGIN IMMEDIATE`` around a send or a claim, a lone statement for an ack); SQLite's
busy timeout plus a few bounded retries absorb ``database is locked``. Each thread uses its own
connection; a process that forks opens new ones. Receivers poll (there is no cross-process
notification): every ``poll_interval`` seconds at first, backing off to ``max_poll_interval``
while the topic stays empty.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import random
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

from balog._text import clip
from balog.exceptions import (
    BalogError,
    ConfigurationError,
    LeaseExpired,
    ThrottledError,
    TopicMismatch,
    TransportConnectionError,
    TransportError,
)
from balog.transports.base import (
    ATTEMPTS_HEADER,
    REASON_HEADER,
    SOURCE_TOPIC_HEADER,
    Capabilities,
    DeadLetter,
    Delivery,
    Transport,
    dead_letter_headers,
)

__all__ = [
    "DEFAULT_LEASE",
    "DEFAULT_MAX_BODY_SIZE",
    "DEFAULT_PATH",
    "SQLiteTransport",
    "path_from_url",
]

DEFAULT_PATH = "balog.sqlite3"
"""The database file used when none is given, relative to the current directory."""

DEFAULT_MAX_BODY_SIZE = 256 * 1024
DEFAULT_LEASE = 30.0
DEFAULT_FILE_MODE = 0o600
"""Permissions of a database file the transport creates: its owner's only."""

_COLUMNS = frozenset(
    {"id", "topic", "body", "headers", "visible_after", "receive_count", "lease_token", "sent_at"}
)

_T = TypeVar("_T")

logger = logging.getLogger("balog.transports.sqlite")

_SCHEMA = (
    """
    CREATE TABLE IF NOT EXISTS balog_messages (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        topic TEXT NOT NULL,
        body BLOB NOT NULL,
        headers TEXT,
        visible_after REAL NOT NULL,
        receive_count INTEGER NOT NULL DEFAULT 0,
        lease_token TEXT,
        sent_at REAL NOT NULL
    )
    """,
    # Claims walk a topic in id order, skipping rows that are leased or delayed; the index
    # carries visible_after so skipped rows cost no table lookup.
    """
    CREATE INDEX IF NOT EXISTS balog_messages_topic
        ON balog_messages (topic, id, visible_after)
    """,
)

_BUSY_MARKERS = ("database is locked", "database is busy", "database table is locked")

# RETURNING arrived in SQLite 3.35; older libraries claim with SELECT then UPDATE inside the
# same write transaction, which is just as atomic.
_HAS_RETURNING = sqlite3.sqlite_version_info >= (3, 35, 0)


def path_from_url(url: str) -> str:
    """The file path in a ``sqlite:///relative/path`` or ``sqlite:////absolute/path`` URL."""
    prefix = "sqlite:///"
    if not url.startswith(prefix):
        raise ConfigurationError("a sqlite URL looks like sqlite:///path/to/file.sqlite3")
    path = url[len(prefix) :].split("?", 1)[0]
    if not path:
        raise ConfigurationError("the sqlite URL names no file")
    return path


def _is_busy(exc: sqlite3.Error) -> bool:
    text = str(exc).lower()
    return any(marker in text for marker in _BUSY_MARKERS)


def _translate(exc: sqlite3.Error, action: str, path: str) -> BalogError:
    """One balog error for a sqlite3 error; the caller chains the original."""
    detail = f"{type(exc).__name__}: {exc}"
    if _is_busy(exc):
        return ThrottledError(f"sqlite {action} on {path!r}: still locked after retries ({detail})")
    text = str(exc).lower()
    if "not a database" in text:
        return ConfigurationError(
            f"sqlite {action} on {path!r} failed: the file is not a SQLite database ({detail}); "
            "give the transport another path"
        )
    if "unable to open" in text or "disk i/o" in text or "readonly" in text:
        return TransportConnectionError(f"sqlite {action} on {path!r} failed: {detail}")
    return TransportError(f"sqlite {action} on {path!r} failed: {detail}")


class _Slot:
    """A thread's connection, held in thread-local storage."""

    __slots__ = ("__weakref__", "conn")

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn


def _thread_ended(ref: weakref.ref[SQLiteTransport], conn: sqlite3.Connection, pid: int) -> None:
    if os.getpid() != pid:
        return  # a forked child dropping its parent's slots: never close the parent's connection
    transport = ref()
    if transport is not None:
        transport._forget(conn)
    try:
        conn.close()
    except sqlite3.Error:
        pass


class SQLiteTransport(Transport):
    """A :class:`~balog.transports.base.Transport` on a SQLite database file.

    ``path`` is the database file (created with its tables when missing; default
    :data:`DEFAULT_PATH` in the current directory), or give ``url="sqlite:///path"``. ``lease``
    is the default lease (visibility timeout) in seconds. ``poll_interval`` and
    ``max_poll_interval`` bound how often an idle :meth:`receive` looks again. ``timeout`` is
    SQLite's busy timeout in seconds, ``retries`` how many more times a write that still found
    the database locked is tried. ``synchronous`` is the SQLite pragma: ``"NORMAL"`` (the
    default) survives any crash of the processes, ``"FULL"`` also a power loss. ``file_mode``
    is the permissions of a file the transport creates (default ``0o600``: its owner's only; an
    octal string such as ``"640"`` is read as octal); an existing file keeps its own.
    """

    capabilities = Capabilities(
        max_body_size=DEFAULT_MAX_BODY_SIZE,
        lease_expiry=True,
        lease_extension=True,
        receive_count=True,
        ordering=True,
    )
    """What a transport built with the default options can do; ``max_body_size`` follows the
    option on each instance."""

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        url: str | None = None,
        lease: float = DEFAULT_LEASE,
        max_body_size: int = DEFAULT_MAX_BODY_SIZE,
        poll_interval: float = 0.01,
        max_poll_interval: float = 0.05,
        timeout: float = 5.0,
        retries: int = 5,
        synchronous: str = "NORMAL",
        file_mode: int | str = DEFAULT_FILE_MODE,
    ) -> None:
        if path is not None and url is not None:
            raise ConfigurationError("give the sqlite transport a path or a url, not both")
        raw = path_from_url(url) if url is not None else os.fspath(path or DEFAULT_PATH)
        if raw == ":memory:" or raw.startswith("file:"):
            raise ConfigurationError(
                "the sqlite transport needs a database file shared by processes; "
                "use the memory transport for an in-process queue"
            )
        if lease < 0:
            raise ConfigurationError("lease must not be negative")
        if max_body_size < 1:
            raise ConfigurationError("max_body_size must be positive")
        if poll_interval <= 0 or max_poll_interval < poll_interval:
            raise ConfigurationError("need 0 < poll_interval <= max_poll_interval")
        if timeout < 0 or retries < 0:
            raise ConfigurationError("timeout and retries must not be negative")
        if synchronous.upper() not in {"OFF", "NORMAL", "FULL", "EXTRA"}:
            raise ConfigurationError("synchronous must be OFF, NORMAL, FULL or EXTRA")
        self.file_mode = _file_mode(file_mode)
        self.path = os.path.abspath(raw)
        self.default_lease = float(lease)
        self.poll_interval = float(poll_interval)
        self.max_poll_interval = float(max_poll_interval)
        self.timeout = float(timeout)
        self.retries = int(retries)
        self.synchronous = synchronous.upper()
        self.capabilities = dataclasses.replace(
            type(self).capabilities, max_body_size=max_body_size
        )
        self.use_returning = _HAS_RETURNING
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: list[sqlite3.Connection] = []
        self._pid = os.getpid()
        self._schema_ready = False
        self._warned_journal = False
        self._closed = False

    def __repr__(self) -> str:
        return f"SQLiteTransport(path={self.path!r})"

    # -- connections and transactions ---------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        if self._closed:
            raise TransportError("the sqlite transport is closed")
        if os.getpid() != self._pid:
            # Connections must not cross a fork: drop (never close) the parent's.
            with self._lock:
                if os.getpid() != self._pid:
                    self._pid = os.getpid()
                    self._connections = []
                    self._local = threading.local()
                    self._schema_ready = False
        slot: _Slot | None = getattr(self._local, "slot", None)
        if slot is not None:
            return slot.conn
        if not self._schema_ready:
            self._create_file()
        try:
            conn = sqlite3.connect(
                self.path,
                timeout=self.timeout,
                isolation_level=None,  # we issue BEGIN/COMMIT ourselves
                check_same_thread=False,  # used by one thread only; close() may run elsewhere
            )
        except sqlite3.Error as exc:
            raise _translate(exc, "open", self.path) from exc
        try:
            self._retry("open", lambda: self._configure(conn))
            if not self._schema_ready:
                self._write("create tables", self._create_schema, conn=conn)
                self._schema_ready = True
        except BaseException:
            conn.close()
            raise
        with self._lock:
            registered = not self._closed  # close() may have run while this thread connected
            if registered:
                self._connections.append(conn)
        if not registered:
            conn.close()
            raise TransportError("the sqlite transport is closed")
        slot = _Slot(conn)
        # When the thread ends, its thread-local slot goes, and the connection is closed with it.
        finalizer = weakref.finalize(slot, _thread_ended, weakref.ref(self), conn, os.getpid())
        finalizer.atexit = False
        self._local.slot = slot
        return conn

    def _create_file(self) -> None:
        """Create the database file with ``file_mode`` before SQLite would create it with the
        umask's (world-readable) mode; SQLite then gives ``-wal`` and ``-shm`` the same mode."""
        if os.path.isdir(self.path):
            raise ConfigurationError(f"sqlite database path {self.path!r} is a directory")
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(self.path, flags, self.file_mode)
        except FileExistsError:
            return  # an existing file keeps the mode it has
        except FileNotFoundError:
            raise ConfigurationError(
                f"cannot create the sqlite database {self.path!r}: its directory does not exist"
            ) from None
        except OSError as exc:
            raise ConfigurationError(
                f"cannot create the sqlite database {self.path!r}: {exc.strerror or exc}"
            ) from exc
        try:
            if hasattr(os, "fchmod"):
                os.fchmod(fd, self.file_mode)  # the umask may have taken bits away
        finally:
            os.close(fd)

    def _configure(self, conn: sqlite3.Connection) -> None:
        conn.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
        (mode,) = conn.execute("PRAGMA journal_mode = WAL").fetchone()
        if str(mode).lower() != "wal" and not self._warned_journal:
            # Still correct, but readers and the writer now block each other.
            self._warned_journal = True
            logger.warning(
                "sqlite database %r could not use WAL mode (journal mode is %s)", self.path, mode
            )
        conn.execute(f"PRAGMA synchronous = {self.synchronous}")

    def _create_schema(self, conn: sqlite3.Connection) -> None:
        conn.execute(_SCHEMA[0])
        columns = {str(row[1]) for row in conn.execute("PRAGMA table_info(balog_messages)")}
        missing = sorted(_COLUMNS - columns)
        if missing:
            raise TopicMismatch(
                f"sqlite database {self.path!r} has a balog_messages table without the columns "
                f"{', '.join(missing)}: another application's table; give the transport another "
                "path"
            )
        for statement in _SCHEMA[1:]:
            conn.execute(statement)

    def _retry(self, action: str, func: Callable[[], _T]) -> _T:
        """Run ``func``, trying again a few times while the database stays locked."""
        attempt = 0
        while True:
            try:
                return func()
            except sqlite3.Error as exc:
                if _is_busy(exc) and attempt < self.retries:
                    attempt += 1
                    time.sleep(random.uniform(0.005, 0.02) * 2 ** min(attempt, 5))
                    continue
                raise _translate(exc, action, self.path) from exc

    def _write(
        self,
        action: str,
        func: Callable[[sqlite3.Connection], _T],
        *,
        conn: sqlite3.Connection | None = None,
    ) -> _T:
        """Run ``func`` in one ``BEGIN IMMEDIATE`` transaction (retried whole when locked)."""
        connection = conn or self._connection()

        def attempt() -> _T:
            connection.execute("BEGIN IMMEDIATE")
            try:
                result = func(connection)
                connection.execute("COMMIT")
            except BaseException:
                if connection.in_transaction:
                    try:
                        connection.execute("ROLLBACK")
                    except sqlite3.Error:
                        pass  # the transaction is gone either way
                raise
            return result

        return self._retry(action, attempt)

    def _statement(self, action: str, sql: str, params: Sequence[Any]) -> int:
        """Run one writing statement on its own; return how many rows it changed.

        A lone statement is its own transaction, and it takes the write lock when it starts
        (waiting under the busy timeout), so it needs no ``BEGIN IMMEDIATE`` around it: that
        saves two round trips per ack. One that failed changed nothing and is safe to retry.
        """
        connection = self._connection()
        return self._retry(action, lambda: connection.execute(sql, params).rowcount)

    def _read(self, action: str, func: Callable[[sqlite3.Connection], _T]) -> _T:
        connection = self._connection()
        return self._retry(action, lambda: func(connection))

    @contextmanager
    def _no_leak(self, action: str) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            raise _translate(exc, action, self.path) from exc

    # -- the transport contract ---------------------------------------------------------------

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
        encoded = json.dumps(dict(headers), separators=(",", ":")) if headers else None

        def insert(conn: sqlite3.Connection) -> None:
            now = time.time()
            conn.executemany(
                "INSERT INTO balog_messages (topic, body, headers, visible_after, sent_at) "
                "VALUES (?, ?, ?, ?, ?)",
                [(topic, bytes(body), encoded, now, now) for body in bodies],
            )

        self._write("send", insert)

    def receive(
        self,
        topic: str,
        *,
        max_messages: int = 10,
        wait: float = 1.0,
        lease: float | None = None,
    ) -> list[Delivery]:
        lease = self.default_lease if lease is None else float(lease)
        if max_messages < 1:
            return []
        deadline = time.monotonic() + max(wait, 0.0)
        interval = self.poll_interval
        first = True
        while True:
            # While idle, a plain read looks first so empty polls never take the write lock.
            if first or self._has_visible(topic):
                rows = self._write("receive", lambda c: self._claim(c, topic, max_messages, lease))
                if rows:
                    # Rows balog wrote without headers are the common case: built inline.
                    return [
                        Delivery(
                            topic=topic,
                            body=body,
                            message_id=str(row_id),
                            receive_count=count,
                            headers={},
                            handle=(row_id, token),
                            lease=lease,
                        )
                        if raw is None and type(body) is bytes
                        else _delivery(topic, lease, row_id, body, raw, count, token)
                        for row_id, body, raw, count, token in rows
                    ]
            first = False
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            time.sleep(min(interval, remaining))
            interval = min(interval * 2, self.max_poll_interval)

    def _has_visible(self, topic: str) -> bool:
        def look(conn: sqlite3.Connection) -> bool:
            row = conn.execute(
                "SELECT 1 FROM balog_messages WHERE topic = ? AND visible_after <= ? LIMIT 1",
                (topic, time.time()),
            ).fetchone()
            return row is not None

        return self._read("receive", look)

    def _claim(
        self, conn: sqlite3.Connection, topic: str, limit: int, lease: float
    ) -> list[tuple[int, Any, Any, int, str]]:
        now = time.time()
        if self.use_returning:
            rows = conn.execute(
                "UPDATE balog_messages SET receive_count = receive_count + 1, "
                "lease_token = lower(hex(randomblob(8))), visible_after = ? "
                "WHERE id IN (SELECT id FROM balog_messages WHERE topic = ? AND visible_after <= ? "
                "ORDER BY id LIMIT ?) "
                "RETURNING id, body, headers, receive_count, lease_token",
                (now + lease, topic, now, limit),
            ).fetchall()
            return sorted(rows)
        ids = [
            row_id
            for (row_id,) in conn.execute(
                "SELECT id FROM balog_messages WHERE topic = ? AND visible_after <= ? "
                "ORDER BY id LIMIT ?",
                (topic, now, limit),
            )
        ]
        claimed = []
        for row_id in ids:
            token = os.urandom(8).hex()
            conn.execute(
                "UPDATE balog_messages SET receive_count = receive_count + 1, lease_token = ?, "
                "visible_after = ? WHERE id = ?",
                (token, now + lease, row_id),
            )
            body, raw, count = conn.execute(
                "SELECT body, headers, receive_count FROM balog_messages WHERE id = ?", (row_id,)
            ).fetchone()
            claimed.append((row_id, body, raw, count, token))
        return claimed

    def _leased_update(self, action: str, delivery: Delivery, sql: str, *params: Any) -> None:
        """Run ``sql`` (ending ``WHERE id = ? AND lease_token = ?``) on the delivery's row."""
        handle = delivery.handle
        if not (isinstance(handle, tuple) and len(handle) == 2):
            raise TransportError(f"{delivery!r} was not received from a sqlite transport")
        row_id, token = handle
        if self._statement(action, sql, (*params, row_id, token)) != 1:
            raise LeaseExpired(
                f"lease on message {delivery.message_id} of topic {delivery.topic!r} was lost"
            )

    def ack(self, delivery: Delivery) -> None:
        self._leased_update(
            "ack", delivery, "DELETE FROM balog_messages WHERE id = ? AND lease_token = ?"
        )

    def nack(self, delivery: Delivery, *, delay: float = 0.0) -> None:
        self._leased_update(
            "nack",
            delivery,
            "UPDATE balog_messages SET lease_token = NULL, visible_after = ? "
            "WHERE id = ? AND lease_token = ?",
            time.time() + max(delay, 0.0),
        )

    def release(self, delivery: Delivery) -> None:
        """Give the delivery back at once without counting it as a receive."""
        self._leased_update(
            "release",
            delivery,
            "UPDATE balog_messages SET lease_token = NULL, visible_after = ?, "
            "receive_count = max(receive_count - 1, 0) WHERE id = ? AND lease_token = ?",
            time.time(),
        )

    def extend_lease(self, delivery: Delivery, lease: float) -> None:
        self._leased_update(
            "extend lease",
            delivery,
            "UPDATE balog_messages SET visible_after = ? WHERE id = ? AND lease_token = ?",
            time.time() + max(lease, 0.0),
        )

    # -- dead letters -------------------------------------------------------------------------

    def dead_letter(self, delivery: Delivery, reason: str) -> None:
        """Move the delivery to its dead-letter topic in one statement: no loss, no duplicate.

        The body and message id stay; the reason, source topic and receive count go in the
        balog headers. Raises :class:`~balog.exceptions.LeaseExpired` (moving nothing) when the
        lease was lost.
        """
        headers = {**dict(delivery.headers), **dead_letter_headers(delivery, reason)}
        # A body another client stored as text (or a number) is kept as its bytes.
        self._leased_update(
            "dead-letter",
            delivery,
            "UPDATE balog_messages SET topic = ?, headers = ?, receive_count = 0, "
            "body = CAST(body AS BLOB), lease_token = NULL, visible_after = ? "
            "WHERE id = ? AND lease_token = ?",
            self.dead_letter_topic(delivery.topic),
            json.dumps(headers, separators=(",", ":")),
            time.time(),
        )

    def dead_letters(self, topic: str, *, limit: int = 100) -> list[DeadLetter]:
        """List ``topic``'s dead letters, oldest first, without leasing or changing them."""
        name = self.dead_letter_topic(topic)

        def select(conn: sqlite3.Connection) -> list[tuple[int, bytes, str | None]]:
            return conn.execute(
                "SELECT id, body, headers FROM balog_messages WHERE topic = ? ORDER BY id LIMIT ?",
                (name, limit),
            ).fetchall()

        return [
            DeadLetter.from_headers(
                _headers(raw)[0], topic=topic, body=_as_bytes(body), message_id=str(row_id)
            )
            for row_id, body, raw in self._read("list dead letters", select)
        ]

    def replay_dead_letters(self, topic: str, *, limit: int | None = None) -> int:
        """Put ``topic``'s available dead letters back on ``topic`` as new messages.

        Each goes to the back of the queue with a receive count of zero and without the
        dead-letter headers; its other headers stay. Each moves inside a transaction (of up to
        500 messages), so none is lost or duplicated, whatever happens to the process.
        """
        name = self.dead_letter_topic(topic)
        dead_headers = {REASON_HEADER, SOURCE_TOPIC_HEADER, ATTEMPTS_HEADER}

        def move(conn: sqlite3.Connection, count: int) -> int:
            now = time.time()
            rows = conn.execute(
                "SELECT id, body, headers FROM balog_messages "
                "WHERE topic = ? AND visible_after <= ? ORDER BY id LIMIT ?",
                (name, now, count),
            ).fetchall()
            for row_id, body, raw in rows:
                kept = {k: v for k, v in _headers(raw)[0].items() if k not in dead_headers}
                encoded = json.dumps(kept, separators=(",", ":")) if kept else None
                conn.execute(
                    "INSERT INTO balog_messages (topic, body, headers, visible_after, sent_at) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (topic, body, encoded, now, now),
                )
                conn.execute("DELETE FROM balog_messages WHERE id = ?", (row_id,))
            return len(rows)

        moved = 0
        while limit is None or moved < limit:
            chunk = 500 if limit is None else min(500, limit - moved)
            done = self._write("replay dead letters", functools.partial(move, count=chunk))
            moved += done
            if done < chunk:
                break
        return moved

    def purge(self, topic: str) -> int:
        """Delete every message available now on ``topic`` (leased ones stay); return how many."""

        return self._statement(
            "purge",
            "DELETE FROM balog_messages WHERE topic = ? AND visible_after <= ?",
            (topic, time.time()),
        )

    # -- inspection ---------------------------------------------------------------------------

    def size(self, topic: str) -> int:
        """How many messages on ``topic`` are not yet acked: ready, delayed and leased."""
        return self._count("SELECT count(*) FROM balog_messages WHERE topic = ?", topic)

    def in_flight(self, topic: str) -> int:
        """How many messages on ``topic`` are leased right now."""
        return self._count(
            "SELECT count(*) FROM balog_messages WHERE topic = ? AND lease_token IS NOT NULL "
            "AND visible_after > ?",
            topic,
            time.time(),
        )

    def topics(self) -> list[str]:
        """Every topic holding a message, dead-letter topics included."""

        def select(conn: sqlite3.Connection) -> list[str]:
            rows = conn.execute("SELECT DISTINCT topic FROM balog_messages ORDER BY topic")
            return [name for (name,) in rows]

        return self._read("list topics", select)

    def _count(self, sql: str, *params: Any) -> int:
        def count(conn: sqlite3.Connection) -> int:
            return int(conn.execute(sql, params).fetchone()[0])

        return self._read("count", count)

    def _forget(self, conn: sqlite3.Connection) -> None:
        with self._lock:
            if conn in self._connections:
                self._connections.remove(conn)

    def verify(self, topic: str) -> None:
        """Check at start-up that the database file can be opened (or created) and written, and
        that its table is balog's.

        A path whose directory is missing, a directory, a file that is not a SQLite database or
        one that cannot be written raise :class:`~balog.exceptions.ConfigurationError`; a
        ``balog_messages`` table of another shape :class:`~balog.exceptions.TopicMismatch`; a
        database still locked after the retries :class:`~balog.exceptions.ThrottledError`.
        """
        try:
            # Opening creates the file and checks the table; the empty transaction takes the
            # write lock, which a file that cannot be written refuses.
            self._write("verify", lambda conn: None)
        except TransportConnectionError as exc:
            raise ConfigurationError(
                f"the sqlite database {self.path!r} cannot be opened and written ({exc}); check "
                "the permissions of the file and of its directory, where SQLite writes the "
                "-wal and -shm files"
            ) from exc

    def close(self) -> None:
        """Close every connection this transport opened. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            connections, self._connections = self._connections, []
            mine = os.getpid() == self._pid
        if not mine:
            return  # a forked child never closes its parent's connections
        for conn in connections:
            with self._no_leak("close"):
                conn.close()


def _file_mode(value: int | str) -> int:
    """The ``file_mode`` option as permission bits; a string is read as octal (``"640"``)."""
    try:
        mode = int(value, 8) if isinstance(value, str) else int(value)
    except ValueError:
        mode = -1
    if not 0 <= mode <= 0o777 or mode & 0o600 != 0o600:
        raise ConfigurationError(
            f"file_mode {value!r} must be permission bits that let the owner read and write "
            "(0o600, 0o640, 0o660...; written in octal, or as a string such as '640')"
        )
    return mode


def _as_bytes(body: Any) -> bytes:
    """A body as stored: bytes, or what another client stored as text or a number."""
    if isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode("utf-8", "surrogatepass")
    return str(body).encode()


def _headers(raw: Any) -> tuple[dict[str, str], str | None]:
    """The headers stored as JSON, or none and why they cannot be read."""
    if not raw:
        return {}, None
    try:
        parsed = json.loads(raw)
    except (ValueError, TypeError, RecursionError) as exc:
        return {}, f"not a balog message: its headers column is not JSON ({clip(str(exc), 80)})"
    if not isinstance(parsed, dict):
        return {}, f"not a balog message: its headers column is a JSON {type(parsed).__name__}"
    return {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in parsed.items()}, None


def _delivery(
    topic: str, lease: float, row_id: int, body: Any, raw: Any, count: int, token: str
) -> Delivery:
    """A delivery of a row with headers, or with a body another program stored as text."""
    headers, refused = _headers(raw)
    return Delivery(
        topic=topic,
        body=_as_bytes(body),
        message_id=str(row_id),
        receive_count=count,
        headers=headers,
        handle=(row_id, token),
        lease=lease,
        refused=refused,
    )
