"""SQS throughput: balog against a plain boto3 loop doing the same batched calls.

Both run on one moto server started in this process, in the same run, so only the ratio means
anything (moto is far slower than SQS, and a laptop is not a data centre). moto's cost per call
grows with the messages a queue holds, so events go in rounds of ``CHUNK``, the queue emptied
between rounds outside the timing, the same for both sides:

- ``sqs produce``: ``SQSTransport.send`` of the events against a loop of ``SendMessageBatch``
  calls of 10 with the same bodies;
- ``sqs consume``: ``SQSEngine.drain()`` (receive, decode, validate, route, a no-op consumer,
  delete) against a loop of ``ReceiveMessage`` (10) + ``DeleteMessageBatch``.

Run ``python -m benchmarks.sqs`` (needs ``balog[sqs]`` and ``moto[server]``).
"""

from __future__ import annotations

import socket
import statistics
import time
import uuid
from typing import Any

ROW = dict[str, Any]

CHUNK = 200
"""Events per timed round; the queue never holds more."""

CREDENTIALS = {
    "region_name": "us-east-1",
    "aws_access_key_id": "bench",
    "aws_secret_access_key": "bench",
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _bodies(events: int) -> list[bytes]:
    from balog.events import encode, new_event

    return [
        encode(
            new_event(
                "bench.jobs.done",
                {"cls_type": "metrics", "values": [{"name": "n", "value": i}]},
                context={"application": "bench"},
            )
        )
        for i in range(events)
    ]


def _fill(client: Any, url: str, bodies: list[bytes]) -> None:
    for start in range(0, len(bodies), 10):
        chunk = bodies[start : start + 10]
        client.send_message_batch(
            QueueUrl=url,
            Entries=[{"Id": str(i), "MessageBody": b.decode()} for i, b in enumerate(chunk)],
        )


def _chunks(bodies: list[bytes]) -> list[list[bytes]]:
    return [bodies[i : i + CHUNK] for i in range(0, len(bodies), CHUNK)]


def _credentials() -> dict[str, str]:
    return {
        "region": CREDENTIALS["region_name"],
        "aws_access_key_id": CREDENTIALS["aws_access_key_id"],
        "aws_secret_access_key": CREDENTIALS["aws_secret_access_key"],
    }


def _new_queue(client: Any) -> tuple[str, str]:
    name = f"bench-{uuid.uuid4().hex[:12]}"
    url: str = client.create_queue(QueueName=name)["QueueUrl"]
    return name, url


def _baseline_produce(client: Any, bodies: list[bytes]) -> float:
    elapsed = 0.0
    for chunk in _chunks(bodies):
        _, url = _new_queue(client)
        started = time.perf_counter()
        _fill(client, url, chunk)
        elapsed += time.perf_counter() - started
    return len(bodies) / elapsed


def _baseline_consume(client: Any, bodies: list[bytes]) -> float:
    elapsed = 0.0
    for chunk in _chunks(bodies):
        _, url = _new_queue(client)
        _fill(client, url, chunk)
        started = time.perf_counter()
        done = 0
        while done < len(chunk):
            messages = client.receive_message(
                QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0, VisibilityTimeout=30
            ).get("Messages", [])
            if not messages:
                continue
            client.delete_message_batch(
                QueueUrl=url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                    for i, m in enumerate(messages)
                ],
            )
            done += len(messages)
        elapsed += time.perf_counter() - started
    return len(bodies) / elapsed


def _balog_produce(client: Any, endpoint: str, bodies: list[bytes]) -> float:
    from balog.transports.sqs import SQSTransport

    transport = SQSTransport(endpoint_url=endpoint, **_credentials())
    elapsed = 0.0
    for chunk in _chunks(bodies):
        name, _ = _new_queue(client)
        transport.queue_url(name)  # resolved once, as a running producer would have
        started = time.perf_counter()
        transport.send(name, chunk)
        elapsed += time.perf_counter() - started
    transport.close()
    return len(bodies) / elapsed


def _balog_consume(client: Any, endpoint: str, bodies: list[bytes]) -> float:
    from balog.consumers import Consumer, ConsumerHub
    from balog.engines.sqs import SQSEngine

    seen = 0
    elapsed = 0.0

    def consume(event: dict[str, Any]) -> None:
        nonlocal seen
        seen += 1

    for chunk in _chunks(bodies):
        name, url = _new_queue(client)
        hub = ConsumerHub([Consumer(consume, name, cls_type="metrics", version="<1.0")])
        engine = SQSEngine(hub, endpoint_url=endpoint, wait=0, **_credentials())
        engine.transport.queue_url(name)
        _fill(client, url, chunk)
        target = seen + len(chunk)
        started = time.perf_counter()
        while seen < target:
            engine.drain()
        elapsed += time.perf_counter() - started
        engine.close()
    if seen != len(bodies):
        raise RuntimeError(f"balog consumed {seen} of {len(bodies)} events")
    return len(bodies) / elapsed


def run(repeat: int = 3, events: int = 2000) -> list[ROW]:
    """Measure produce and consume events/s, balog and boto3, on one in-process moto server.

    Returns one row per case with the median of ``repeat`` runs of ``events`` events each.
    """
    import logging

    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    try:
        client = boto3.client("sqs", endpoint_url=endpoint, **CREDENTIALS)
        bodies = _bodies(events)
        results: dict[str, dict[str, list[float]]] = {
            "sqs produce": {"balog": [], "baseline": []},
            "sqs consume": {"balog": [], "baseline": []},
        }

        for n in range(repeat):
            # Alternate which side goes first so that drift in machine load favours neither.
            order = ("baseline", "balog") if n % 2 == 0 else ("balog", "baseline")
            for side in order:
                if side == "baseline":
                    results["sqs produce"][side].append(_baseline_produce(client, bodies))
                    results["sqs consume"][side].append(_baseline_consume(client, bodies))
                else:
                    results["sqs produce"][side].append(_balog_produce(client, endpoint, bodies))
                    results["sqs consume"][side].append(_balog_consume(client, endpoint, bodies))
        rows = []
        for case, measured in results.items():
            balog_eps = statistics.median(measured["balog"])
            baseline_eps = statistics.median(measured["baseline"])
            rows.append(
                {
                    "case": case,
                    "balog_eps": balog_eps,
                    "baseline": "boto3 loop",
                    "baseline_eps": baseline_eps,
                    "ratio": balog_eps / baseline_eps,
                }
            )
        return rows
    finally:
        server.stop()


def main() -> None:
    rows = run()
    print(f"{'case':<14} {'balog ev/s':>11} {'boto3 loop ev/s':>16} {'ratio':>6}")
    for row in rows:
        print(
            f"{row['case']:<14} {row['balog_eps']:>11.0f} {row['baseline_eps']:>16.0f} "
            f"{row['ratio']:>6.2f}"
        )


if __name__ == "__main__":
    main()
