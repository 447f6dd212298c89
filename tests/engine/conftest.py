"""The ``backend`` fixture for the engine tests: every backend in turn, on a fresh topic."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from backends import BACKENDS, Backend, make_backend


@pytest.fixture(params=list(BACKENDS))
def backend(request: pytest.FixtureRequest, unique_name: str) -> Iterator[Backend]:
    """Each backend in turn, on a fresh topic; its resources are released afterwards."""
    yield from make_backend(request, request.param, unique_name)
