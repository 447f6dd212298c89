"""The SQS engine: the seed README's ``SQSEngine``, on the shared pipeline and boto3.

::

    engine = SQSEngine(
        hub=hub,
        region="us-west-2",
        aws_access_key_id=...,
        aws_secret_access_key=...,
        consumer_operator=consumer_op,
    )
    engine.run()

Everything the pipeline does (decode, validate, route, retry with backoff, dead letters, lease
keeping) comes from :class:`~balog.engines.base.TransportEngine`. On top, for SQS:

- long polling up to 20 s that does not delay :meth:`stop`: the wait runs beside the worker,
  and a poll that returns after the stop releases what it got at once;
- the deletes of a received batch go out together in ``DeleteMessageBatch`` calls (each entry
  checked), after the message that follows in the batch, or within a second; meanwhile the
  processed messages stay leased;
- a queue's redrive policy is respected: a failing message is dead-lettered, with its reason, on
  its ``maxReceiveCount``-th receive if that comes before ``max_attempts``, to the policy's
  dead-letter queue, before SQS would move it there without one;
- released (received but unstarted) messages are made visible again in batches.
"""

from __future__ import annotations

import concurrent.futures
from typing import Any

import boto3
import botocore.config

from balog._text import clip
from balog.consumers import Consumer, ConsumerHub, ConsumerOperator
from balog.engines.base import Backoff, TransportEngine, logger
from balog.exceptions import ConfigurationError
from balog.transports.base import Delivery
from balog.transports.sqs import (
    DEFAULT_MAX_BODY_SIZE,
    MAX_BATCH_ENTRIES,
    MAX_VISIBILITY_TIMEOUT,
    MAX_WAIT,
    SQSTransport,
)

__all__ = ["SQSEngine"]


