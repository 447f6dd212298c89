"""balog's demo (``make demo``): a consumer service, two producers and a bad event, on sqlite.

It runs, in a temporary directory and with no server:

1. ``balog consume demo_app`` in its own process, on the embedded sqlite default;
2. ``balog send`` in other processes: one event from arguments, two from NDJSON on stdin, and one
   bad event sent raw;
3. ``get_logger(...)`` from this Python process, after ``balog.configure("sqlite", ...)``;

then waits until the consumer has processed every good event once and dead-lettered the bad one,
lists it with ``balog dead-letters list``, stops the consumer with SIGTERM and checks it exited 0.
It prints what it does as a transcript, and exits 1 if anything expected did not happen.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
TOPIC = "demo-events-dev"
OPERATOR = "demo_app.operator:ConsumerOperator"
GOOD_EVENTS = 5
STEP_TIMEOUT = 20.0


class DemoFailed(Exception):
    pass


def say(text: str = "") -> None:
    print(text, flush=True)


def show_command(args: Sequence[str], stdin: str | None = None, shown: str | None = None) -> None:
    command = "balog " + " ".join(shlex.quote(a) for a in args)
    if shown is not None:
        command = f"echo {shlex.quote(shown)} | {command}"
    elif stdin is not None:
        lines = stdin.rstrip("\n").splitlines()
        if len(lines) == 1:
            command = f"echo {shlex.quote(lines[0])} | {command}"
        else:
            command = f"cat events.ndjson | {command}    # {len(lines)} lines"
    say(f"$ {command}")


def indent(text: str, prefix: str = "  ") -> str:
    return "\n".join(prefix + line for line in text.rstrip("\n").splitlines())


def wait_for(condition: Callable[[], bool], what: str) -> float:
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > STEP_TIMEOUT:
            raise DemoFailed(f"timed out after {STEP_TIMEOUT:.0f}s waiting for {what}")
        time.sleep(0.05)
    return time.monotonic() - started


class Demo:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.database = workdir / "events.sqlite3"
        self.url = f"sqlite:///{self.database}"
        self.ledger = workdir / "ledger.txt"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("BALOG_")}
        paths = [str(HERE), *filter(None, [self.env.get("PYTHONPATH")])]
        self.env["PYTHONPATH"] = os.pathsep.join(paths)
        self.env["PYTHONUNBUFFERED"] = "1"
        self.env["BALOG_URL"] = self.url
        self.consumer: subprocess.Popen[bytes] | None = None

    def balog(
        self, *args: str, stdin: str | None = None, shown: str | None = None, check: bool = True
    ) -> str:
        """Run ``balog ARGS`` in a new process, show it and its output; return stdout.

        ``shown`` is a shorter text to show in place of a one-line ``stdin``.
        """
        show_command(args, stdin, shown)
        result = subprocess.run(
            [sys.executable, "-m", "balog", *args],
            input=stdin or "",
            capture_output=True,
            text=True,
            env=self.env,
            cwd=self.workdir,
            timeout=60,
            check=False,
        )
        if result.stdout.strip():
            say(indent(result.stdout))
        if check and result.returncode != 0:
            raise DemoFailed(f"balog {args[0]} exited {result.returncode}: {result.stderr.strip()}")
        return result.stdout

    def consumed(self) -> list[list[str]]:
        if not self.ledger.exists():
            return []
        return [line.split(" ", 2) for line in self.ledger.read_text().splitlines()]

    def dead_letters(self) -> int:
        from balog.transports.sqlite import SQLiteTransport

        with SQLiteTransport(self.database) as transport:
            return transport.size(transport.dead_letter_topic(TOPIC))

    def consumer_log(self, stream: str) -> str:
        path = self.workdir / f"consumer.{stream}"
        return path.read_text() if path.exists() else ""

    # -- the steps ------------------------------------------------------------------------------

    def start_consumer(self) -> None:
        args = [
            "consume", "demo_app", "--operator", OPERATOR,
            "--set", f"demo.ledger={self.ledger}", "--status-interval", "5",
        ]  # fmt: skip
        say(f"$ {' '.join(['balog', *args[:4]])} --set demo.ledger=ledger.txt &")
        with (
            open(self.workdir / "consumer.out", "wb") as out,
            open(self.workdir / "consumer.err", "wb") as err,
        ):
            self.consumer = subprocess.Popen(
                [sys.executable, "-m", "balog", *args],
                stdout=out,
                stderr=err,
                env=self.env,
                cwd=self.workdir,
            )
        wait_for(lambda: "engine running" in self.consumer_log("err"), "the consumer to start")
        for line in self.consumer_log("err").splitlines():
            if line.startswith("balog: consuming"):
                say(indent(line, "  [consumer] "))

    def produce_with_the_command(self) -> None:
        say("\n# Produce from other processes with `balog send`.")
        values = json.dumps({"values": [{"name": "orders", "value": 3}]})
        self.balog("send", TOPIC, "--channel", "demo.cli", "--cls-type", "metrics",
                   "--payload", values)  # fmt: skip
        lines = [
            {"cls_type": "metrics", "values": [{"name": "refunds", "value": 1}]},
            {"cls_type": "log", "message": "batch imported", "severity": "info"},
        ]
        ndjson = "".join(json.dumps(line) + "\n" for line in lines)
        self.balog("send", TOPIC, "--channel", "demo.batch", stdin=ndjson)
        say(
            "\n# A bad event: its metrics values are not a list. --raw skips the checks send makes."
        )
        from balog.events import encode, new_event

        bad = encode(new_event("demo.bad", {"cls_type": "metrics", "values": "lots"})).decode()
        short = '{"schema": "0.1.0", "header": {...}, "payload": {"cls_type": "metrics", ...}}'
        self.balog("send", TOPIC, "--raw", stdin=bad + "\n", shown=short)

    def produce_with_get_logger(self) -> None:
        say("\n# Produce from Python with get_logger.")
        import balog

        say(f'>>> balog.configure("sqlite", topic="{TOPIC}", url="sqlite:///events.sqlite3")')
        balog.configure("sqlite", topic=TOPIC, url=self.url)
        say('>>> balogger = balog.get_logger("demo_app.jobs")')
        balogger = balog.get_logger("demo_app.jobs")
        payload = {"cls_type": "metrics", "values": [{"name": "total", "value": 123}]}
        say(f'>>> balogger.info("done", payload={payload})')
        balogger.info("done", payload=payload)
        say('>>> balogger.warning("disk.low")')
        balogger.warning("disk.low")
        say(">>> balog.flush()")
        if not balog.flush(10):
            raise DemoFailed("get_logger's events were not sent within 10 s")

    def check_consumed(self) -> None:
        say("\n# The consumer processes each good event once and dead-letters the bad one.")
        took = wait_for(
            lambda: len(self.consumed()) >= GOOD_EVENTS and self.dead_letters() >= 1,
            f"{GOOD_EVENTS} events to be consumed and 1 dead-lettered",
        )
        time.sleep(0.3)  # anything extra (a duplicate) would show up now
        for line in self.consumer_log("out").splitlines():
            say(indent(line, "  [consumer] "))
        ids = [row[0] for row in self.consumed()]
        if len(ids) != GOOD_EVENTS or len(set(ids)) != GOOD_EVENTS:
            raise DemoFailed(f"expected {GOOD_EVENTS} distinct events consumed, got {ids}")
        channels = sorted(row[1] for row in self.consumed())
        expected = sorted(["demo.cli", "demo.batch", "demo.batch", "demo_app.jobs.done",
                           "demo_app.jobs.disk.low"])  # fmt: skip
        if channels != expected:
            raise DemoFailed(f"consumed channels {channels}, expected {expected}")
        say(f"  ({GOOD_EVENTS} events consumed, each once, within {took:.1f}s)")

    def list_dead_letters(self) -> None:
        say("\n# The bad event waits in the dead letters, with the reason.")
        listed = self.balog("dead-letters", "list", TOPIC)
        if "1 dead letter(s)" not in listed or "payload.values" not in listed:
            raise DemoFailed("the dead letter is not listed with its reason")

    def stop_consumer(self) -> None:
        assert self.consumer is not None
        say("\n# Stop the consumer: SIGTERM lets it finish what it holds, then it exits 0.")
        say(f"$ kill -TERM {self.consumer.pid}")
        self.consumer.send_signal(signal.SIGTERM)
        try:
            status = self.consumer.wait(timeout=STEP_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise DemoFailed("the consumer did not stop within 20 s of SIGTERM") from None
        for line in self.consumer_log("err").splitlines():
            if line.startswith("balog: stopped"):
                say(indent(line, "  [consumer] "))
        if status != 0:
            raise DemoFailed(f"the consumer exited with {status}:\n{self.consumer_log('err')}")
        say(f"  (consumer exited with {status})")

    def run(self) -> None:
        say("# balog demo: one consumer process and two producers on the embedded sqlite backend")
        say(f"$ export BALOG_URL=sqlite:///events.sqlite3    # in a new directory: {self.workdir}")
        say("\n# The consumers of the example package, as the operator names their topics.")
        self.balog("describe", "demo_app", "--operator", OPERATOR)
        say("\n# Start the consumer service.")
        self.start_consumer()
        self.produce_with_the_command()
        self.produce_with_get_logger()
        self.check_consumed()
        self.list_dead_letters()
        self.stop_consumer()

    def cleanup(self) -> None:
        if self.consumer is not None and self.consumer.poll() is None:
            self.consumer.kill()
            self.consumer.wait()


def main() -> int:
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="balog-demo-") as tmp:
        demo = Demo(Path(tmp))
        try:
            demo.run()
        except DemoFailed as exc:
            say(f"\ndemo FAILED: {exc}")
            err = demo.consumer_log("err")
            if err:
                say("consumer's stderr:\n" + indent(err))
            return 1
        finally:
            demo.cleanup()
    say(f"\ndemo finished in {time.monotonic() - started:.1f}s: every step happened as expected")
    return 0


if __name__ == "__main__":
    sys.exit(main())
