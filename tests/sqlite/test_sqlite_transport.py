"""The sqlite transport on real database files: SQS's delivery semantics, one file, no server."""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
import stat
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from balog.exceptions import (
    ConfigurationError,
    LeaseExpired,
    MessageTooLarge,
    ThrottledError,
    TopicMismatch,
    TransportError,
)
from balog.transports import create_transport
from balog.transports.base import REASON_HEADER, SOURCE_TOPIC_HEADER, Delivery
from balog.transports.sqlite import SQLiteTransport, path_from_url


@pytest.fixture(params=["returning", "select-update"])
def transport(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SQLiteTransport]:
    """A transport on a fresh file, claiming with RETURNING or with the older fallback."""
    t = SQLiteTransport(tmp_path / "queue.sqlite3", lease=5.0)
    if request.param == "select-update":
        t.use_returning = False
    elif not t.use_returning:
        pytest.skip("this SQLite library has no RETURNING")
    yield t
    t.close()


def receive_until(
    transport: SQLiteTransport, topic: str, count: int, timeout: float = 5.0, **kw: float
) -> list[Delivery]:
    deadline = time.monotonic() + timeout
    got: list[Delivery] = []
    while len(got) < count and time.monotonic() < deadline:
        got.extend(transport.receive(topic, max_messages=count - len(got), wait=0.2, **kw))
    return got


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


def test_send_receive_single(transport: SQLiteTransport, unique_name: str) -> None:
    """A body sent with headers comes back once, leased, with receive count 1."""
    transport.send(unique_name, [b'{"a": 1}'], headers={"k": "v"})
    [d] = transport.receive(unique_name, wait=1.0)
    assert (d.body, dict(d.headers), d.receive_count, d.lease) == (b'{"a": 1}', {"k": "v"}, 1, 5.0)
    assert transport.receive(unique_name, wait=0.0) == []


def test_send_receive_batch_in_order(transport: SQLiteTransport, unique_name: str) -> None:
    """A batch comes back in the order sent, split over receives by max_messages."""
    bodies = [str(i).encode() for i in range(25)]
    transport.send(unique_name, bodies)
    got = []
    for _ in range(3):
        got.extend(d.body for d in transport.receive(unique_name, max_messages=10, wait=0.0))
    assert bodies == got


def test_topics_are_separate(transport: SQLiteTransport, unique_name: str) -> None:
    """A message sent to one topic is not received from another."""
    transport.send(unique_name + "-a", [b"a"])
    assert transport.receive(unique_name + "-b", wait=0.0) == []
    assert [d.body for d in transport.receive(unique_name + "-a", wait=0.0)] == [b"a"]


def test_ack_removes(transport: SQLiteTransport, unique_name: str) -> None:
    """An acked message is gone for good, even after its lease would have run out."""
    transport.send(unique_name, [b"x"])
    [d] = transport.receive(unique_name, wait=0.0, lease=0.1)
    transport.ack(d)
    assert transport.size(unique_name) == 0
    time.sleep(0.15)
    assert transport.receive(unique_name, wait=0.0) == []


def test_nack_redelivers_with_growing_count(transport: SQLiteTransport, unique_name: str) -> None:
    """A nacked message comes back at once with its receive count one higher each time."""
    transport.send(unique_name, [b"x"])
    counts = []
    for _ in range(3):
        [d] = transport.receive(unique_name, wait=0.0)
        counts.append(d.receive_count)
        transport.nack(d)
    assert counts == [1, 2, 3]


def test_nack_with_delay(transport: SQLiteTransport, unique_name: str) -> None:
    """A message nacked with a delay is invisible until the delay has passed."""
    transport.send(unique_name, [b"x"])
    [d] = transport.receive(unique_name, wait=0.0)
    transport.nack(d, delay=0.4)
    assert transport.receive(unique_name, wait=0.0) == []
    [again] = receive_until(transport, unique_name, 1)
    assert (again.body, again.receive_count) == (b"x", 2)
    assert time.monotonic() - d.received_at >= 0.4


def test_release_does_not_count(transport: SQLiteTransport, unique_name: str) -> None:
    """A released delivery comes back at once with the same receive count."""
    transport.send(unique_name, [b"x"])
    [d] = transport.receive(unique_name, wait=0.0)
    transport.release(d)
    [again] = transport.receive(unique_name, wait=0.0)
    assert again.receive_count == 1


