"""A loopback TCP proxy for the kombu fault tests: reset or silently stall its connections.

``reset()`` closes every open connection with a TCP RST (what a crashed peer or a middlebox
dropping state looks like); ``blackhole()`` stops forwarding on every open connection while
keeping it open (a silently dead network path: no FIN, no RST, nothing); new connections are
forwarded normally either way. ``connections()`` counts the connections open now. For tests only.
"""

from __future__ import annotations

import select
import socket
import struct
import threading


class Proxy:
    """Forwards 127.0.0.1:<port> to ``target``; see the module docstring."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._pairs: list[_Pair] = []
        self._closed = False
        self.accepted = 0
        threading.Thread(target=self._accept, name="kombu-test-proxy", daemon=True).start()

    def url(self, scheme_and_credentials: str, path: str = "/") -> str:
        """``amqp://guest:guest@`` + ``path`` -> ``amqp://guest:guest@127.0.0.1:<port>/``."""
        return f"{scheme_and_credentials}127.0.0.1:{self.port}{path}"

    def connections(self) -> int:
        with self._lock:
            return sum(1 for pair in self._pairs if pair.open)

    def reset(self) -> int:
        """RST every open connection; return how many were reset."""
        with self._lock:
            pairs, self._pairs = self._pairs, []
        count = 0
        for pair in pairs:
            if pair.open:
                count += 1
            pair.reset()
        return count

    def blackhole(self) -> int:
        """Stop forwarding on every open connection, leaving it open; return how many."""
        with self._lock:
            pairs = [pair for pair in self._pairs if pair.open]
        for pair in pairs:
            pair.stalled.set()
        return len(pairs)

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                _rst(client)
                continue
            pair = _Pair(client, upstream)
            with self._lock:
                self._pairs.append(pair)
                self.accepted += 1
            threading.Thread(target=pair.run, daemon=True).start()

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        self.reset()


class _Pair:
    def __init__(self, client: socket.socket, upstream: socket.socket) -> None:
        self.client = client
        self.upstream = upstream
        self.open = True
        self.stalled = threading.Event()
        self._done = threading.Event()

    def run(self) -> None:
        peers = {self.client: self.upstream, self.upstream: self.client}
        try:
            while not self._done.is_set():
                if self.stalled.is_set():
                    self._done.wait(0.1)  # hold both sockets open, forward nothing
                    continue
                readable, _, _ = select.select(list(peers), [], [], 0.1)
                for src in readable:
                    data = src.recv(65536)
                    if not data:
                        return
                    if self.stalled.is_set():
                        break  # what arrives once stalled goes nowhere
                    peers[src].sendall(data)
        except OSError:
            return
        finally:
            if not self._done.is_set():
                self.reset()

    def reset(self) -> None:
        self.open = False
        self._done.set()
        _rst(self.client)
        _rst(self.upstream)


def _rst(sock: socket.socket) -> None:
    """Close with RST rather than FIN: the peer sees a dropped connection."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()
