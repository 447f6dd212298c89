"""The transport conformance suite: does a backend keep balog's delivery contract?

Subclass :class:`TransportConformance` in a test module, with a name pytest collects (``Test*``),
and say how to build your transport::

    from balog.testing.conformance import TransportConformance

    class TestMyTransport(TransportConformance):
        def make_transport(self):
            return MyTransport(url="...")

pytest then runs every check below against it. Each check adapts to what the transport declares
in its :class:`~balog.transports.base.Capabilities`: a declared capability is checked to work, an
undeclared one is checked to be refused or absent as the contract says, so a run has no skips.
Every failure says what the backend got wrong, in the backend's terms.

Hooks a subclass may override: :meth:`~TransportConformance.make_transport` (required; it is
called several times per test, and every transport it returns must reach the same backend),
:meth:`~TransportConformance.make_engine` (defaults to a
:class:`~balog.engines.base.TransportEngine` on the transport),
:meth:`~TransportConformance.prepare_topic`, :meth:`~TransportConformance.cleanup_topic` and
:meth:`~TransportConformance.push_foreign` (put an entry on a topic as a foreign client of the
backend would; override it where the backend has a native format of its own).
Class attributes tune the timing: ``lease`` (seconds, the short lease the lease checks use),
``timeout`` (seconds something that must happen may take) and ``delay`` (the nack delay checked).
A fixture the factory needs (a server URL, a temporary path) is reached through
``self.request.getfixturevalue(name)``, or stored on ``self`` by an autouse fixture of the
subclass.
"""

from __future__ import annotations

import collections
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from balog.consumers import Consumer, ConsumerHub
from balog.engines.base import Backoff, Engine, TransportEngine
from balog.events import EventDict, encode, loads, new_event
from balog.exceptions import BalogError, LeaseExpired, MessageTooLarge, UnsupportedOperation
from balog.testing._harness import EngineHarness
from balog.transports.base import Delivery, Transport

__all__ = ["TransportConformance"]


def _event_body(n: int, **payload: Any) -> tuple[str, bytes]:
    event = new_event("balog.conformance", {"cls_type": "conformance", "n": n, **payload})
    return event["header"]["id"], encode(event)


