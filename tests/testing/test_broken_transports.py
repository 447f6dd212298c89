"""A deliberately broken transport fails the conformance suite, and the failure says why."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

BROKEN = '''
from balog.testing.conformance import TransportConformance
from balog.transports.memory import MemoryBroker, MemoryTransport
import pytest


class AcksOnReceive(MemoryTransport):
    """Removes every message the moment it is received: a crash or a nack loses it."""

    def receive(self, topic, **kw):
        deliveries = super().receive(topic, **kw)
        for d in deliveries:
            super().ack(d)
        return deliveries

    def ack(self, delivery):
        pass

    def nack(self, delivery, *, delay=0.0):
        pass

    def release(self, delivery):
        pass


class LosesNacks(MemoryTransport):
    """Acks where it should nack: a failed message is gone."""

    def nack(self, delivery, *, delay=0.0):
        super().ack(delivery)


class IgnoresSizeLimit(MemoryTransport):
    """Declares a limit but sends bodies over it."""

    def send(self, topic, bodies, *, headers=None):
        self.broker.put(topic, bodies, headers or {})


class IgnoresDelay(MemoryTransport):
    """Declares delay=True but redelivers a delayed nack at once."""

    def nack(self, delivery, *, delay=0.0):
        super().nack(delivery, delay=0.0)


class Base(TransportConformance):
    lease = 0.5
    timeout = 2.0
    transport_class = MemoryTransport

    @pytest.fixture(autouse=True)
    def _broker(self):
        self.broker = MemoryBroker()

    def make_transport(self):
        return self.transport_class(broker=self.broker, max_body_size=1024)


class TestAcksOnReceive(Base):
    transport_class = AcksOnReceive


class TestLosesNacks(Base):
    transport_class = LosesNacks


class TestIgnoresSizeLimit(Base):
    transport_class = IgnoresSizeLimit


class TestIgnoresDelay(Base):
    transport_class = IgnoresDelay
'''


@pytest.fixture
def broken(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makepyfile(test_broken=BROKEN)
    return pytester


def test_acking_on_receive_is_reported(broken: pytest.Pytester) -> None:
    """A transport that acks on receive fails the nack, crash and engine checks, saying so."""
    result = broken.runpytest_subprocess(
        "-k",
        "TestAcksOnReceive and (nack_redelivers or survives_its_receiver or failed_event)",
    )
    result.assert_outcomes(failed=3)
    result.stdout.fnmatch_lines(
        [
            "*nacked message never came back within 2 s*",
            "*message received but never acked did not come back*acked it on receive, or lost it*",
            "*the message was acked before its consumer finished, or its nack was lost*",
        ],
        consecutive=False,
    )


def test_losing_nacked_messages_is_reported(broken: pytest.Pytester) -> None:
    """A transport that drops nacked messages fails with 'nacked message never came back'."""
    result = broken.runpytest_subprocess(
        "-k", "TestLosesNacks and (nack_redelivers or dead_letter_after)"
    )
    outcomes = result.parseoutcomes()
    assert outcomes.get("failed") == 2, result.stdout.str()
    result.stdout.fnmatch_lines(["*nacked message never came back within 2 s*"])
    result.stdout.fnmatch_lines(["*1 dead letter(s) on*did not hold within 4 s*"])


def test_ignoring_the_size_limit_is_reported(broken: pytest.Pytester) -> None:
    """A transport that sends bodies over its declared limit fails the size check."""
    result = broken.runpytest_subprocess("-k", "TestIgnoresSizeLimit and body_size_limit")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ["*send() of a body of 1025 bytes, one over max_body_size=1024, did not raise*"]
    )


def test_ignoring_nack_delay_is_reported(broken: pytest.Pytester) -> None:
    """A transport that declares delay but redelivers at once fails the delay check."""
    result = broken.runpytest_subprocess("-k", "TestIgnoresDelay and nack_with_delay")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ["*message nacked with delay=1 s came back after*the delay was ignored*"]
    )


def test_a_correct_transport_passes_the_same_checks(broken: pytest.Pytester) -> None:
    """The checks the broken transports fail pass on the unbroken one: the failures are real."""
    broken.makepyfile(
        test_correct="""
from test_broken import Base


class TestCorrect(Base):
    pass
"""
    )
    result = broken.runpytest_subprocess(
        "test_correct.py",
        "-k",
        "nack_redelivers or survives_its_receiver or failed_event or body_size_limit "
        "or nack_with_delay or dead_letter_after",
    )
    result.assert_outcomes(passed=6)
