"""``balog consume`` and friends on the embedded sqlite default, across real processes.

Consumers record what they do in a ledger file (one ``O_APPEND`` line per step), so the tests can
check that every event was processed, once, by which process.
"""

from __future__ import annotations

import json
import os
import pty
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import EXAMPLES, balog_argv, clean_env, wait_for, write_module

from balog.events import encode, new_event
from balog.transports.sqlite import SQLiteTransport

WORKER = """
import os
import time

from balog.consumers import consumer_config

if os.environ.get("IMPORT_SLEEP"):
    open(os.environ["LEDGER"] + ".importing", "w").close()
    time.sleep(float(os.environ["IMPORT_SLEEP"]))

def _record(step, event):
    line = f"{step} {event['header']['id']} {os.getpid()}\\n"
    fd = os.open(os.environ["LEDGER"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


@consumer_config(topic=os.environ["TOPIC"], cls_type="job", version="<1.0")
def work(event):
    _record("start", event)
    time.sleep(float(os.environ.get("WORK_SECONDS", "0")))
    if event["payload"].get("fail") and os.environ.get("FAIL_JOBS") == "1":
        raise RuntimeError("job refused")
    _record("done", event)
"""


def ledger(path: Path, step: str = "done") -> list[tuple[str, int]]:
    """``(event id, pid)`` for each ledger line of ``step``, in order."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        kind, event_id, pid = line.split()
        if kind == step:
            rows.append((event_id, int(pid)))
    return rows


def jobs(count: int, **payload: object) -> list[dict[str, object]]:
    return [new_event("tests.cli", {"cls_type": "job", "n": n, **payload}) for n in range(count)]


def ndjson(events: list[dict[str, object]]) -> str:
    return "".join(encode(e).decode() + "\n" for e in events)


class Env:
    """What one test's processes share: the database file, the topic and the ledger."""

    def __init__(self, root: Path, packages: Path, topic: str) -> None:
        self.db = root / "events.sqlite3"
        self.ledger = root / "ledger.txt"
        self.topic = topic
        self.packages = packages
        self.root = root
        self.processes: list[subprocess.Popen[bytes]] = []

    def env(self, **extra: str) -> dict[str, str]:
        return clean_env(
            [self.packages, EXAMPLES],
            BALOG_URL=f"sqlite:///{self.db}",
            LEDGER=str(self.ledger),
            TOPIC=self.topic,
            **extra,
        )

    def consume(self, *args: str, name: str = "consumer", **extra: str) -> subprocess.Popen[bytes]:
        """Start ``balog consume worker`` (stderr to a file named after ``name``)."""
        err = open(self.root / f"{name}.err", "wb")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(
            balog_argv("consume", "worker", "-o", "wait=0.2", *args),
            env=self.env(**extra),
            stdout=subprocess.DEVNULL,
            stderr=err,
            cwd=self.root,
        )
        err.close()
        self.processes.append(proc)
        return proc

    def stderr_of(self, name: str = "consumer") -> str:
        return (self.root / f"{name}.err").read_text()

    def wait_running(self, name: str = "consumer") -> None:
        wait_for(lambda: "engine running" in self.stderr_of(name), what=f"{name} to start")

    def run(self, *args: str, input: str = "", **extra: str) -> subprocess.CompletedProcess[str]:  # noqa: A002
        return subprocess.run(
            balog_argv(*args),
            env=self.env(**extra),
            input=input,
            capture_output=True,
            text=True,
            timeout=60,
            cwd=self.root,
            check=False,
        )

    def stop(self, proc: subprocess.Popen[bytes]) -> int:
        proc.send_signal(signal.SIGTERM)
        return proc.wait(timeout=30)

    def transport(self) -> SQLiteTransport:
        return SQLiteTransport(self.db)


