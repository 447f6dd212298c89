"""One fixture, ``backend``, parametrized over every backend the hostile-input tests run on."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from backends import BACKENDS, FAST_RETRY, Backend, run_engine_until

__all__ = ["FAST_RETRY", "Backend", "run_engine_until"]


@pytest.fixture(params=list(BACKENDS))
def backend(request: pytest.FixtureRequest, unique_name: str) -> Iterator[Backend]:
    """Each backend in turn, on a fresh topic; its resources are released afterwards."""
    from backends import make_backend

    yield from make_backend(request, request.param, unique_name)
