"""Fixtures for the command-line tests: run the real ``balog`` command in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Mapping
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