class TransportConformance:
    """Base class of the conformance suite; see the module docstring. Not collected itself."""

    lease: float = 1.0
    """Lease, in seconds, used by the checks of lease expiry and lease extension."""

    timeout: float = 5.0
    """Seconds anything that must happen (a delivery, a redelivery) may take."""

    delay: float = 1.0
    """The ``nack(delay=...)`` checked, in seconds."""

    engine_lease: float = 30.0
    """Lease the engines of the engine checks use: long, so that only a release brings a
    message back quickly."""

    # -- hooks --------------------------------------------------------------------------------

    def make_transport(self) -> Transport:
        """Return a new transport on the backend under test. Required."""
        raise NotImplementedError(f"{type(self).__name__} must implement make_transport()")

    def make_engine(
        self, hub: ConsumerHub, transport: Transport, *, max_attempts: int, batch_size: int
    ) -> Engine:
        """Return an engine running ``hub`` on ``transport``; override for a backend's own engine.

        Its retries should be quick (well under a second) and it must not install signal
        handlers.
        """
        return TransportEngine(
            hub,
            transport=transport,
            max_attempts=max_attempts,
            batch_size=batch_size,
            backoff=Backoff(base=0.05, factor=1.0, jitter=0.0),
            wait=0.2,
            lease=self.engine_lease,
            handle_signals=False,
        )

    def prepare_topic(self, transport: Transport, topic: str) -> None:
        """Create ``topic`` (and its dead-letter topic) if the backend needs that done first."""

    def push_foreign(self, transport: Transport, topic: str) -> bytes:
        """Put one entry on ``topic`` as a client other than balog would, and return the bytes
        its dead letter must keep.

        Override it to push what a foreign producer of the backend really sends: a bare
        ``LPUSH`` on Redis, a message with another content type from ``pika`` or ``amqplib``, an
        ``aws sqs send-message``. The default sends bytes that are not JSON through
        :meth:`~balog.transports.base.Transport.send`, which is all a backend without a format
        of its own (memory) can receive.
        """
        body = b"foreign entry, not json: " + uuid.uuid4().hex.encode()
        transport.send(topic, [body])
        return body

    def cleanup_topic(self, transport: Transport, topic: str) -> None:
        """Remove what a check left on ``topic`` and its dead-letter topic (best effort)."""
        for name in (topic, transport.dead_letter_topic(topic)):
            try:
                transport.purge(name)
            except BalogError:
                pass

    # -- fixtures -----------------------------------------------------------------------------

    @pytest.fixture(autouse=True)
    def _conformance_setup(self, request: pytest.FixtureRequest) -> Iterator[None]:
        self.request = request
        self._transports: list[Transport] = []
        yield
        for transport in reversed(self._transports):
            try:
                transport.close()
            except BalogError:
                pass

    def new_transport(self) -> Transport:
        """A transport from :meth:`make_transport`, closed when the check ends."""
        transport = self.make_transport()
        if not isinstance(transport, Transport):
            raise TypeError(f"make_transport() returned {transport!r}, not a Transport")
        self._transports.append(transport)
        return transport

    @pytest.fixture
    def conformance_transport(self) -> Transport:
        return self.new_transport()

    @pytest.fixture
    def conformance_topic(self, conformance_transport: Transport) -> Iterator[str]:
        topic = f"balog-conf-{uuid.uuid4().hex[:12]}"
        self.prepare_topic(conformance_transport, topic)
        yield topic
        self.cleanup_topic(conformance_transport, topic)

    # -- helpers ------------------------------------------------------------------------------

    def receive_one(
        self,
        transport: Transport,
        topic: str,
        *,
        lease: float | None = None,
        timeout: float | None = None,
    ) -> Delivery | None:
        """The first delivery from ``topic`` within ``timeout`` seconds, or ``None``."""
        got = self.receive_some(transport, topic, 1, lease=lease, timeout=timeout)
        return got[0] if got else None

    def receive_some(
        self,
        transport: Transport,
        topic: str,
        count: int,
        *,
        lease: float | None = None,
        timeout: float | None = None,
    ) -> list[Delivery]:
        """Deliveries from ``topic`` until ``count`` arrived or ``timeout`` seconds passed."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        got: list[Delivery] = []
        while len(got) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            got.extend(
                transport.receive(
                    topic,
                    max_messages=min(10, count - len(got)),
                    wait=min(1.0, remaining),
                    lease=30.0 if lease is None else lease,
                )
            )
        return got

    def _name(self) -> str:
        return type(self).__name__

    # -- sending and receiving ----------------------------------------------------------------

    def test_send_and_receive_one(
        self, conformance_transport: Transport, conformance_topic: str
    ) -> None:
        """A body sent with headers is received once, intact, with its headers and count 1."""
        t, topic = conformance_transport, conformance_topic
        body = b"conformance single " + uuid.uuid4().hex.encode()
        t.send(topic, [body], headers={"x-conformance": "yes"})
        d = self.receive_one(t, topic)
        assert d is not None, (
            f"message sent to {topic!r} was not received within {self.timeout:g} s"
        )
        assert body == d.body, "received body differs from the body sent"
        assert topic == d.topic, f"delivery names topic {d.topic!r}, not the topic it came from"
        assert d.headers.get("x-conformance") == "yes", (
            f"headers given to send() did not come back with the delivery (got {dict(d.headers)!r})"
        )
        assert isinstance(d.message_id, str), "delivery's message_id is not a string"
        assert d.message_id, "delivery has an empty message_id"
        assert d.receive_count == 1, f"first delivery has receive_count {d.receive_count}, not 1"
        t.ack(d)

    def test_binary_body_round_trips(
        self, conformance_transport: Transport, conformance_topic: str
    ) -> None:
        """Bodies are opaque bytes: every byte value, not only UTF-8 text, comes back unchanged."""
        t, topic = conformance_transport, conformance_topic
        body = bytes(range(256)) * 4
        t.send(topic, [body])
        d = self.receive_one(t, topic)
        assert d is not None, f"binary message was not received within {self.timeout:g} s"
        assert body == d.body, "a body with non-UTF-8 bytes came back changed"
        t.ack(d)

    def test_send_batch_receives_every_body(
        self, conformance_transport: Transport, conformance_topic: str
    ) -> None:
        """Every body of one batched send is received exactly once (in order, if declared)."""
        t, topic = conformance_transport, conformance_topic
        bodies = [f"conformance batch {i:03d}".encode() for i in range(25)]
        t.send(topic, bodies)
        got = self.receive_some(t, topic, len(bodies))
        received = [d.body for d in got]
        missing = sorted(set(bodies) - set(received))
        assert missing == [], (
            f"{len(missing)} of {len(bodies)} messages sent in one batch were not received "
            f"within {self.timeout:g} s"
        )
        twice = sorted(b for b, n in collections.Counter(received).items() if n > 1)
        assert twice == [], f"{len(twice)} message(s) of a fresh batch were delivered twice"
        if t.capabilities.ordering:
            assert bodies == received, (
                "transport declares ordering=True but delivered a batch out of the order sent"
            )
        for d in got:
            t.ack(d)

    # -- settling -----------------------------------------------------------------------------

    def test_ack_removes(self, conformance_transport: Transport, conformance_topic: str) -> None:
        """An acked message never comes back, not even after its lease would have run out."""
        t, topic = conformance_transport, conformance_topic
        t.send(topic, [b"conformance ack"])
        d = self.receive_one(t, topic, lease=self.lease)
        assert d is not None, f"message was not received within {self.timeout:g} s"
        t.ack(d)
        other = self.new_transport()
        again = self.receive_one(other, topic, timeout=self.lease + 0.5)
        assert again is None, (
            f"acked message came back {self.lease + 0.5:g} s later: ack() did not remove it"
        )

    def test_nack_redelivers(
        self, conformance_transport: Transport, conformance_topic: str
    ) -> None:
        """A nacked message comes back at once with its receive_count one higher."""
        t, topic = conformance_transport, conformance_topic
        t.send(topic, [b"conformance nack"])
        d = self.receive_one(t, topic)
        assert d is not None, f"message was not received within {self.timeout:g} s"
        t.nack(d)
        again = self.receive_one(t, topic)
        assert again is not None, f"nacked message never came back within {self.timeout:g} s"
        assert d.body == again.body, "the message that came back after a nack has another body"
        assert d.receive_count + 1 == again.receive_count, (
            f"nacked message came back with receive_count {again.receive_count}, "
            f"expected {d.receive_count + 1}"
        )
        t.ack(again)

    def test_nack_with_delay_redelivers_later(
        self, conformance_transport: Transport, conformance_topic: str
    ) -> None:
        """nack(delay=D) keeps the message away for about D seconds, then it comes back."""
        t, topic = conformance_transport, conformance_topic
        t.send(topic, [b"conformance nack delay"])
        d = self.receive_one(t, topic)
        assert d is not None, f"message was not received within {self.timeout:g} s"
        t.nack(d, delay=self.delay)
        nacked_at = time.monotonic()
        if t.capabilities.delay:
            early = self.receive_one(t, topic, timeout=self.delay / 2)
            assert early is None, (
                f"message nacked with delay={self.delay:g} s came back after "
                f"{time.monotonic() - nacked_at:.2f} s: the delay was ignored"
            )
        again = self.receive_one(t, topic, timeout=self.delay + self.timeout)
        assert again is not None, (
            f"message nacked with delay={self.delay:g} s never came back within "
            f"{self.delay + self.timeout:g} s"
        )
        assert d.receive_count + 1 == again.receive_count, (
            f"message nacked with a delay came back with receive_count {again.receive_count}, "
            f"expected {d.receive_count + 1}"
        )
        t.ack(again)

    def test_receive_count_grows(
        self, conformance_transport: Transport, conformance_topic: str
    ) -> None:
        """Each redelivery after a nack counts: receive_count runs 1, 2, 3."""
        t, topic = conformance_transport, conformance_topic
        t.send(topic, [b"conformance counts"])
        counts: list[int] = []
        for _ in range(3):
            d = self.receive_one(t, topic)
            assert d is not None, (
                f"nacked message never came back within {self.timeout:g} s "
                f"(receive counts so far: {counts})"
            )
            counts.append(d.receive_count)
            if len(counts) < 3:
                t.nack(d)
            else:
                t.ack(d)
        assert counts == [1, 2, 3], f"receive_count did not grow by one per delivery: {counts}"

    # -- leases -------------------------------------------------------------------------------

    def test_unacked_message_survives_its_receiver(
        self, conformance_transport: Transport, conformance_topic: str
    ) -> None:
        """A message received but never settled comes back after its receiver closes."""
        t, topic = conformance_transport, conformance_topic
        t.send(topic, [b"conformance crash"])
        crashing = self.new_transport()
        d = self.receive_one(crashing, topic, lease=self.lease)
        assert d is not None, f"message was not received within {self.timeout:g} s"
        crashing.close()  # a receiver that dies without acking
        limit = self.lease + self.timeout
        again = self.receive_one(t, topic, timeout=limit)
        assert again is not None, (
            f"message received but never acked did not come back within {limit:g} s after its "
            "receiver closed: the transport acked it on receive, or lost it"
        )
        assert d.body == again.body, "the message that came back has another body"
        if t.capabilities.receive_count:
            assert again.receive_count == 2, (
                f"redelivery after a receiver died has receive_count {again.receive_count}; the "
                "transport declares receive_count=True, so every delivery must count"
            )
        t.ack(again)

    def test_lease_expiry_redelivers_to_another_receiver(
        self, conformance_transport: Transport, conformance_topic: str
    ) -> None:
        """With lease_expiry, an unsettled lease runs out and another receiver gets the message;
        without, the broker keeps it with its live receiver."""
        t, topic = conformance_transport, conformance_topic
        t.send(topic, [b"conformance lease"])
        d = self.receive_one(t, topic, lease=self.lease)
        assert d is not None, f"message was not received within {self.timeout:g} s"
        received_at = time.monotonic()
        other = self.new_transport()
        if not t.capabilities.lease_expiry:
            stolen = self.receive_one(other, topic, timeout=self.lease * 2)
            assert stolen is None, (
                "transport declares lease_expiry=False, yet another receiver got a message whose "
                "receiver is still connected and holding it"
            )
            t.ack(d)
            return
        limit = self.lease + self.timeout
        again = self.receive_one(other, topic, timeout=limit)
        elapsed = time.monotonic() - received_at
        assert again is not None, (
            f"message leased for {self.lease:g} s to a receiver that neither acked nor extended "
            f"it was not redelivered to another receiver within {limit:g} s"
        )
        assert elapsed >= self.lease * 0.5, (
            f"message leased for {self.lease:g} s was redelivered after only {elapsed:.2f} s"
        )
        if t.capabilities.receive_count:
            assert again.receive_count == 2, (
                f"redelivery after lease expiry has receive_count {again.receive_count}, not 2"
            )
        other.ack(again)

    def test_lease_extension_prevents_redelivery(
        self, conformance_transport: Transport, conformance_topic: str
    ) -> None:
        """With lease_extension, extending keeps a message from other receivers past its first
        lease and the holder can still ack it; without, extend_lease refuses."""
        t, topic = conformance_transport, conformance_topic
        t.send(topic, [b"conformance extend"])
        d = self.receive_one(t, topic, lease=self.lease)
        assert d is not None, f"message was not received within {self.timeout:g} s"
        if not t.capabilities.lease_extension:
            with pytest.raises(UnsupportedOperation):
                t.extend_lease(d, self.lease)
            t.ack(d)
            return
        other = self.new_transport()
        started = time.monotonic()
        while time.monotonic() - started < self.lease * 2:
            t.extend_lease(d, self.lease)
            stolen = self.receive_one(other, topic, lease=self.lease, timeout=self.lease / 3)
            assert stolen is None, (
                f"message whose lease was extended every {self.lease / 3:.2f} s was redelivered "
                f"to another receiver after {time.monotonic() - started:.2f} s"
            )
        try:
            t.ack(d)
        except LeaseExpired as exc:
            raise AssertionError(
                "ack after extend_lease raised LeaseExpired: the extension did not keep the lease"
            ) from exc

    # -- size limits --------------------------------------------------------------------------

    def test_body_size_limit(
        self, conformance_transport: Transport, conformance_topic: str
    ) -> None:
        """A body of max_body_size bytes round-trips; one byte more raises MessageTooLarge
        before anything of the batch is sent. With no declared limit, 1 MiB round-trips."""
        t, topic = conformance_transport, conformance_topic
        limit = t.capabilities.max_body_size
        size = 1024 * 1024 if limit is None else limit
        body = (b"0123456789abcdef" * (size // 16 + 1))[:size]
        t.send(topic, [body])
        d = self.receive_one(t, topic)
        assert d is not None, f"a body of {size} bytes was not received within {self.timeout:g} s"
        assert len(body) == len(d.body), f"a body of {size} bytes came back as {len(d.body)} bytes"
        assert body == d.body, f"a body of {size} bytes came back changed"
        t.ack(d)
        if limit is None:
            return
        try:
            t.send(topic, [b"conformance small", body + b"!"])
        except MessageTooLarge:
            pass
        else:
            raise AssertionError(
                f"send() of a body of {limit + 1} bytes, one over max_body_size={limit}, did not "
                "raise MessageTooLarge"
            )
        leaked = self.receive_one(t, topic, timeout=0.5)
        assert leaked is None, (
            "send() raised MessageTooLarge but had already sent another body of the same batch"
        )

    def test_close_is_idempotent(self) -> None:
        """close() may be called twice, and a transport works as a context manager."""
        t = self.new_transport()
        t.close()
        t.close()
        with self.new_transport() as other:
            assert isinstance(other, Transport)
        other.close()

    # -- with an engine -----------------------------------------------------------------------

    def _harness(self, engine: Engine, reader: Transport) -> EngineHarness:
        return EngineHarness(engine, threaded=True, transport=reader)

    def _engine(self, hub: ConsumerHub, *, max_attempts: int = 5, batch_size: int = 10) -> Engine:
        engine = self.make_engine(
            hub, self.new_transport(), max_attempts=max_attempts, batch_size=batch_size
        )
        self.request.addfinalizer(engine.close)
        return engine

    def test_failed_event_is_redelivered_to_the_engine(
        self, conformance_transport: Transport, conformance_topic: str
    ) -> None:
        """An event whose consumer raised is delivered again and then processed."""
        topic = conformance_topic
        calls: list[str] = []

        def flaky(event: EventDict) -> None:
            calls.append(event["header"]["id"])
            if len(calls) == 1:
                raise RuntimeError("conformance: first attempt fails")

        hub = ConsumerHub([Consumer(flaky, topic, name="conformance.flaky")])
        event_id, body = _event_body(1)
        conformance_transport.send(topic, [body])
        with self._harness(self._engine(hub), conformance_transport) as harness:
            harness.run_until(
                lambda: len(harness.processed) >= 1,
                timeout=self.timeout,
                message=(
                    "an event whose consumer raised was delivered again and processed: it was "
                    "not; the message was acked before its consumer finished, or its nack was lost"
                ),
            )
        assert [event_id, event_id] == calls, f"consumer calls per event id: {calls}"

    def test_dead_letter_after_max_attempts(
        self, conformance_transport: Transport, conformance_topic: str
    ) -> None:
        """After max_attempts failed receives the message is dead-lettered with its body and the
        reason, and is gone from its topic."""
        t, topic = conformance_transport, conformance_topic
        attempts = 3
        calls: list[str] = []

        def always_fails(event: EventDict) -> None:
            calls.append(event["header"]["id"])
            raise RuntimeError("conformance: always fails")

        hub = ConsumerHub([Consumer(always_fails, topic, name="conformance.always_fails")])
        _, body = _event_body(1)
        t.send(topic, [body])
        engine = self._engine(hub, max_attempts=attempts, batch_size=1)
        with self._harness(engine, t) as harness:
            found = harness.wait_for_dead_letters(topic, 1, timeout=self.timeout * 2)
        assert len(found) == 1, f"expected one dead letter, found {len(found)}"
        letter = found[0]
        assert body == letter.body, "the dead-lettered body differs from the message sent"
        assert "conformance: always fails" in letter.reason, (
            f"dead letter reason {letter.reason!r} does not carry the consumer's error"
        )
        assert "conformance.always_fails" in letter.reason, (
            f"dead letter reason {letter.reason!r} does not name the consumer that failed"
        )
        assert topic == letter.topic, f"dead letter names source topic {letter.topic!r}"
        assert attempts == letter.receive_count, (
            f"dead letter records {letter.receive_count} attempts, expected {attempts}"
        )
        assert attempts == len(calls), (
            f"the consumer ran {len(calls)} times before the message was dead-lettered, "
            f"expected max_attempts={attempts}"
        )
        left = self.receive_one(t, topic, timeout=0.5)
        assert left is None, "message was dead-lettered and is still on its topic"

    def test_malformed_bodies_are_quarantined(
        self, conformance_transport: Transport, conformance_topic: str
    ) -> None:
        """Undecodable and invalid bodies go to the dead letters intact, with a reason, and never
        reach a consumer; a valid event beside them is processed."""
        t, topic = conformance_transport, conformance_topic
        seen: list[EventDict] = []
        hub = ConsumerHub([Consumer(seen.append, topic, name="conformance.record")])
        bad = [b"\xff\xfe not utf-8", b"[1, 2, 3]", b'{"schema": "0.1.0"}']
        event_id, good = _event_body(1)
        t.send(topic, [*bad, good])
        with self._harness(self._engine(hub), t) as harness:
            harness.wait_for_events(1, timeout=self.timeout)
            found = harness.wait_for_dead_letters(topic, len(bad), timeout=self.timeout)
        assert sorted(bad) == sorted(letter.body for letter in found), (
            "malformed bodies were not all quarantined in the dead letters with their bytes intact"
        )
        assert all(letter.reason for letter in found), "a quarantined body has no reason"
        assert [event_id] == [e["header"]["id"] for e in seen], (
            "consumers saw something other than the one valid event"
        )

    def test_deliveries_waiting_behind_a_slow_one_keep_their_leases(
        self, conformance_transport: Transport, conformance_topic: str
    ) -> None:
        """A batch of five whose first event runs three leases long: the four waiting behind it
        keep their leases (or the broker holds them for their live receiver), so none lapses,
        comes back and runs a second time; each event runs once."""
        t, topic = conformance_transport, conformance_topic
        caps = t.capabilities
        calls: collections.Counter[str] = collections.Counter()
        lock = threading.Lock()

        def slow_first(event: EventDict) -> None:
            with lock:
                calls[event["header"]["id"]] += 1
                first = len(calls) == 1
            if first:
                time.sleep(self.lease * 3)  # the consumer's own slow work

        hub = ConsumerHub([Consumer(slow_first, topic, name="conformance.slow_first")])
        sent = [_event_body(i) for i in range(5)]
        t.send(topic, [body for _, body in sent])
        saved, self.engine_lease = self.engine_lease, self.lease
        try:
            engine = self._engine(hub, batch_size=5)
        finally:
            self.engine_lease = saved

        def all_ran() -> bool:
            with lock:
                return len(calls) == len(sent)

        with self._harness(engine, t) as harness:
            harness.start()
            harness.run_until(all_ran, timeout=self.timeout + self.lease * 4)
            # A lapsed lease brings a message back within about a lease: give it the time.
            deadline = time.monotonic() + self.lease * 1.5
            harness.run_until(lambda: time.monotonic() >= deadline, timeout=self.lease * 3)
        if not caps.lease_extension and caps.lease_expiry:
            return  # leases this transport cannot extend lapse by design
        twice = sorted(i for i, n in calls.items() if n > 1)
        assert twice == [], (
            f"{len(twice)} event(s) waiting in the engine behind a slow one ran twice: their "
            "leases were not kept while they waited"
        )

    def test_foreign_entry_is_never_lost(
        self, conformance_transport: Transport, conformance_topic: str
    ) -> None:
        """An entry a foreign client put on the topic is dead-lettered with a reason and its
        bytes, never dropped; a valid event beside it is processed."""
        t, topic = conformance_transport, conformance_topic
        seen: list[EventDict] = []
        hub = ConsumerHub([Consumer(seen.append, topic, name="conformance.record")])
        raw = self.push_foreign(t, topic)
        event_id, good = _event_body(1)
        t.send(topic, [good])
        with self._harness(self._engine(hub), t) as harness:
            harness.wait_for_events(1, timeout=self.timeout)
            found = harness.wait_for_dead_letters(topic, 1, timeout=self.timeout)
        assert [event_id] == [e["header"]["id"] for e in seen], (
            "consumers saw something other than the one valid event sent beside a foreign entry"
        )
        assert len(found) == 1, f"expected the foreign entry as one dead letter, found {len(found)}"
        assert raw == found[0].body, (
            "the foreign entry was dead-lettered with other bytes than were pushed: "
            f"{found[0].body[:80]!r} instead of {raw[:80]!r}"
        )
        assert found[0].reason, "the foreign entry was dead-lettered without a reason"
        left = self.receive_one(t, topic, timeout=0.5)
        assert left is None, "the foreign entry was dead-lettered and is still on its topic"

    def test_two_engines_share_the_work(
        self, conformance_transport: Transport, conformance_topic: str
    ) -> None:
        """Two engines on one topic both get work, and every event is processed at least once."""
        t, topic = conformance_transport, conformance_topic
        done: dict[str, list[str]] = {"A": [], "B": []}
        lock = threading.Lock()

        def recorder(label: str) -> Callable[[EventDict], None]:
            def consume(event: EventDict) -> None:
                time.sleep(0.02)
                with lock:
                    done[label].append(event["header"]["id"])

            return consume

        hubs = {
            label: ConsumerHub([Consumer(recorder(label), topic, name=f"conformance.{label}")])
            for label in done
        }
        ids: set[str] = set()

        def both_busy() -> bool:
            with lock:
                return bool(done["A"]) and bool(done["B"])

        def all_done() -> bool:
            with lock:
                return ids <= set(done["A"]) | set(done["B"])

        with (
            self._harness(self._engine(hubs["A"], batch_size=1), t) as a,
            self._harness(self._engine(hubs["B"], batch_size=1), t) as b,
        ):
            a.start()
            b.start()
            # Send in small rounds until both engines have had work: an engine that is still
            # connecting when the first events arrive must not make the check fail, but one
            # that never gets any work while events keep coming must.
            deadline = time.monotonic() + self.timeout * 3
            while not both_busy() and len(ids) < 300 and time.monotonic() < deadline:
                sent = [_event_body(len(ids) + i) for i in range(5)]
                t.send(topic, [body for _, body in sent])
                ids.update(event_id for event_id, _ in sent)
                round_end = time.monotonic() + 0.2
                while not both_busy() and time.monotonic() < round_end:
                    time.sleep(0.01)
            a.run_until(
                all_done,
                timeout=self.timeout * 3,
                message=f"every one of {len(ids)} events processed by one of two engines",
            )
        for label in done:
            assert done[label], (
                f"engine {label} processed none of the {len(ids)} events sent while both ran: "
                "two engines on one topic do not share the work"
            )

    def test_stop_returns_promptly_and_releases_unstarted(
        self, conformance_transport: Transport, conformance_topic: str
    ) -> None:
        """stop() lets the event in progress finish and be acked, run() returns promptly, and
        messages received but not started are available to another receiver at once."""
        t, topic = conformance_transport, conformance_topic
        started = threading.Event()
        proceed = threading.Event()
        first: list[str] = []

        def slow(event: EventDict) -> None:
            if not first:
                first.append(event["header"]["id"])
                started.set()
                proceed.wait(self.timeout)

        hub = ConsumerHub([Consumer(slow, topic, name="conformance.slow")])
        sent = [_event_body(i) for i in range(5)]
        t.send(topic, [body for _, body in sent])
        engine = self._engine(hub, batch_size=5)
        harness = self._harness(engine, t)
        try:
            harness.start()
            assert started.wait(self.timeout), (
                f"engine did not start processing within {self.timeout:g} s"
            )
            engine.stop()
            proceed.set()
            stopped_at = time.monotonic()
            thread = harness._thread
            assert thread is not None
            thread.join(self.timeout)
            assert not thread.is_alive(), (
                f"run() did not return within {self.timeout:g} s of stop()"
            )
            took = time.monotonic() - stopped_at
        finally:
            proceed.set()
            harness.stop()
        rest = {event_id for event_id, _ in sent} - set(first)
        reader = self.new_transport()
        got = self.receive_some(reader, topic, len(rest), timeout=min(self.timeout, 5.0))
        got += self.receive_some(reader, topic, 1, timeout=0.3)
        got_ids = [loads(d.body)["header"]["id"] for d in got]
        assert first[0] not in got_ids, (
            "the event in progress at stop() came back: it was not acked after its consumer "
            "finished"
        )
        assert rest == set(got_ids), (
            f"{len(rest - set(got_ids))} of {len(rest)} messages received but not started were "
            f"not available to another receiver within {min(self.timeout, 5.0):g} s of stop() "
            f"(run() returned after {took:.2f} s): they were not released, only left to their "
            f"{self.engine_lease:g} s lease"
        )
        for d in got:
            reader.ack(d)
