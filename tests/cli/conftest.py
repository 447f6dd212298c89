"""Fixtures for the command-line tests: run the real ``balog`` command in a subprocess."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"

RunBalog = Callable[..., subprocess.CompletedProcess[str]]


def clean_env(extra_paths: list[Path] | None = None, **overrides: str) -> dict[str, str]:
    """The environment without any BALOG_* variable, with ``extra_paths`` on PYTHONPATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BALOG_")}
    paths = [str(p) for p in extra_paths or []]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    if paths:
        env["PYTHONPATH"] = os.pathsep.join(paths)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(overrides)
    return env


def balog_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "balog", *args]


@pytest.fixture
def packages(tmp_path: Path) -> Path:
    """A directory put on the subprocesses' PYTHONPATH, where tests write consumer packages."""
    root = tmp_path / "site"
    root.mkdir()
    return root


def write_module(root: Path, dotted: str, source: str) -> Path:
    """Write ``source`` as module ``dotted`` under ``root``, making the packages on the way."""
    parts = dotted.split(".")
    directory = root
    for part in parts[:-1]:
        directory = directory / part
        directory.mkdir(exist_ok=True)
        init = directory / "__init__.py"
        if not init.exists():
            init.write_text("")
    path = directory / f"{parts[-1]}.py"
    path.write_text(textwrap.dedent(source))
    return path


@pytest.fixture
def run_balog(packages: Path, tmp_path: Path) -> RunBalog:
    """Run ``python -m balog ARGS`` to completion; returns the completed process (text)."""

    def run(
        *args: str,
        env: Mapping[str, str] | None = None,
        input: str | None = None,  # noqa: A002 - subprocess's name
        timeout: float = 60.0,
    ) -> subprocess.CompletedProcess[str]:
        full_env = clean_env([packages, EXAMPLES], **dict(env or {}))
        return subprocess.run(
            balog_argv(*args),
            env=full_env,
            input=input if input is not None else "",
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=tmp_path,
            check=False,
        )

    return run


def wait_for(condition: Callable[[], bool], timeout: float = 30.0, what: str = "") -> None:
    """Poll ``condition`` until it holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or condition}")
        time.sleep(0.05)


class BalogProcess:
    """A ``balog`` command running in the background, its stderr kept in a file."""

    def __init__(self, argv: list[str], env: Mapping[str, str], cwd: Path, err: Path) -> None:
        self.err = err
        with open(err, "wb") as stream:
            self.proc = subprocess.Popen(
                argv, env=dict(env), cwd=cwd, stdout=subprocess.DEVNULL, stderr=stream
            )

    @property
    def stderr(self) -> str:
        return self.err.read_text(errors="replace")

    def wait_for_line(self, text: str, timeout: float = 30.0) -> str:
        """The first stderr line holding ``text``, once there (fail if the process ends first)."""

        def found() -> bool:
            if text in self.stderr:
                return True
            assert self.proc.poll() is None, f"balog exited {self.proc.returncode}: {self.stderr}"
            return False

        wait_for(found, timeout, f"{text!r} on stderr")
        return next(line for line in self.stderr.splitlines() if text in line)

    def wait_exit(self, timeout: float) -> int:
        """The exit status, once the process ends by itself within ``timeout`` seconds."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(
                f"balog did not exit within {timeout}s; stderr:\n{self.stderr[-3000:]}"
            ) from None

    def stop(self) -> int:
        """SIGTERM, then the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=30)


StartBalog = Callable[..., BalogProcess]


@pytest.fixture
def start_balog(packages: Path, tmp_path: Path) -> Iterator[StartBalog]:
    """Start ``python -m balog ARGS`` in the background (cwd: the test's directory); every
    process still running at the end of the test is killed."""
    started: list[BalogProcess] = []

    def start(*args: str, env: Mapping[str, str] | None = None) -> BalogProcess:
        full_env = clean_env([packages, EXAMPLES], **dict(env or {}))
        err = tmp_path / f"balog-{len(started)}.err"
        process = BalogProcess(balog_argv(*args), full_env, tmp_path, err)
        started.append(process)
        return process

    yield start
    for process in started:
        if process.proc.poll() is None:
            process.proc.kill()
            process.proc.wait()


def error_line(stderr: str) -> str:
    """The last line of ``stderr``, which must be balog's one-line error, with no traceback."""
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert lines, "nothing on stderr"
    assert lines[-1].startswith("balog: error: "), stderr
    return lines[-1]
