"""What the ported balog 1.x tests share: a hub of balog 1.x's fixture consumers."""

from __future__ import annotations

import pytest

from balog.consumers import ConsumerHub

from . import my_consumers


@pytest.fixture
def hub() -> ConsumerHub:
    """A hub with the five consumers of balog 1.x's tests/fixtures/my_consumers.py."""
    hub = ConsumerHub()
    hub.scan(my_consumers)
    return hub
