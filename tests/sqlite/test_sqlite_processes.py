"""Several processes on one sqlite file: producers and consumers share a topic safely."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from balog.transports.sqlite import SQLiteTransport

WORKER = str(Path(__file__).with_name("sqlite_worker.py"))


def wait_for(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def read_ledger(path: Path) -> list[int]:
    if not path.exists():
        return []
    return [int(line) for line in path.read_text().split()]


class Processes:
    """Starts worker processes and makes sure none outlives the test."""

    def __init__(self) -> None:
        self.started: list[subprocess.Popen[bytes]] = []

    def start(self, *args: str) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [sys.executable, WORKER, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        self.started.append(proc)
        return proc

    def finish(self, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> tuple[int, str]:
        _, err = proc.communicate(timeout=timeout)
        return proc.returncode, err.decode(errors="replace")

    def kill_all(self) -> None:
        for proc in self.started:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()


@pytest.fixture
def processes() -> Iterator[Processes]:
    procs = Processes()
    yield procs
    procs.kill_all()


def test_two_consumers_one_producer_exactly_once(
    tmp_path: Path, unique_name: str, processes: Processes
) -> None:
    """Two consumer processes and a producer process: every event processed once, both share."""
    total = 1000
    database = str(tmp_path / "shared.sqlite3")
    ledgers = [tmp_path / "ledger-a.txt", tmp_path / "ledger-b.txt"]
    consumers = [processes.start("consume", database, unique_name, str(p)) for p in ledgers]
    # Each consumer creates its ledger as it starts: wait for both, so that both get a share.
    assert wait_for(lambda: all(p.exists() for p in ledgers), timeout=30.0)
    producer = processes.start("produce", database, unique_name, "0", str(total))
    assert processes.finish(producer, timeout=60.0)[0] == 0

    def all_done() -> bool:
        return sum(len(read_ledger(p)) for p in ledgers) >= total

    assert wait_for(all_done, timeout=40.0)
    for proc in consumers:
        proc.send_signal(signal.SIGTERM)
    results = [processes.finish(proc) for proc in consumers]
    assert [code for code, _ in results] == [0, 0], [err for _, err in results]

    seen = [read_ledger(p) for p in ledgers]
    counts = Counter(seen[0] + seen[1])
    assert sorted(counts) == list(range(total))
    assert [n for n, c in counts.items() if c > 1] == []
    assert all(len(s) > 0 for s in seen), [len(s) for s in seen]
    with SQLiteTransport(database) as transport:
        assert (transport.size(unique_name), transport.dead_letters(unique_name)) == (0, [])


def test_killed_consumer_loses_nothing(
    tmp_path: Path, unique_name: str, processes: Processes
) -> None:
    """A consumer killed mid-run leaves its leased events to the other once the lease runs out."""
    total = 400
    database = str(tmp_path / "killed.sqlite3")
    victim_ledger, survivor_ledger = tmp_path / "victim.txt", tmp_path / "survivor.txt"
    # The victim is slow, so that it is surely killed with work left and leases held.
    victim = processes.start("consume", database, unique_name, str(victim_ledger), "1.0", "0.02")
    producer = processes.start("produce", database, unique_name, "0", str(total))
    assert processes.finish(producer, timeout=60.0)[0] == 0
    assert wait_for(lambda: len(read_ledger(victim_ledger)) >= 20, timeout=20.0)
    os.kill(victim.pid, signal.SIGKILL)
    processes.finish(victim)
    survivor = processes.start("consume", database, unique_name, str(survivor_ledger), "1.0")

    def settled() -> bool:
        with SQLiteTransport(database) as transport:
            return transport.size(unique_name) == 0

    assert wait_for(settled, timeout=40.0)
    survivor.send_signal(signal.SIGTERM)
    assert processes.finish(survivor)[0] == 0
    processed = read_ledger(victim_ledger) + read_ledger(survivor_ledger)
    assert len(read_ledger(survivor_ledger)) > 0
    assert sorted(set(processed)) == list(range(total))
    # Only what the victim held when it died may run twice: at most one batch.
    assert len(processed) - total <= 10


def test_sigterm_finishes_in_flight_and_releases_the_rest(
    tmp_path: Path, unique_name: str, processes: Processes
) -> None:
    """A consumer stopped by SIGTERM mid-run loses nothing and leaves nothing to run twice."""
    total = 300
    database = str(tmp_path / "term.sqlite3")
    first_ledger, second_ledger = tmp_path / "first.txt", tmp_path / "second.txt"
    producer = processes.start("produce", database, unique_name, "0", str(total))
    assert processes.finish(producer, timeout=60.0)[0] == 0
    first = processes.start("consume", database, unique_name, str(first_ledger), "30", "0.01")
    assert wait_for(lambda: len(read_ledger(first_ledger)) >= 30, timeout=20.0)
    first.send_signal(signal.SIGTERM)
    code, err = processes.finish(first)
    assert code == 0, err
    stopped_at = len(read_ledger(first_ledger))
    with SQLiteTransport(database) as transport:
        # Released, not left leased: the rest is available at once, with a 30 s lease unspent.
        assert (transport.in_flight(unique_name), transport.size(unique_name)) == (
            0,
            total - stopped_at,
        )
    second = processes.start("consume", database, unique_name, str(second_ledger))
    assert wait_for(lambda: stopped_at + len(read_ledger(second_ledger)) >= total, timeout=30.0)
    second.send_signal(signal.SIGTERM)
    assert processes.finish(second)[0] == 0
    processed = read_ledger(first_ledger) + read_ledger(second_ledger)
    assert sorted(processed) == list(range(total))