def test_lease_expiry_redelivers(transport: SQLiteTransport, unique_name: str) -> None:
    """An unacked message comes back by itself once its lease runs out."""
    transport.send(unique_name, [b"x"])
    [d] = transport.receive(unique_name, wait=0.0, lease=0.3)
    assert transport.receive(unique_name, wait=0.0) == []
    [again] = receive_until(transport, unique_name, 1)
    assert (d.message_id, 2) == (again.message_id, again.receive_count)


def test_extend_lease_prevents_redelivery(transport: SQLiteTransport, unique_name: str) -> None:
    """Extending the lease keeps the message from other receivers past the first lease."""
    transport.send(unique_name, [b"x"])
    [d] = transport.receive(unique_name, wait=0.0, lease=0.3)
    transport.extend_lease(d, 5.0)
    assert transport.receive(unique_name, wait=0.6) == []
    transport.ack(d)
    assert transport.size(unique_name) == 0


def test_stale_ack_raises_lease_expired(transport: SQLiteTransport, unique_name: str) -> None:
    """Acking, nacking or extending a delivery redelivered elsewhere raises LeaseExpired."""
    transport.send(unique_name, [b"x"])
    [stale] = transport.receive(unique_name, wait=0.0, lease=0.1)
    [fresh] = receive_until(transport, unique_name, 1)
    with pytest.raises(LeaseExpired):
        transport.ack(stale)
    with pytest.raises(LeaseExpired):
        transport.nack(stale)
    with pytest.raises(LeaseExpired):
        transport.extend_lease(stale, 5.0)
    transport.ack(fresh)
    with pytest.raises(LeaseExpired):
        transport.ack(fresh)


def test_too_large_sends_nothing(tmp_path: Path, unique_name: str) -> None:
    """A batch with a body over max_body_size raises MessageTooLarge and sends none of it."""
    with SQLiteTransport(tmp_path / "q.sqlite3", max_body_size=100) as t:
        with pytest.raises(MessageTooLarge):
            t.send(unique_name, [b"ok", b"x" * 101])
        t.send(unique_name, [b"x" * 100])
        assert [len(d.body) for d in t.receive(unique_name, wait=0.0)] == [100]


def test_default_max_body_size_round_trips(transport: SQLiteTransport, unique_name: str) -> None:
    """A body of exactly 256 KiB round-trips; one byte more is refused."""
    body = bytes(range(256)) * 1024
    transport.send(unique_name, [body])
    assert [body] == [d.body for d in transport.receive(unique_name, wait=0.0)]
    with pytest.raises(MessageTooLarge):
        transport.send(unique_name, [body + b"x"])


def test_dead_letter_keeps_body_reason_and_replays(
    transport: SQLiteTransport, unique_name: str
) -> None:
    """A dead letter keeps body, reason, source topic and count; replay puts it back fresh."""
    transport.send(unique_name, [b"bad", b"good"], headers={"k": "v"})
    [bad, good] = transport.receive(unique_name, wait=0.0)
    transport.nack(bad)
    [bad] = transport.receive(unique_name, wait=0.0)
    transport.dead_letter(bad, "it broke")
    transport.ack(good)
    assert transport.size(unique_name) == 0
    [letter] = transport.dead_letters(unique_name)
    assert (unique_name, b"bad", "it broke", 2, bad.message_id) == (
        letter.topic,
        letter.body,
        letter.reason,
        letter.receive_count,
        letter.message_id,
    )
    # Listing leases nothing: the letter is still there to list again and to replay.
    assert [letter] == transport.dead_letters(unique_name)
    assert transport.replay_dead_letters(unique_name) == 1
    assert transport.dead_letters(unique_name) == []
    [replayed] = transport.receive(unique_name, wait=0.0)
    assert (
        replayed.body,
        replayed.receive_count,
        dict(replayed.headers),
    ) == (b"bad", 1, {"k": "v"})


def test_dead_letter_topic_is_receivable(transport: SQLiteTransport, unique_name: str) -> None:
    """The dead-letter topic is a topic like any other, with the reason in the headers."""
    transport.send(unique_name, [b"bad"])
    [d] = transport.receive(unique_name, wait=0.0)
    transport.dead_letter(d, "why")
    [dl] = transport.receive(transport.dead_letter_topic(unique_name), wait=0.0)
    assert ("why", unique_name) == (dl.headers[REASON_HEADER], dl.headers[SOURCE_TOPIC_HEADER])


