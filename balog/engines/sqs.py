"""The SQS engine: the seed README's ``SQSEngine``, a named configuration of the one pipeline.

::

    engine = SQSEngine(
        hub=hub,
        region="us-west-2",
        aws_access_key_id=...,
        aws_secret_access_key=...,
        consumer_operator=consumer_op,
    )
    engine.run()

Everything it does (decode, validate, route, retry with backoff, dead letters, lease keeping,
batched deletes) is :class:`~balog.engines.base.TransportEngine`'s, on an
:class:`~balog.transports.sqs.SQSTransport` built from the keyword options. What SQS needs is
data on the transport, read by the engine: long polls of 20 s and batches of 10 by default
(``engine_defaults``), the same as limits (``Capabilities.max_wait``/``max_batch``), batched
deletes (``batch_ack``), and a queue's redrive policy (``max_receive_count``), so a failing
message is dead-lettered with its reason before SQS would move it without one.
"""

from __future__ import annotations

from typing import Any

from balog.consumers import ConsumerHub, ConsumerOperator
from balog.engines.base import DefaultEventHandler, TransportEngine
from balog.exceptions import ConfigurationError
from balog.transports.sqs import SQSTransport

__all__ = ["SQSEngine"]


class SQSEngine(TransportEngine):
    """Runs a hub's consumers on SQS queues (one queue per topic the operator gives).

    The positional order is balog 1.x's: ``SQSEngine(hub, region, aws_access_key_id,
    aws_secret_access_key, polling_period, num_messages, consumer_operator,
    default_event_handler)``; ``polling_period`` (seconds of long polling) and ``num_messages``
    (messages per receive) are the old names of ``wait`` and ``batch_size``.

    Connection options (all optional; boto3's own configuration fills the gaps): ``region``,
    ``aws_access_key_id``, ``aws_secret_access_key``, ``aws_session_token``, ``profile_name``,
    ``endpoint_url``, ``session`` (a boto3 session), ``config`` (a botocore ``Config``), or
    ``transport`` (a ready :class:`~balog.transports.sqs.SQSTransport`, which the engine does not
    close). Queue options: ``create_queues`` (default ``False``), ``max_body_size``,
    ``fifo_group_field``, and every other :class:`~balog.transports.sqs.SQSTransport` option.

    Processing options: ``wait`` seconds of long polling per receive (0 to 20, default 20),
    ``batch_size`` messages per receive (1 to 10, default 10), ``lease`` the visibility timeout
    in seconds, extended while the engine holds a message (default 30), ``max_attempts``
    receives before a failing message is dead-lettered (default 5, or the redrive policy's
    ``maxReceiveCount`` if lower), and the rest of
    :class:`~balog.engines.base.TransportEngine`'s options.
    """

    transport_class = SQSTransport

    def __init__(
        self,
        hub: ConsumerHub,
        region: str | None = None,
        aws_access_key_id: str | None = None,
        aws_secret_access_key: str | None = None,
        polling_period: float | None = None,
        num_messages: int | None = None,
        consumer_operator: ConsumerOperator | None = None,
        default_event_handler: DefaultEventHandler | None = None,
        **options: Any,
    ) -> None:
        if region is not None and not isinstance(region, str):
            raise ConfigurationError(
                f"region must be a string, not {type(region).__name__} (the second positional "
                "argument of SQSEngine is the region, as in balog 1.x; pass "
                "consumer_operator= by name)"
            )
        for old, new, value in (
            ("polling_period", "wait", polling_period),
            ("num_messages", "batch_size", num_messages),
        ):
            if value is not None:
                if new in options:
                    raise ConfigurationError(f"give {new}= or its old name {old}=, not both")
                options[new] = value
        credentials = {
            "region": region,
            "aws_access_key_id": aws_access_key_id,
            "aws_secret_access_key": aws_secret_access_key,
        }
        if not isinstance(options.get("transport"), SQSTransport):
            options.update({k: v for k, v in credentials.items() if v is not None})
        elif any(v is not None for v in credentials.values()):
            raise ConfigurationError("give the credentials to the SQSTransport, not beside it")
        super().__init__(
            hub,
            consumer_operator,
            default_event_handler=default_event_handler,
            **options,
        )