@pytest.fixture
def env(tmp_path: Path, packages: Path, unique_name: str) -> Iterator[Env]:
    write_module(packages, "worker", WORKER)
    shared = Env(tmp_path, packages, unique_name)
    yield shared
    for proc in shared.processes:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_consume_processes_events_from_two_producers_exactly_once(env: Env) -> None:
    """Events from `balog send` and from get_logger in other processes are each processed once."""
    consumer = env.consume("--status-interval", "0.3")
    env.wait_running()
    events = jobs(40)
    send = subprocess.Popen(
        balog_argv("send", env.topic),
        env=env.env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=env.root,
    )
    producer = subprocess.run(
        [
            sys.executable,
            "-c",
            "import os, balog\n"
            "balog.configure('sqlite', topic=os.environ['TOPIC'], url=os.environ['BALOG_URL'])\n"
            "log = balog.get_logger('tests.producer')\n"
            "for n in range(10):\n"
            "    log.info('job', {'cls_type': 'job', 'n': n}, context={'n': n})\n"
            "assert balog.flush(10)\n",
        ],
        env=env.env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    out, _ = send.communicate(ndjson(events), timeout=60)
    assert producer.returncode == 0, producer.stderr
    assert (send.returncode, out) == (0, f"sent 40 event(s) to {env.topic}\n")
    wait_for(lambda: len(ledger(env.ledger)) >= 50, what="50 events processed")
    assert env.stop(consumer) == 0
    done = [event_id for event_id, _ in ledger(env.ledger)]
    assert len(done) == 50
    assert len(set(done)) == 50
    assert {e["header"]["id"] for e in events} <= set(done)  # type: ignore[index]
    stderr = env.stderr_of()
    assert "Traceback" not in stderr
    assert f"| {env.topic} " in stderr
    assert "balog: stopped; processed 50, retried 0, dead-lettered 0" in stderr
    assert env.transport().size(env.topic) == 0


def test_sigterm_finishes_in_flight_work_and_loses_nothing(env: Env) -> None:
    """SIGTERM mid-run: started events finish, unstarted ones stay queued for the next worker."""
    events = jobs(30)
    assert env.run("send", env.topic, input=ndjson(events)).returncode == 0
    first = env.consume("--concurrency", "2", WORK_SECONDS="0.15")
    wait_for(lambda: len(ledger(env.ledger, "start")) >= 4, what="work to start")
    assert env.stop(first) == 0
    started = ledger(env.ledger, "start")
    finished = ledger(env.ledger)
    assert sorted(started) == sorted(finished)  # nothing abandoned half-way
    assert len(finished) < 30
    remaining = env.transport().size(env.topic)
    assert remaining == 30 - len(finished)

    second = env.consume(name="second")
    wait_for(lambda: len(ledger(env.ledger)) >= 30, what="the rest to be processed")
    assert env.stop(second) == 0
    done = [event_id for event_id, _ in ledger(env.ledger)]
    assert sorted(done) == sorted(e["header"]["id"] for e in events)  # type: ignore[index]


def test_sigterm_while_importing_packages_exits_cleanly(env: Env) -> None:
    """A SIGTERM that arrives while the packages are still being imported ends with 0, and
    takes no event."""
    assert env.run("send", env.topic, input=ndjson(jobs(2))).returncode == 0
    proc = env.consume(IMPORT_SLEEP="2")
    marker = Path(str(env.ledger) + ".importing")
    wait_for(marker.exists, what="the package import to begin")
    assert env.stop(proc) == 0
    assert "balog: stopped" in env.stderr_of()
    assert "engine running" not in env.stderr_of()
    assert env.transport().size(env.topic) == 2


def test_two_consumers_share_the_work_without_duplicates(env: Env) -> None:
    """Two `balog consume` on one sqlite file and topic split the events, each done once."""
    first = env.consume("-o", "batch_size=5", name="one", WORK_SECONDS="0.005")
    second = env.consume("-o", "batch_size=5", name="two", WORK_SECONDS="0.005")
    env.wait_running("one")
    env.wait_running("two")
    events = jobs(200)
    assert env.run("send", env.topic, input=ndjson(events)).returncode == 0
    wait_for(lambda: len(ledger(env.ledger)) >= 200, what="200 events processed")
    assert env.stop(first) == 0
    assert env.stop(second) == 0
    done = ledger(env.ledger)
    assert sorted(i for i, _ in done) == sorted(e["header"]["id"] for e in events)  # type: ignore[index]
    pids = {pid for _, pid in done}
    assert pids == {first.pid, second.pid}


def test_send_from_ndjson_wraps_payloads_and_keeps_events(env: Env) -> None:
    """send reads NDJSON: whole events go as they are, payload lines are wrapped in an event."""
    whole = new_event("orders.web", {"cls_type": "job", "n": 1})
    lines = encode(whole).decode() + "\n\n" + json.dumps({"n": 2}) + "\n"
    result = env.run(
        "send", env.topic, "--channel", "orders.batch", "--cls-type", "job", input=lines
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"sent 2 event(s) to {env.topic}\n"
    with env.transport() as transport:
        got = transport.receive(env.topic, max_messages=10, wait=0)
        bodies = [json.loads(d.body) for d in got]
    assert bodies[0] == whole
    assert bodies[1]["header"]["channel"] == "orders.batch"
    assert bodies[1]["payload"] == {"n": 2, "cls_type": "job"}


def test_send_stops_at_an_invalid_line_after_sending_the_lines_before(env: Env) -> None:
    """A bad NDJSON line ends send with one error line saying where; earlier lines were sent."""
    lines = ndjson(jobs(3)) + '{"cls_type": "log", "severity": "loud"}\n' + ndjson(jobs(2))
    result = env.run("send", env.topic, input=lines)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "balog: error: stdin line 4: invalid event: payload.message: required field is missing "
        "(sent 3 event(s) before it)"
    ]
    assert env.transport().size(env.topic) == 3


def test_send_payload_argument_count(env: Env) -> None:
    """--payload with --count sends that many events, each with its own id."""
    result = env.run(
        "send", env.topic, "--cls-type", "job", "--payload", '{"n": 7}', "--count", "3"
    )
    assert result.returncode == 0, result.stderr
    with env.transport() as transport:
        got = transport.receive(env.topic, max_messages=10, wait=0)
    ids = {json.loads(d.body)["header"]["id"] for d in got}
    assert len(ids) == 3


def test_send_shows_progress_only_on_a_terminal(env: Env) -> None:
    """A long send shows progress when stderr is a terminal, and never when it is a pipe."""
    piped = env.run("send", env.topic, "--batch-size", "10", input=ndjson(jobs(50)))
    assert piped.returncode == 0
    assert piped.stderr == ""
    leader, follower = pty.openpty()
    shown = b""
    try:
        proc = subprocess.Popen(
            balog_argv("send", env.topic, "--batch-size", "10"),
            env=env.env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=follower,
            cwd=env.root,
        )
        os.close(follower)
        follower = -1
        assert proc.stdin is not None
        # A slow producer upstream: the progress line appears once sending takes a while.
        for chunk in (jobs(20), jobs(20), jobs(20)):
            proc.stdin.write(ndjson(chunk).encode())
            proc.stdin.flush()
            time.sleep(0.4)
        proc.stdin.close()
        assert proc.wait(timeout=60) == 0
        while True:
            try:
                data = os.read(leader, 4096)
            except OSError:  # the terminal's other end is closed: all was read
                break
            if not data:
                break
            shown += data
    finally:
        os.close(leader)
        if follower != -1:
            os.close(follower)
    assert b" events  " in shown
    assert shown.startswith(b"\r")
    assert shown.endswith(b"\r\x1b[K")  # wiped at the end


def test_dead_letters_list_replay_and_purge(env: Env) -> None:
    """Dead letters are listed with reasons, replayed onto the topic after a fix, and purged."""
    consumer = env.consume("-o", "max_attempts=1", FAIL_JOBS="1")
    env.wait_running()
    refused = jobs(1, fail=True)[0]
    assert env.run("send", env.topic, input=ndjson([refused])).returncode == 0
    assert env.run("send", env.topic, "--raw", input="this is not json\n").returncode == 0
    transport = env.transport()
    dead_topic = transport.dead_letter_topic(env.topic)
    wait_for(lambda: transport.size(dead_topic) == 2, what="two dead letters")
    transport.close()
    listed_json = json.loads(env.run("dead-letters", "list", env.topic, "--format", "json").stdout)
    assert sorted(d["receive_count"] for d in listed_json) == [1, 1]
    assert env.stop(consumer) == 0

    listed = env.run("dead-letters", "list", env.topic)
    assert listed.returncode == 0
    text = listed.stdout
    assert f"2 dead letter(s) on {env.topic}" in text
    assert f"id {refused['header']['id']}  channel tests.cli  cls_type job" in text
    assert (
        "reason: consumer worker.work raised RuntimeError: job refused (after 1 attempts)" in text
    )
    assert "body of 16 bytes, not JSON" in text
    assert "reason: invalid event: DecodeError: not valid JSON" in text

    replayed = env.run("dead-letters", "replay", env.topic)
    assert replayed.stdout == f"replayed 2 dead letter(s) onto {env.topic}\n"
    assert env.transport().size(env.topic) == 2

    fixed = env.consume("-o", "max_attempts=1", name="fixed")
    wait_for(lambda: len(ledger(env.ledger)) == 1, what="the replayed job to be processed")
    transport = env.transport()
    wait_for(lambda: transport.size(dead_topic) == 1, what="the bad body to be dead-lettered")
    transport.close()
    assert env.stop(fixed) == 0
    assert [refused["header"]["id"]] == [i for i, _ in ledger(env.ledger)]

    purged = env.run("dead-letters", "purge", env.topic, "--yes")
    assert purged.stdout == f"purged 1 dead letter(s) of {env.topic}\n"
    after = env.run("dead-letters", "list", env.topic)
    assert f"0 dead letter(s) on {env.topic}" in after.stdout


def test_demo_runs_and_exits_zero(tmp_path: Path) -> None:
    """The README's demo (make demo) finishes with exit 0 and shows each step."""
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "demo.py")],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "dead letter(s) on demo-events-dev" in result.stdout
    assert "demo finished" in result.stdout