def test_dead_letter_after_lost_lease_moves_nothing(
    transport: SQLiteTransport, unique_name: str
) -> None:
    """Dead-lettering a delivery whose lease was lost raises and leaves the message queued."""
    transport.send(unique_name, [b"x"])
    [stale] = transport.receive(unique_name, wait=0.0, lease=0.1)
    [fresh] = receive_until(transport, unique_name, 1)
    with pytest.raises(LeaseExpired):
        transport.dead_letter(stale, "late")
    assert (transport.dead_letters(unique_name), transport.size(unique_name)) == ([], 1)
    transport.ack(fresh)


def test_replay_limit_and_purge(transport: SQLiteTransport, unique_name: str) -> None:
    """replay_dead_letters honours its limit; purge removes what is available and counts it."""
    transport.send(unique_name, [b"1", b"2", b"3"])
    for d in transport.receive(unique_name, wait=0.0):
        transport.dead_letter(d, "r")
    assert transport.replay_dead_letters(unique_name, limit=2) == 2
    assert [dl.body for dl in transport.dead_letters(unique_name)] == [b"3"]
    assert transport.purge(transport.dead_letter_topic(unique_name)) == 1
    assert transport.purge(unique_name) == 2
    assert transport.topics() == []


def test_purge_leaves_leased_messages(transport: SQLiteTransport, unique_name: str) -> None:
    """Purge removes available messages only; one leased to a receiver stays."""
    transport.send(unique_name, [b"1", b"2"])
    [leased] = transport.receive(unique_name, max_messages=1, wait=0.0)
    assert transport.purge(unique_name) == 1
    assert transport.in_flight(unique_name) == 1
    transport.ack(leased)


def test_receive_waits_for_a_message(transport: SQLiteTransport, unique_name: str) -> None:
    """A receive that is waiting picks up a message sent meanwhile by another connection."""
    other = SQLiteTransport(transport.path)
    timer = threading.Timer(0.2, other.send, args=(unique_name, [b"late"]))
    timer.start()
    try:
        got = transport.receive(unique_name, wait=3.0)
    finally:
        timer.join()
        other.close()
    assert [d.body for d in got] == [b"late"]


def test_receive_returns_after_wait(transport: SQLiteTransport, unique_name: str) -> None:
    """An empty receive returns an empty list once its wait is over, not much later."""
    start = time.monotonic()
    assert transport.receive(unique_name, wait=0.3) == []
    assert 0.3 <= time.monotonic() - start < 2.0


def test_threads_never_share_a_message(transport: SQLiteTransport, unique_name: str) -> None:
    """Four threads receiving at once from one transport each get distinct messages."""
    transport.send(unique_name, [str(i).encode() for i in range(400)])
    seen: list[bytes] = []
    lock = threading.Lock()

    def work() -> None:
        while True:
            batch = transport.receive(unique_name, max_messages=7, wait=0.2)
            if not batch:
                return
            for d in batch:
                transport.ack(d)
            with lock:
                seen.extend(d.body for d in batch)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(str(i).encode() for i in range(400)) == sorted(seen)


def test_messages_survive_reopening(tmp_path: Path, unique_name: str) -> None:
    """Messages are durable: a new transport on the same file receives what was sent."""
    path = tmp_path / "durable.sqlite3"
    with SQLiteTransport(path) as first:
        first.send(unique_name, [b"kept"])
    with SQLiteTransport(path) as second:
        assert [d.body for d in second.receive(unique_name, wait=0.0)] == [b"kept"]


def test_locked_database_raises_throttled(tmp_path: Path, unique_name: str) -> None:
    """A write that stays locked past the timeout and retries raises ThrottledError."""
    path = tmp_path / "locked.sqlite3"
    t = SQLiteTransport(path, timeout=0.05, retries=2)
    t.send(unique_name, [b"x"])
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(ThrottledError) as info:
            t.send(unique_name, [b"y"])
        assert isinstance(info.value.__cause__, sqlite3.OperationalError)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    t.send(unique_name, [b"y"])
    assert t.size(unique_name) == 2
    t.close()


