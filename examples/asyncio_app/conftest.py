"""The example's tests. pytest puts this folder on ``sys.path`` for them (a ``conftest.py``
outside a package), so they import ``signups`` as uvicorn does with ``--app-dir``."""

from __future__ import annotations

import pathlib

import pytest


@pytest.fixture
def database(tmp_path: pathlib.Path) -> str:
    """A fresh sqlite file for the producer and the engine of one test."""
    return str(tmp_path / "signups.sqlite3")