def test_status_line_reports_counts_per_topic(env: Env) -> None:
    """The periodic status line gives processed/retried/dead-lettered and a rate per topic."""
    consumer = env.consume("--status-interval", "0.2")
    env.wait_running()
    assert env.run("send", env.topic, input=ndjson(jobs(3))).returncode == 0
    wait_for(lambda: "processed 3, retried 0, dead-lettered 0" in env.stderr_of(), what="status")
    assert env.stop(consumer) == 0
    status = [line for line in env.stderr_of().splitlines() if line.startswith("balog: processed")]
    assert status
    assert all(f"| {env.topic} " in line and line.endswith("/s") for line in status)


def test_consume_and_send_configured_by_a_pyramid_style_ini_file(env: Env) -> None:
    """An INI [app:main] names the url, options, operator and its settings for consume and send."""
    ini = env.root / "app.ini"
    ini.write_text(
        "[app:main]\n"
        f"balog.url = sqlite:///{env.db}\n"
        "balog.engine.wait = 0.2\n"
        "balog.operator = demo_app.operator:ConsumerOperator\n"
        "demo.env = ini\n"
        "demo.ledger = %(here)s/ini-ledger.txt\n"
    )
    plain = clean_env([env.packages, EXAMPLES])
    err = open(env.root / "ini.err", "wb")  # noqa: SIM115 - closed right after the start
    consumer = subprocess.Popen(
        balog_argv("consume", "demo_app", "--config", str(ini)),
        env=plain,
        stdout=subprocess.DEVNULL,
        stderr=err,
        cwd=env.root,
    )
    err.close()
    env.processes.append(consumer)
    env.wait_running("ini")
    payload = '{"values": [{"name": "n", "value": 2}]}'
    sent = subprocess.run(
        balog_argv("send", "demo-events-ini", "--config", str(ini), "--cls-type", "metrics",
                   "--payload", payload, "--channel", "from.ini"),
        env=plain, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert sent.returncode == 0, sent.stderr
    ledger_file = env.root / "ini-ledger.txt"
    wait_for(ledger_file.exists, what="the event to be consumed")
    assert env.stop(consumer) == 0
    (line,) = ledger_file.read_text().splitlines()
    assert line.split(" ")[1:] == ["from.ini", "metrics(total=2)"]
    assert f"url sqlite:///{env.db}; options wait=0.2" in env.stderr_of("ini")
