"""Helpers for the SQS tests: polling, queue counts, and a fault-injecting proxy.

The proxy sits between balog and the moto server over real HTTP. It forwards every request, and
on request makes the *server side* misbehave the way SQS does under load: entries of a batch call
failed by the service, throttling, refused credentials. boto3 and botocore are never patched.
"""

from __future__ import annotations

import http.client
import http.server
import json
import threading
import time
import urllib.parse
from collections.abc import Callable
from typing import Any

import pytest

Response = tuple[int, dict[str, str], bytes]


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            pytest.fail(f"condition not met within {timeout}s")
        time.sleep(interval)


def visible_count(client: Any, url: str) -> tuple[int, int]:
    """(visible, in flight) message counts of a queue, as SQS reports them."""
    attributes = client.get_queue_attributes(
        QueueUrl=url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return (
        int(attributes["ApproximateNumberOfMessages"]),
        int(attributes["ApproximateNumberOfMessagesNotVisible"]),
    )


class FaultProxy:
    """An HTTP proxy to the moto server that injects server-side faults on request."""

    def __init__(self, upstream: str) -> None:
        parts = urllib.parse.urlsplit(upstream)
        self.upstream_host = parts.hostname or "127.0.0.1"
        self.upstream_port = parts.port or 80
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self._rules: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                status, headers, payload = proxy.handle(self.path, dict(self.headers), body)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, fmt: str, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # -- rules --------------------------------------------------------------------------------

    def fail_entries(
        self, action: str, positions: list[int], *, times: int = 1, code: str = "InternalError"
    ) -> None:
        """The next ``times`` ``action`` batch calls fail the entries at ``positions``
        (service fault), and carry out the others."""
        with self._lock:
            self._rules.append(
                {
                    "kind": "entries",
                    "action": action,
                    "positions": positions,
                    "times": times,
                    "code": code,
                }
            )

    def error(
        self,
        action: str,
        code: str,
        *,
        times: int = 1,
        message: str = "injected",
        status: int = 400,
    ) -> None:
        """The next ``times`` ``action`` calls fail as a whole with error ``code``."""
        with self._lock:
            self._rules.append(
                {
                    "kind": "error",
                    "action": action,
                    "code": code,
                    "times": times,
                    "message": message,
                    "status": status,
                }
            )

    def actions(self, action: str) -> list[dict[str, Any]]:
        """The request payloads of every ``action`` call seen so far."""
        with self._lock:
            return [payload for name, payload in self.calls if name == action]

    def _rule(self, action: str) -> dict[str, Any] | None:
        with self._lock:
            for rule in self._rules:
                if rule["action"] == action and rule["times"] > 0:
                    rule["times"] -= 1
                    return rule
        return None

    # -- forwarding ---------------------------------------------------------------------------

    def _forward(
        self, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection(self.upstream_host, self.upstream_port, timeout=30)
        try:
            sent = {k: v for k, v in headers.items() if k.lower() not in {"host", "content-length"}}
            conn.request("POST", path, body=body, headers=sent)
            response = conn.getresponse()
            payload = response.read()
            kept = {
                k: v
                for k, v in response.getheaders()
                if k.lower() in {"content-type", "x-amzn-requestid", "x-amzn-query-error"}
            }
            return response.status, kept, payload
        finally:
            conn.close()

    def handle(
        self, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        target = headers.get("X-Amz-Target") or headers.get("x-amz-target") or ""
        action = target.rsplit(".", 1)[-1]
        try:
            payload = json.loads(body) if body else {}
        except ValueError:
            payload = {}
        with self._lock:
            self.calls.append((action, payload))
        rule = self._rule(action)
        if rule is None:
            return self._forward(path, headers, body)
        if rule["kind"] == "error":
            error = {"__type": f"com.amazonaws.sqs#{rule['code']}", "message": rule["message"]}
            return (
                rule["status"],
                {
                    "Content-Type": "application/x-amz-json-1.0",
                    "x-amzn-query-error": f"{rule['code']};Sender",
                },
                json.dumps(error).encode(),
            )
        entries = payload.get("Entries", [])
        failing = [e for i, e in enumerate(entries) if i in rule["positions"]]
        kept = [e for i, e in enumerate(entries) if i not in rule["positions"]]
        result: dict[str, Any] = {"Successful": [], "Failed": []}
        status, out_headers = 200, {"Content-Type": "application/x-amz-json-1.0"}
        if kept:
            status, out_headers, raw = self._forward(
                path, headers, json.dumps({**payload, "Entries": kept}).encode()
            )
            result = json.loads(raw)
            result.setdefault("Failed", [])
        result["Failed"] = list(result["Failed"]) + [
            {"Id": e["Id"], "SenderFault": False, "Code": rule["code"], "Message": "injected"}
            for e in failing
        ]
        return status, out_headers, json.dumps(result).encode()


def unreachable(user_info: str = "") -> tuple[str, Any]:
    """An endpoint URL nobody listens on (``user_info`` put before the host), and an
    ``SQSTransport`` on it that gives up after one quick try."""
    import socket

    import botocore.config

    from balog.transports.sqs import SQSTransport

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://{user_info}127.0.0.1:{port}"
    transport = SQSTransport(
        endpoint_url=url,
        region="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=botocore.config.Config(retries={"max_attempts": 1}, connect_timeout=1),
    )
    return url, transport