def test_database_in_a_missing_directory_is_a_configuration_error(tmp_path: Path) -> None:
    """A database in a missing directory is a fatal ConfigurationError naming the path, from
    verify() and from a send alike: retrying cannot create the directory."""
    path = tmp_path / "missing" / "q.sqlite3"
    t = SQLiteTransport(path)
    for call in (lambda: t.verify("topic"), lambda: t.send("topic", [b"x"])):
        with pytest.raises(ConfigurationError) as info:
            call()
        assert info.value.fatal
        assert f"{str(path)!r}" in str(info.value)
        assert "directory does not exist" in str(info.value)


def test_options_and_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """path or url picks the file; the default is balog.sqlite3 in the current directory."""
    assert path_from_url("sqlite:///rel/q.db") == "rel/q.db"
    assert path_from_url("sqlite:////abs/q.db") == "/abs/q.db"
    t = create_transport("sqlite", url=f"sqlite:///{tmp_path}/u.sqlite3")
    assert isinstance(t, SQLiteTransport)
    assert str(tmp_path / "u.sqlite3") == t.path
    assert f"SQLiteTransport(path={t.path!r})" == repr(t)
    monkeypatch.chdir(tmp_path)
    assert str(tmp_path / "balog.sqlite3") == SQLiteTransport().path
    with pytest.raises(ConfigurationError):
        SQLiteTransport(tmp_path / "a", url="sqlite:///b")
    with pytest.raises(ConfigurationError):
        SQLiteTransport(":memory:")
    with pytest.raises(ConfigurationError):
        SQLiteTransport(url="postgres://x")


@pytest.mark.parametrize(
    "options",
    [
        {"lease": -1},
        {"max_body_size": 0},
        {"poll_interval": 0},
        {"poll_interval": 0.1, "max_poll_interval": 0.05},
        {"timeout": -1},
        {"retries": -1},
        {"synchronous": "sometimes"},
        {"no_such_option": 1},
    ],
)
def test_bad_options_are_configuration_errors(tmp_path: Path, options: dict[str, Any]) -> None:
    """A bad or unknown option is a ConfigurationError when the transport is built by name."""
    with pytest.raises(ConfigurationError):
        create_transport("sqlite", path=str(tmp_path / "x.sqlite3"), **options)


def test_synchronous_full_is_applied(tmp_path: Path, unique_name: str) -> None:
    """synchronous='full' sets the pragma on the transport's connections, WAL stays on."""
    with SQLiteTransport(tmp_path / "full.sqlite3", synchronous="full") as t:
        t.send(unique_name, [b"x"])
        conn = t._connections[0]
        modes = (conn.execute("PRAGMA synchronous").fetchone()[0],)
        modes += (conn.execute("PRAGMA journal_mode").fetchone()[0],)
    assert modes == (2, "wal")


def test_close_is_idempotent(tmp_path: Path, unique_name: str) -> None:
    """close() can be called twice; the closed transport refuses work with a balog error."""
    t = SQLiteTransport(tmp_path / "c.sqlite3")
    t.send(unique_name, [b"x"])
    t.close()
    t.close()
    with pytest.raises(TransportError, match="closed"):
        t.send(unique_name, [b"y"])


def test_capabilities(transport: SQLiteTransport) -> None:
    """The transport declares SQS-like capabilities with a 256 KiB default limit."""
    caps = transport.capabilities
    assert (
        caps.max_body_size,
        caps.delay,
        caps.lease_expiry,
        caps.lease_extension,
        caps.receive_count,
        caps.ordering,
    ) == (256 * 1024, True, True, True, True, True)


def _receive_and_ack_in_child(transport: SQLiteTransport, topic: str, out: Any) -> None:
    got = transport.receive(topic, wait=1.0)
    for d in got:
        transport.ack(d)
    out.put([d.body for d in got])


def test_transport_survives_fork(transport: SQLiteTransport, unique_name: str) -> None:
    """A forked child using the parent's transport opens its own connection; both keep working."""
    if "fork" not in multiprocessing.get_all_start_methods():
        pytest.skip("this platform cannot fork")
    transport.send(unique_name, [b"for the child"])
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    child = ctx.Process(target=_receive_and_ack_in_child, args=(transport, unique_name, out))
    child.start()
    try:
        assert out.get(timeout=10.0) == [b"for the child"]
    finally:
        child.join(timeout=10.0)
    assert child.exitcode == 0
    transport.send(unique_name, [b"for the parent"])
    assert [d.body for d in transport.receive(unique_name, wait=0.0)] == [b"for the parent"]
    assert transport.size(unique_name) == 1


