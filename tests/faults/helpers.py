"""Helpers of the fault suite: the ledger, subprocess consumers, polling, and a fault proxy.

The ledger is the suite's one measure of "nothing lost": every event id a test produced is
checked against every id a consumer processed. A consumer appends one line per processed event
to a ledger file (``O_APPEND``, one ``write`` per line, so lines from several processes never
interleave, and a SIGKILL loses nothing the kernel already has). Lost must be 0; duplicates are
at-least-once delivery at work: allowed, counted and printed.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

CONSUMER_SCRIPT = Path(__file__).with_name("consumer_proc.py")


# -- the ledger ---


def append_line(path: str | os.PathLike[str], line: str) -> None:
    """Append one line to ``path`` with a single ``O_APPEND`` write."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode("utf-8"))
    finally:
        os.close(fd)


class LedgerFile:
    """A ledger file a consumer appends processed ids to; keeps the fd open for speed."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._lock = threading.Lock()

    def record(self, event_id: str) -> None:
        with self._lock:
            os.write(self._fd, (event_id + "\n").encode("utf-8"))

    def close(self) -> None:
        os.close(self._fd)


def read_ids(path: str | os.PathLike[str]) -> list[str]:
    """Ids in a ledger file, in the order written; a torn last line (no newline) is ignored."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return []
    lines = data.split(b"\n")
    return [line.decode("utf-8") for line in lines[:-1] if line]


@dataclasses.dataclass
class LedgerReport:
    """Produced against processed: what was lost, what came twice."""

    name: str
    produced: int
    processed: int
    lost: list[str]
    duplicates: int
    unexpected: list[str]

    def summary(self) -> str:
        return (
            f"ledger[{self.name}]: produced={self.produced} processed={self.processed} "
            f"unique={self.processed - self.duplicates} lost={len(self.lost)} "
            f"duplicates={self.duplicates} unexpected={len(self.unexpected)}"
        )


def reconcile(name: str, produced: Sequence[str], processed: Iterable[str]) -> LedgerReport:
    """Compare the produced ids with the processed ones, and print the figures."""
    counts = collections.Counter(processed)
    wanted = set(produced)
    report = LedgerReport(
        name=name,
        produced=len(produced),
        processed=sum(counts.values()),
        lost=[i for i in produced if i not in counts],
        duplicates=sum(n - 1 for n in counts.values() if n > 1),
        unexpected=sorted(i for i in counts if i not in wanted),
    )
    print(report.summary())
    return report


# -- polling ---


def wait_for(
    condition: Callable[[], object], timeout: float, interval: float = 0.05, what: str = ""
) -> None:
    """Poll ``condition`` until it is true; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what or condition}")
        time.sleep(interval)


# -- subprocess consumers ---


class ConsumerProcess:
    """A consumer run as a real process by ``consumer_proc.py``; see that script for the options.

    ``ready`` is set once the engine runs (the script prints ``ready`` on stdout).
    """

    def __init__(
        self,
        engine: str,
        topic: str,
        ledger: str | os.PathLike[str],
        *,
        options: dict[str, str] | None = None,
        work: float = 0.0,
        fail_id: str | None = None,
        started: str | os.PathLike[str] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        args = [
            sys.executable,
            str(CONSUMER_SCRIPT),
            "--engine",
            engine,
            "--topic",
            topic,
            "--ledger",
            str(ledger),
            "--work",
            str(work),
        ]
        for key, value in (options or {}).items():
            args += ["--option", f"{key}={value}"]
        if fail_id:
            args += ["--fail-id", fail_id]
        if started:
            args += ["--started", str(started)]
        self.proc = subprocess.Popen(
            args,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, **(env or {})},
        )
        self._stderr: list[bytes] = []

    def wait_ready(self, timeout: float = 30.0) -> None:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.2)
            if ready:
                line = self.proc.stdout.readline()
                if line.strip() == b"ready":
                    return
                if not line:
                    break
            if self.proc.poll() is not None:
                break
        raise AssertionError(f"consumer did not start: {self.stderr()[-3000:]}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def terminate(self, timeout: float = 60.0) -> int:
        """SIGTERM, then wait for the process to exit by itself; return its exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def stderr(self) -> str:
        if self.proc.poll() is None:
            return "(still running)"
        assert self.proc.stderr is not None
        return self.proc.stderr.read().decode("utf-8", "replace")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


# -- a loopback fault proxy ---


class FaultProxy:
    """A TCP proxy on loopback in front of ``target`` that can drop or delay connections.

    Modes: ``"pass"`` forwards; ``"drop"`` resets every open connection and every new one at
    once (the service is unreachable); ``"delay"`` holds each new connection ``delay`` seconds
    before forwarding (a slow network). Thread-based and small; for tests only.
    """

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.mode = "pass"
        self.delay = 0.0
        self.connections = 0
        self.dropped = 0
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(128)
        self.port: int = self._listener.getsockname()[1]
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._accept, name="fault-proxy", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def set_mode(self, mode: str, delay: float = 0.0) -> None:
        assert mode in ("pass", "drop", "delay")
        self.mode = mode
        self.delay = delay
        if mode == "drop":
            self._reset_all()

    def _reset_all(self) -> None:
        with self._lock:
            sockets = list(self._open)
            self._open.clear()
        self.dropped += len(sockets) // 2  # a client socket and its upstream per connection
        for s in sockets:
            _reset(s)

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        if self.mode == "drop":
            self.dropped += 1
            _reset(client)
            return
        if self.mode == "delay" and self.delay:
            time.sleep(self.delay)
        try:
            upstream = socket.create_connection(self.target, timeout=5)
        except OSError:
            _reset(client)
            return
        with self._lock:
            self._open.update((client, upstream))
        a = threading.Thread(target=self._pipe, args=(client, upstream), daemon=True)
        b = threading.Thread(target=self._pipe, args=(upstream, client), daemon=True)
        a.start()
        b.start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if self.mode == "drop":
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with self._lock:
                self._open.discard(src)
                self._open.discard(dst)
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        self._reset_all()


def _reset(sock: socket.socket) -> None:
    """Close with RST rather than FIN: the peer sees a dropped connection."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


# -- our own connections, to drop them on the server side ---------------------------------------


def own_local_ports() -> set[int]:
    """Local TCP ports of this process's sockets (from /proc): our connections and no others."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[9] in inodes:
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def close_own_rabbitmq_connections() -> int:
    """Close, on the RabbitMQ server, every connection this process holds; return how many."""
    listing = subprocess.run(
        ["rabbitmqctl", "-q", "list_connections", "pid", "peer_port"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    ours = own_local_ports()
    closed = 0
    for line in listing.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit() and int(parts[1]) in ours:
            subprocess.run(
                ["rabbitmqctl", "-q", "close_connection", parts[0], "fault test"],
                capture_output=True,
                timeout=60,
                check=False,
            )
            closed += 1
    return closed


def kill_own_redis_clients(client: Any) -> int:
    """CLIENT KILL every Redis connection of this process but ``client``'s; return how many."""
    ours = own_local_ports()
    me = client.client_id()
    killed = 0
    for entry in client.client_list():
        port = int(str(entry["addr"]).rsplit(":", 1)[1])
        if port in ours and int(entry["id"]) != me:
            client.client_kill_filter(_id=entry["id"])
            killed += 1
    return killed