class SQSEngine(TransportEngine):
    """Runs a hub's consumers on SQS queues (one queue per topic the operator gives).

    Connection options (all optional; boto3's own configuration fills the gaps): ``region``,
    ``aws_access_key_id``, ``aws_secret_access_key``, ``aws_session_token``, ``profile_name``,
    ``endpoint_url``, ``session`` (a boto3 session), ``config`` (a botocore ``Config``), or
    ``transport`` (a ready :class:`~balog.transports.sqs.SQSTransport`, which the engine does not
    close). Queue options: ``create_queues`` (default ``False``), ``max_body_size``,
    ``fifo_group_field``.

    Processing options: ``wait`` seconds of long polling per receive (0 to 20, default 20),
    ``batch_size`` messages per receive (1 to 10), ``lease`` the visibility timeout in seconds,
    extended while a consumer runs (default 30), ``max_attempts`` receives before a failing
    message is dead-lettered (default 5, or the redrive policy's ``maxReceiveCount`` if lower),
    ``backoff`` the retry delays (the visibility timeout after a failure, growing with the
    receive count), ``concurrency`` worker threads per queue, and the rest of
    :class:`~balog.engines.base.TransportEngine`'s options.
    """

    def __init__(
        self,
        hub: ConsumerHub,
        consumer_operator: ConsumerOperator | None = None,
        *,
        region: str | None = None,
        aws_access_key_id: str | None = None,
        aws_secret_access_key: str | None = None,
        aws_session_token: str | None = None,
        profile_name: str | None = None,
        endpoint_url: str | None = None,
        session: boto3.session.Session | None = None,
        config: botocore.config.Config | None = None,
        transport: SQSTransport | None = None,
        create_queues: bool = False,
        max_body_size: int = DEFAULT_MAX_BODY_SIZE,
        fifo_group_field: str = "header.channel",
        wait: float = float(MAX_WAIT),
        batch_size: int = MAX_BATCH_ENTRIES,
        lease: float = 30.0,
        max_attempts: int = 5,
        backoff: Backoff | None = None,
        concurrency: int = 1,
        **options: Any,
    ) -> None:
        if not 0 <= wait <= MAX_WAIT:
            raise ConfigurationError(f"wait must be between 0 and {MAX_WAIT} seconds on SQS")
        if not 1 <= batch_size <= MAX_BATCH_ENTRIES:
            raise ConfigurationError(f"batch_size must be between 1 and {MAX_BATCH_ENTRIES}")
        if not 1 <= lease <= MAX_VISIBILITY_TIMEOUT:
            raise ConfigurationError(f"lease must be between 1 and {MAX_VISIBILITY_TIMEOUT} s")
        owns = transport is None
        if transport is None:
            transport = SQSTransport(
                region=region,
                aws_access_key_id=aws_access_key_id,
                aws_secret_access_key=aws_secret_access_key,
                aws_session_token=aws_session_token,
                profile_name=profile_name,
                endpoint_url=endpoint_url,
                session=session,
                config=config,
                lease=lease,
                create_queues=create_queues,
                max_body_size=max_body_size,
                fifo_group_field=fifo_group_field,
            )
        elif not isinstance(transport, SQSTransport):
            raise ConfigurationError("SQSEngine's transport must be an SQSTransport")
        super().__init__(
            hub,
            consumer_operator,
            transport=transport,
            wait=wait,
            batch_size=batch_size,
            lease=lease,
            max_attempts=max_attempts,
            backoff=backoff,
            concurrency=concurrency,
            ack_delay=options.pop("ack_delay", min(1.0, lease / 4)),
            **options,
        )
        self.transport: SQSTransport = transport
        self._owns_transport = owns
        self._pollers: concurrent.futures.ThreadPoolExecutor | None = None

    # -- receiving: long polls that do not hold up stop() -------------------------------------

    def run(self) -> None:
        workers = max(1, len(self.routes()) * self.concurrency)
        self._pollers = concurrent.futures.ThreadPoolExecutor(
            max_workers=workers, thread_name_prefix="balog-sqs-poll"
        )
        try:
            super().run()
        finally:
            # A long poll abandoned by stop() ends within ``wait`` seconds and releases what it
            # brought back; the interpreter waits for it at exit rather than strand messages.
            self._pollers.shutdown(wait=False)
            self._pollers = None

    def _receive(self, topic: str, wait: float) -> list[Delivery]:
        pollers = self._pollers
        if pollers is None or wait <= 0 or self._stopping.is_set():
            return super()._receive(topic, wait)
        future = pollers.submit(super()._receive, topic, wait)
        while True:
            done, _ = concurrent.futures.wait([future], timeout=0.1)
            if done:
                return future.result()
            if self._stopping.is_set():
                future.add_done_callback(self._release_late)
                return []

    def _release_late(self, future: concurrent.futures.Future[list[Delivery]]) -> None:
        if not future.cancelled() and future.exception() is None:
            self._release(future.result())

    def _release(self, deliveries: list[Delivery]) -> None:
        if not deliveries:
            return
        outcomes = self.transport.release_many(deliveries)
        for delivery, error in zip(deliveries, outcomes, strict=True):
            if error is not None:
                logger.warning(
                    "could not release message %s (%s); it comes back when its lease expires",
                    delivery.message_id,
                    clip(f"{type(error).__name__}: {error}"),
                )

    # -- failures: the queue's redrive policy wins ----------------------------------------------

    def _failed(self, delivery: Delivery, consumer: Consumer, exc: Exception) -> str:
        try:
            limit = self.transport.max_receive_count(delivery.topic)
        except Exception:
            limit = None
        if limit is not None and limit < self.max_attempts and delivery.receive_count >= limit:
            reason = clip(f"consumer {consumer.name} raised {type(exc).__name__}: {exc}", 1000)
            return self._dead_letter(
                delivery,
                f"{reason} (after {delivery.receive_count} attempts; the queue's redrive "
                f"policy allows {limit})",
            )
        return super()._failed(delivery, consumer, exc)