def test_thread_connections_close_when_threads_end(
    transport: SQLiteTransport, unique_name: str
) -> None:
    """Each short-lived thread's connection is closed when the thread ends, not kept forever."""

    def send_once(n: int) -> None:
        transport.send(unique_name, [str(n).encode()])

    for n in range(20):
        worker = threading.Thread(target=send_once, args=(n,))
        worker.start()
        worker.join()
    assert wait_for(lambda: len(transport._connections) == 0)
    assert transport.size(unique_name) == 20
    assert len(transport._connections) == 1  # this thread's, opened by size()


def test_replay_moves_many_in_chunks(transport: SQLiteTransport, unique_name: str) -> None:
    """Replaying more dead letters than one transaction takes moves every one, once, in order."""
    bodies = [str(i).encode() for i in range(1203)]
    transport.send(unique_name, bodies)
    while batch := transport.receive(unique_name, max_messages=100, wait=0.0):
        for d in batch:
            transport.dead_letter(d, "r")
    assert transport.replay_dead_letters(unique_name) == 1203
    replayed = []
    while batch := transport.receive(unique_name, max_messages=100, wait=0.0):
        replayed.extend(d.body for d in batch)
    assert (replayed, transport.dead_letters(unique_name)) == (bodies, [])


@pytest.fixture
def umask_022() -> Iterator[None]:
    """The usual umask (022), under which files are created world-readable by default."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def modes(path: Path) -> dict[str, int]:
    """Permission bits of the database file and of its -wal and -shm files, by suffix."""
    return {
        suffix: stat.S_IMODE(os.stat(f"{path}{suffix}").st_mode) for suffix in ("", "-wal", "-shm")
    }


@pytest.mark.usefixtures("umask_022")
def test_new_database_and_its_wal_and_shm_files_are_private(
    tmp_path: Path, unique_name: str
) -> None:
    """A database file the transport creates, and the -wal and -shm files beside it, are
    readable and writable by their owner only (0600), whatever the umask lets through."""
    path = tmp_path / "private.sqlite3"
    with SQLiteTransport(path) as t:
        t.send(unique_name, [b"secret event"])
        assert len(receive_until(t, unique_name, 1)) == 1
        expected = {"": 0o600, "-wal": 0o600, "-shm": 0o600}
        assert expected == modes(path)


@pytest.mark.usefixtures("umask_022")
@pytest.mark.parametrize("file_mode", [0o640, "660"])
def test_file_mode_sets_the_permissions_of_every_file(
    tmp_path: Path, unique_name: str, file_mode: int | str
) -> None:
    """file_mode= (bits, or an octal string) sets the mode of the database, -wal and -shm
    files, so that a group can share them."""
    expected = file_mode if isinstance(file_mode, int) else int(file_mode, 8)
    path = tmp_path / "shared.sqlite3"
    with SQLiteTransport(path, file_mode=file_mode) as t:
        t.send(unique_name, [b"x"])
        assert {"": expected, "-wal": expected, "-shm": expected} == modes(path)


@pytest.mark.parametrize("file_mode", [0o400, 0o1777, 640, "rw-r-----", "999"])
def test_file_mode_that_locks_the_owner_out_is_refused(
    tmp_path: Path, file_mode: int | str
) -> None:
    """A file_mode without the owner's read and write bits, past 0o777, or not octal (640 is
    the decimal number, not 0o640) is a ConfigurationError when the transport is built."""
    with pytest.raises(ConfigurationError) as info:
        SQLiteTransport(tmp_path / "x.sqlite3", file_mode=file_mode)
    assert "file_mode" in str(info.value)


@pytest.mark.usefixtures("umask_022")
def test_existing_file_keeps_its_mode(tmp_path: Path, unique_name: str) -> None:
    """A database file that exists already keeps the permissions its owner gave it."""
    path = tmp_path / "theirs.sqlite3"
    path.touch(mode=0o644)
    with SQLiteTransport(path) as t:
        t.send(unique_name, [b"x"])
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644


def test_verify_creates_and_checks_a_fresh_database(tmp_path: Path, unique_name: str) -> None:
    """verify() on a path with no file creates the database (private) and passes; it passes
    again on the file in use."""
    path = tmp_path / "fresh.sqlite3"
    with SQLiteTransport(path) as t:
        t.verify(unique_name)
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        t.send(unique_name, [b"x"])
        t.verify(unique_name)


def test_verify_refuses_a_directory_and_a_file_that_is_not_a_database(tmp_path: Path) -> None:
    """A path that is a directory, or a file that is not a SQLite database, is a fatal
    ConfigurationError from verify() naming the path."""
    not_a_database = tmp_path / "notes.txt"
    not_a_database.write_bytes(b"these are someone's notes, not a database\n" * 100)
    for path, words in ((tmp_path, "is a directory"), (not_a_database, "not a SQLite database")):
        with SQLiteTransport(path) as t, pytest.raises(ConfigurationError) as info:
            t.verify("topic")
        assert info.value.fatal
        assert words in str(info.value)
        assert f"{str(path)!r}" in str(info.value)


def test_verify_refuses_another_applications_table(tmp_path: Path) -> None:
    """A database whose balog_messages table is another application's (other columns) is a
    fatal TopicMismatch naming the missing columns."""
    path = tmp_path / "app.sqlite3"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE balog_messages (id INTEGER PRIMARY KEY, message TEXT)")
    conn.commit()
    conn.close()
    for call in (lambda t: t.verify("topic"), lambda t: t.send("topic", [b"x"])):
        with SQLiteTransport(path) as t, pytest.raises(TopicMismatch) as info:
            call(t)
        assert info.value.fatal
        assert "visible_after" in str(info.value)


def insert_raw(path: Path, topic: str, body: Any, headers: Any = None) -> None:
    """Insert a row the way another program would: plain sqlite3, its own types."""
    conn = sqlite3.connect(path)
    now = time.time()
    conn.execute(
        "INSERT INTO balog_messages (topic, body, headers, visible_after, sent_at) "
        "VALUES (?, ?, ?, ?, ?)",
        (topic, body, headers, now, now),
    )
    conn.commit()
    conn.close()


@pytest.mark.parametrize("headers", ["{not json", "[1, 2]"])
def test_row_whose_headers_are_not_a_json_object_is_refused_and_the_batch_flows_on(
    transport: SQLiteTransport, unique_name: str, headers: str
) -> None:
    """A row another program inserted with headers that are not a JSON object no longer fails
    the receive: it comes back refused with its body, the rows beside it are delivered, and
    its dead letter keeps the body."""
    transport.send(unique_name, [b"before"])
    insert_raw(Path(transport.path), unique_name, b"their body", headers)
    transport.send(unique_name, [b"after"])
    got = receive_until(transport, unique_name, 3)
    expected = [(b"before", False), (b"their body", True), (b"after", False)]
    assert expected == [(d.body, d.refused is not None) for d in got]
    assert "headers column is" in str(got[1].refused)
    transport.ack(got[0])
    transport.ack(got[2])
    transport.dead_letter(got[1], str(got[1].refused))
    [letter] = transport.dead_letters(unique_name)
    assert (b"their body", got[1].refused) == (letter.body, letter.reason)


def test_text_body_inserted_by_another_program_arrives_as_bytes(
    transport: SQLiteTransport, unique_name: str
) -> None:
    """A body another program stored as TEXT is handed over as its UTF-8 bytes; dead-lettered
    and replayed it keeps them."""
    transport.verify(unique_name)  # the table exists, as once any engine has started
    insert_raw(Path(transport.path), unique_name, "caf\u00e9 au lait")
    [d] = receive_until(transport, unique_name, 1)
    assert ("caf\u00e9 au lait".encode(), None) == (d.body, d.refused)
    transport.dead_letter(d, "not json")
    assert ["caf\u00e9 au lait".encode()] == [x.body for x in transport.dead_letters(unique_name)]
    assert transport.replay_dead_letters(unique_name) == 1
    [back] = receive_until(transport, unique_name, 1)
    assert back.body == "caf\u00e9 au lait".encode()


def test_dead_letter_of_a_body_at_the_limit_keeps_it_whole(
    tmp_path: Path, unique_name: str
) -> None:
    """A body of exactly max_body_size, with headers, dead-letters whole with a long reason:
    the row moves in place, so no limit cuts it."""
    with SQLiteTransport(tmp_path / "limit.sqlite3", max_body_size=4096) as t:
        body = bytes(range(256)) * 16
        t.send(unique_name, [body], headers={"origin": "x" * 500})
        [d] = receive_until(t, unique_name, 1)
        t.dead_letter(d, "r" * 20_000)
        [letter] = t.dead_letters(unique_name)
    assert (body, "r" * 20_000) == (letter.body, letter.reason)
