"""Amazon SQS transport on boto3: the reference backend whose semantics balog is built around.

A topic is a queue name. Delivery is SQS's own: a received message is invisible (leased) for its
visibility timeout, comes back by itself when that runs out, counts its receives
(``ApproximateReceiveCount``), and is gone only once deleted.

- ``send`` batches ``SendMessageBatch`` calls of up to 10 entries, split so that each call stays
  within ``max_body_size`` bytes (bodies plus message attributes, as SQS counts them). A single
  body over the limit raises :class:`~balog.exceptions.MessageTooLarge` before any call. Entries
  the response reports as failed by the service (not the sender) are retried with bounded
  backoff; what still failed raises :class:`~balog.exceptions.SendError` with their indexes.
- ``ack`` deletes (``DeleteMessage``; :meth:`SQSTransport.ack_many` uses ``DeleteMessageBatch``
  and checks every entry), ``nack`` and ``release`` change the visibility timeout,
  ``extend_lease`` too, within SQS's 12-hour limit.
- Dead letters go to ``<queue>-dead-letter`` (``<queue>-dead-letter.fifo`` for FIFO queues) with
  the reason in message attributes; when the queue has a redrive policy its dead-letter queue is
  used instead, and :meth:`SQSTransport.max_receive_count` reports its ``maxReceiveCount``. The
  body always goes whole: the attributes are fitted around it within ``max_body_size``.
- :meth:`SQSTransport.verify`, called when an engine starts, resolves the queue and its
  dead-letter queue (creating them with ``create_queues``): a missing one, or refused
  credentials, stop the engine before the first message instead of at the first bad one.
- FIFO queues (names ending ``.fifo``): the message group id is an event field
  (``fifo_group_field``, ``header.channel`` by default) and the deduplication id the event id;
  each delivery carries its ``MessageGroupId`` as :attr:`~balog.transports.base.Delivery.group`.
- Bodies SQS cannot carry as text (not UTF-8, or characters outside its allowed set) travel
  base64-encoded, marked by a ``balog-encoding`` message attribute, and are decoded on receipt;
  one whose marking cannot be honoured is received ``refused``, with the text that arrived.

Options not given fall back to boto3's own configuration: environment credentials, profiles,
``AWS_DEFAULT_REGION``, ``AWS_ENDPOINT_URL``. Queues are not created unless ``create_queues``.
botocore errors are translated into :mod:`balog.exceptions` at this boundary; credentials never
appear in a repr, a log line or an error message.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import dataclasses
import hashlib
import logging
import math
import re
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit

import boto3
import botocore.config
import botocore.exceptions

from balog import _secrets
from balog._text import clip
from balog.events import loads
from balog.exceptions import (
    AuthenticationError,
    ConfigurationError,
    LeaseExpired,
    MessageTooLarge,
    SendError,
    ThrottledError,
    TopicNotFound,
    TransportConnectionError,
    TransportError,
)
from balog.transports.base import (
    ATTEMPTS_HEADER,
    DEAD_LETTER_SUFFIX,
    REASON_HEADER,
    SOURCE_TOPIC_HEADER,
    Capabilities,
    Delivery,
    Transport,
    dead_letter_headers,
)

if TYPE_CHECKING:
    from mypy_boto3_sqs.client import SQSClient

__all__ = [
    "DEFAULT_MAX_BODY_SIZE",
    "ENCODING_ATTRIBUTE",
    "MAX_VISIBILITY_TIMEOUT",
    "MAX_WAIT",
    "SQSTransport",
]

logger = logging.getLogger("balog.transports.sqs")

DEFAULT_MAX_BODY_SIZE = 256 * 1024
"""SQS's classic message size limit. AWS raised it to 1 MiB in 2025; pass ``max_body_size`` to
use more where your queues allow it."""

MAX_BATCH_ENTRIES = 10
MAX_WAIT = 20
"""SQS's longest long-polling wait, in seconds."""
MAX_VISIBILITY_TIMEOUT = 12 * 60 * 60
"""SQS's limit on a message's visibility timeout, counted from its receipt."""
MAX_MESSAGE_ATTRIBUTES = 10

ENCODING_ATTRIBUTE = "balog-encoding"
"""Message attribute marking a base64-encoded body (``"base64"``)."""

_NOT_FOUND = {
    "AWS.SimpleQueueService.NonExistentQueue",
    "QueueDoesNotExist",
    "NonExistentQueue",
}
_AUTH = {
    "AccessDenied",
    "AccessDeniedException",
    "AuthFailure",
    "ExpiredToken",
    "ExpiredTokenException",
    "IncompleteSignature",
    "InvalidAccessKeyId",
    "InvalidClientTokenId",
    "InvalidSecurity",
    "MissingAuthenticationToken",
    "SignatureDoesNotMatch",
    "UnrecognizedClientException",
}
_THROTTLED = {
    "KmsThrottled",
    "RequestThrottled",
    "RequestThrottledException",
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "TooManyRequestsException",
}
_LEASE_LOST = {
    "AWS.SimpleQueueService.MessageNotInflight",
    "MessageNotInflight",
    "ReceiptHandleIsInvalid",
}
# Characters SQS accepts in a message body; anything else means base64.
_ATTRIBUTES = ("ApproximateReceiveCount",)
_FIFO_ATTRIBUTES = ("ApproximateReceiveCount", "MessageGroupId")
_NOT_SQS_TEXT = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_NOT_ID_CHAR = re.compile(r"[^0-9A-Za-z!\"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~]")
_ACCESS_KEY_ID = re.compile(r"\b(?:AKIA|ASIA|AIDA|AROA)[0-9A-Z]{12,}\b")


_XML_CODE = re.compile(r"<Code>([^<]{1,100})</Code>")
_XML_MESSAGE = re.compile(r"<Message>([^<]{0,1000})</Message>")


def _error(exc: botocore.exceptions.ClientError) -> tuple[str, set[str], str]:
    """A service error's code as shown, every code it carries, and its message.

    An endpoint that answers a JSON request with an XML error document (moto does for refused
    credentials) leaves botocore with the HTTP status as the code and the document as the
    message: the code and message are then read from the document.
    """
    error = exc.response.get("Error", {})
    codes = [str(c) for c in (error.get("Code"), error.get("QueryErrorCode")) if c]
    message = str(error.get("Message") or "")
    if "<Code>" in message:
        codes = _XML_CODE.findall(message) + codes
        found = _XML_MESSAGE.search(message)
        message = found.group(1) if found else ""
    named = [c for c in codes if not c.isdigit()]
    shown = named[0] if named else (codes[0] if codes else "Unknown")
    every = set(codes)
    if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 403:
        every.add("AccessDenied")  # SQS answers 403 only to credentials or permissions refused
    return shown, every, message


@dataclasses.dataclass(frozen=True)
class _Redrive:
    max_receive_count: int | None
    dead_letter_queue: str | None


@dataclasses.dataclass
class _Entry:
    index: int
    size: int
    request: dict[str, Any]


class SQSTransport(Transport):
    """A :class:`~balog.transports.base.Transport` over Amazon SQS (boto3).

    Credentials and endpoint: ``region``, ``aws_access_key_id``, ``aws_secret_access_key``,
    ``aws_session_token`` and ``profile_name`` build a boto3 session, unless ``session`` (a
    ``boto3.session.Session``) is given; ``endpoint_url`` points at another endpoint (a local
    SQS, or the moto server in tests). Anything not given comes from boto3's own configuration.
    ``config`` (a ``botocore.config.Config``) is merged over balog's defaults: standard retry
    mode with ``max_attempts=4`` retries (throttling and transient errors are retried with
    backoff) and a pool of 50 connections. ``client`` uses a ready-made SQS client instead.

    Behaviour: ``max_body_size`` bytes per message and per batch call; ``lease`` seconds of
    visibility timeout by default; ``create_queues`` creates missing queues (and dead-letter
    queues) instead of raising :class:`~balog.exceptions.TopicNotFound`; ``fifo_group_field``
    and ``fifo_dedup_field`` are dotted event fields; ``send_retries`` retries of entries a batch
    failed, waiting ``retry_delay`` seconds and doubling (at most 5 s).
    """

    capabilities = Capabilities(
        max_body_size=DEFAULT_MAX_BODY_SIZE,
        lease_expiry=True,
        lease_extension=True,
        receive_count=True,
        ordering=False,
        delay=True,
        batch_ack=True,
        max_batch=MAX_BATCH_ENTRIES,
        max_wait=float(MAX_WAIT),
    )
    """What a transport built with the default options can do; ``max_body_size`` follows the
    option on each instance."""

    engine_defaults = MappingProxyType({"wait": float(MAX_WAIT), "batch_size": MAX_BATCH_ENTRIES})
    """Long polls of SQS's longest 20 s (fewer, cheaper calls) and SQS's largest batch."""

    def __init__(
        self,
        *,
        region: str | None = None,
        aws_access_key_id: str | None = None,
        aws_secret_access_key: str | None = None,
        aws_session_token: str | None = None,
        profile_name: str | None = None,
        endpoint_url: str | None = None,
        session: boto3.session.Session | None = None,
        config: botocore.config.Config | None = None,
        client: Any = None,
        max_body_size: int = DEFAULT_MAX_BODY_SIZE,
        lease: float = 30.0,
        create_queues: bool = False,
        dead_letter_suffix: str = DEAD_LETTER_SUFFIX,
        fifo_group_field: str = "header.channel",
        fifo_dedup_field: str = "header.id",
        send_retries: int = 3,
        retry_delay: float = 0.1,
    ) -> None:
        if max_body_size < 1:
            raise ConfigurationError("max_body_size must be positive")
        if not 0 <= lease <= MAX_VISIBILITY_TIMEOUT:
            raise ConfigurationError(f"lease must be between 0 and {MAX_VISIBILITY_TIMEOUT} s")
        if send_retries < 0 or retry_delay < 0:
            raise ConfigurationError("send_retries and retry_delay must not be negative")
        if endpoint_url is not None:
            _check_endpoint(endpoint_url)
        self.region = region
        self.endpoint_url = endpoint_url
        self.default_lease = lease
        self.create_queues = create_queues
        self.dead_letter_suffix = dead_letter_suffix
        self.fifo_group_field = tuple(fifo_group_field.split("."))
        self.fifo_dedup_field = tuple(fifo_dedup_field.split("."))
        self.send_retries = send_retries
        self.retry_delay = retry_delay
        self.capabilities = dataclasses.replace(
            type(self).capabilities, max_body_size=max_body_size
        )
        # Only the values, never where they came from: used to scrub text from the service.
        given = [s for s in (aws_access_key_id, aws_secret_access_key, aws_session_token) if s]
        self._scrubber = _secrets.Scrubber.for_url(endpoint_url or "", *given)
        self._lock = threading.Lock()
        self._urls: dict[str, str] = {}
        self._redrive: dict[str, _Redrive] = {}
        self._closed = False
        if client is not None:
            self.client: SQSClient = client
            return
        # botocore waits 60 s for a connection and for a reply by default: a connection that
        # died silently (a dropped network path) would hold a worker that long. A reply comes
        # within the longest long poll (MAX_WAIT), so wait a little past that, and no longer.
        defaults = botocore.config.Config(
            retries={"mode": "standard", "max_attempts": 4},
            max_pool_connections=50,
            connect_timeout=5,
            read_timeout=MAX_WAIT + 5,
        )
        merged = defaults if config is None else defaults.merge(config)
        with self._translated("client setup", None):
            if session is None:
                session = boto3.session.Session(
                    aws_access_key_id=aws_access_key_id,
                    aws_secret_access_key=aws_secret_access_key,
                    aws_session_token=aws_session_token,
                    region_name=region,
                    profile_name=profile_name,
                )
            self.client = session.client("sqs", endpoint_url=endpoint_url, config=merged)

    def __repr__(self) -> str:
        region = self.region or self.client.meta.region_name
        endpoint = None if self.endpoint_url is None else _secrets.mask_url(self.endpoint_url)
        return f"SQSTransport(region={region!r}, endpoint_url={endpoint!r})"

    # -- errors -------------------------------------------------------------------------------

    def _scrub(self, text: str) -> str:
        """``text`` fit for an error message: no configured secret, nothing shaped like an
        access key id, on one line of at most 300 characters."""
        return clip(_ACCESS_KEY_ID.sub(_secrets.MASK, self._scrubber(text)), 300)

    @contextlib.contextmanager
    def _translated(self, action: str, topic: str | None) -> Iterator[None]:
        """Turn botocore's errors into balog's, chained, with no credential in the message."""
        where = f"SQS {action}" + ("" if topic is None else f" on queue {topic!r}")
        try:
            yield
        except botocore.exceptions.ClientError as exc:
            code, codes, text = _error(exc)
            message = f"{where} failed: {self._scrub(code)}: {self._scrub(text)}"
            if codes & _NOT_FOUND:
                if topic is not None:  # deleted since it was resolved: resolve it afresh
                    self._urls.pop(topic, None)
                    self._redrive.pop(topic, None)
                raise TopicNotFound(
                    f"{where} failed: the queue does not exist (create it, or pass "
                    "create_queues=True)"
                ) from exc
            if codes & _AUTH:
                raise AuthenticationError(f"credentials refused: {message}") from exc
            if codes & _THROTTLED:
                raise ThrottledError(f"{message} (still throttled after retries)") from exc
            if codes & _LEASE_LOST:
                raise LeaseExpired(f"{where} failed: receipt handle no longer valid") from exc
            raise TransportError(message) from exc
        except (
            botocore.exceptions.NoCredentialsError,
            botocore.exceptions.PartialCredentialsError,
            botocore.exceptions.CredentialRetrievalError,
        ) as exc:
            raise AuthenticationError(f"{where} failed: no usable AWS credentials found") from exc
        except botocore.exceptions.NoRegionError as exc:
            raise ConfigurationError(
                f"{where} failed: no AWS region (pass region=, or set AWS_DEFAULT_REGION)"
            ) from exc
        except (botocore.exceptions.ConnectionError, botocore.exceptions.HTTPClientError) as exc:
            raise TransportConnectionError(
                f"{where} failed: cannot reach SQS: {type(exc).__name__}"
            ) from exc
        except botocore.exceptions.ParamValidationError as exc:
            raise TransportError(f"{where} failed: {self._scrub(str(exc))}") from exc
        except botocore.exceptions.BotoCoreError as exc:
            raise TransportError(
                f"{where} failed: {type(exc).__name__}: {self._scrub(str(exc))}"
            ) from exc

    # -- queues -------------------------------------------------------------------------------

    @staticmethod
    def is_fifo(topic: str) -> bool:
        return topic.endswith(".fifo")

    def queue_url(self, topic: str, *, create: bool | None = None) -> str:
        """The URL of queue ``topic``, resolved once and cached (thread-safe).

        A missing queue raises :class:`~balog.exceptions.TopicNotFound`, or is created when
        ``create`` (default: the ``create_queues`` option) is true.
        """
        url = self._urls.get(topic)
        if url is not None:
            return url
        with self._lock:
            url = self._urls.get(topic)
            if url is not None:
                return url
            try:
                with self._translated("GetQueueUrl", topic):
                    url = self.client.get_queue_url(QueueName=topic)["QueueUrl"]
            except TopicNotFound:
                if not (self.create_queues if create is None else create):
                    raise
                attributes: dict[Any, str] = {"FifoQueue": "true"} if self.is_fifo(topic) else {}
                with self._translated("CreateQueue", topic):
                    url = self.client.create_queue(QueueName=topic, Attributes=attributes)[
                        "QueueUrl"
                    ]
                logger.info("created SQS queue %s", topic)
            self._urls[topic] = url
            return url

    def _redrive_policy(self, topic: str) -> _Redrive:
        found = self._redrive.get(topic)
        if found is not None:
            return found
        url = self.queue_url(topic)
        with self._translated("GetQueueAttributes", topic):
            attributes = self.client.get_queue_attributes(
                QueueUrl=url, AttributeNames=["RedrivePolicy"]
            ).get("Attributes", {})
        policy = _Redrive(None, None)
        raw = attributes.get("RedrivePolicy")
        if raw:
            try:
                parsed = loads(raw)
                raw_count = parsed.get("maxReceiveCount")
                count = int(raw_count) if raw_count else None
                arn = str(parsed.get("deadLetterTargetArn") or "")
                policy = _Redrive(count, arn.rsplit(":", 1)[-1] or None)
            except (ValueError, TypeError, AttributeError):
                logger.warning("queue %s has a redrive policy balog cannot read", topic)
        with self._lock:
            self._redrive[topic] = policy
        return policy

    def max_receive_count(self, topic: str) -> int | None:
        """``maxReceiveCount`` of the queue's redrive policy, or ``None`` when it has none."""
        return self._redrive_policy(topic).max_receive_count

    def capabilities_for(self, topic: str) -> Capabilities:
        """The capabilities on queue ``topic``: ``ordering`` on FIFO queues."""
        return dataclasses.replace(self.capabilities, ordering=self.is_fifo(topic))

    def dead_letter_topic(self, topic: str) -> str:
        """The redrive policy's dead-letter queue if there is one, else ``<topic>-dead-letter``
        (``<name>-dead-letter.fifo`` for a FIFO queue)."""
        target = self._redrive_policy(topic).dead_letter_queue
        if target:
            return target
        if self.is_fifo(topic):
            return topic[: -len(".fifo")] + self.dead_letter_suffix + ".fifo"
        return topic + self.dead_letter_suffix

    # -- sending ------------------------------------------------------------------------------

    def _field(self, event: Any, path: tuple[str, ...]) -> str | None:
        node = event
        for key in path:
            if not isinstance(node, dict):
                return None
            node = node.get(key)
        if node is None or isinstance(node, (dict, list)):
            return None
        text = _NOT_ID_CHAR.sub("_", str(node))[:128]
        return text or None

    def _fifo_ids(self, body: bytes) -> tuple[str, str]:
        try:
            event = loads(body)
        except (ValueError, RecursionError):
            event = None
        group = self._field(event, self.fifo_group_field) or "balog"
        dedup = self._field(event, self.fifo_dedup_field) or hashlib.sha256(body).hexdigest()
        return group, dedup

    def _entry(
        self,
        index: int,
        body: bytes,
        attributes: dict[str, dict[str, str]],
        attributes_size: int,
        fifo: bool,
    ) -> _Entry:
        text, size = _wire(body)
        size += attributes_size
        if text is None:
            text = base64.b64encode(body).decode("ascii")
            attributes = {
                **attributes,
                ENCODING_ATTRIBUTE: {"DataType": "String", "StringValue": "base64"},
            }
        limit = self.capabilities.max_body_size or DEFAULT_MAX_BODY_SIZE
        if size > limit:
            raise MessageTooLarge(size, limit)
        request: dict[str, Any] = {"Id": str(index), "MessageBody": text}
        if attributes:
            request["MessageAttributes"] = attributes
        if fifo:
            request["MessageGroupId"], request["MessageDeduplicationId"] = self._fifo_ids(body)
        return _Entry(index, size, request)

    def _batches(self, entries: list[_Entry]) -> Iterator[list[_Entry]]:
        limit = self.capabilities.max_body_size or DEFAULT_MAX_BODY_SIZE
        batch: list[_Entry] = []
        size = 0
        for entry in entries:
            if batch and (len(batch) == MAX_BATCH_ENTRIES or size + entry.size > limit):
                yield batch
                batch, size = [], 0
            batch.append(entry)
            size += entry.size
        if batch:
            yield batch

    def send(
        self,
        topic: str,
        bodies: Sequence[bytes],
        *,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        if not bodies:
            return
        attributes = {
            str(k): {"DataType": "String", "StringValue": str(v)}
            for k, v in (headers or {}).items()
            if k != ENCODING_ATTRIBUTE and str(v)
        }
        if len(attributes) > MAX_MESSAGE_ATTRIBUTES - 1:
            raise ConfigurationError(f"SQS allows at most {MAX_MESSAGE_ATTRIBUTES - 1} headers")
        attributes_size = sum(_attribute_size(k, a["StringValue"]) for k, a in attributes.items())
        fifo = self.is_fifo(topic)
        # Every entry is checked (and MessageTooLarge raised) before the first call.
        entries = [
            self._entry(i, body, attributes, attributes_size, fifo) for i, body in enumerate(bodies)
        ]
        url = self.queue_url(topic)
        sent = 0
        failed: dict[int, str] = {}
        pending = entries
        delay = self.retry_delay
        for attempt in range(self.send_retries + 1):
            retry: list[_Entry] = []
            batches = list(self._batches(pending))
            for n, batch in enumerate(batches):
                try:
                    with self._translated("SendMessageBatch", topic):
                        response = self.client.send_message_batch(
                            QueueUrl=url, Entries=[cast(Any, e.request) for e in batch]
                        )
                except TransportError as exc:
                    if sent == 0 and not failed:
                        raise
                    unsent = [e.index for b in batches[n:] for e in b] + [e.index for e in retry]
                    raise SendError(
                        f"{len(unsent) + len(failed)} of {len(bodies)} message(s) to {topic!r} "
                        f"were not sent: {exc}",
                        sorted(set(unsent) | set(failed)),
                    ) from exc
                by_id = {e.request["Id"]: e for e in batch}
                for item in response.get("Failed", []):
                    entry = by_id.get(item.get("Id", ""))
                    if entry is None:
                        continue
                    if item.get("SenderFault"):
                        failed[entry.index] = str(item.get("Code") or "SenderFault")
                    else:
                        retry.append(entry)
                sent += len(response.get("Successful", []))
            if not retry:
                break
            if attempt < self.send_retries:
                logger.warning(
                    "SQS refused %d of the message(s) sent to %s; retrying them in %.2fs",
                    len(retry),
                    topic,
                    delay,
                )
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
            else:
                failed.update((e.index, "service error") for e in retry)
            pending = retry
        if failed:
            codes = ", ".join(sorted(set(failed.values())))
            raise SendError(
                f"{len(failed)} of {len(bodies)} message(s) to {topic!r} were not sent "
                f"({self._scrub(codes)})",
                sorted(failed),
            )

    # -- receiving ----------------------------------------------------------------------------

    def receive(
        self,
        topic: str,
        *,
        max_messages: int = 10,
        wait: float = 1.0,
        lease: float | None = None,
    ) -> list[Delivery]:
        """Receive with one ``ReceiveMessage`` call (long polling up to ``wait``, at most 20 s).

        On a FIFO queue each delivery's :attr:`~balog.transports.base.Delivery.group` is its
        ``MessageGroupId``. A body marked ``balog-encoding`` that cannot be decoded comes back
        refused, with the text that arrived as its body.
        """
        lease = self.default_lease if lease is None else lease
        visibility = max(0, min(MAX_VISIBILITY_TIMEOUT, math.ceil(lease)))
        url = self.queue_url(topic)
        fifo = self.is_fifo(topic)
        # The older spelling too: some SQS emulators read only that one, and without the receive
        # count a failing message would be retried for ever.
        names: Any = _FIFO_ATTRIBUTES if fifo else _ATTRIBUTES
        with self._translated("ReceiveMessage", topic):
            response = self.client.receive_message(
                QueueUrl=url,
                MaxNumberOfMessages=max(1, min(MAX_BATCH_ENTRIES, max_messages)),
                WaitTimeSeconds=max(0, min(MAX_WAIT, math.ceil(wait))),
                VisibilityTimeout=visibility,
                MessageSystemAttributeNames=names,
                AttributeNames=names,
                MessageAttributeNames=["All"],
            )
        now = time.monotonic()
        deliveries = []
        for message in response.get("Messages", []):
            headers = {
                name: str(value.get("StringValue", ""))
                for name, value in message.get("MessageAttributes", {}).items()
                if "StringValue" in value
            }
            attributes = message.get("Attributes", {})
            body = message.get("Body", "").encode("utf-8")
            refused = None
            encoding = headers.pop(ENCODING_ATTRIBUTE, None)
            if encoding == "base64":
                try:
                    body = base64.b64decode(body, validate=True)
                except (binascii.Error, ValueError):
                    refused = f"marked {ENCODING_ATTRIBUTE}: base64, but the body is not base64"
            elif encoding is not None:
                shown = clip(encoding, 40)
                refused = f"unknown {ENCODING_ATTRIBUTE} {shown!r} (balog writes base64)"
            deliveries.append(
                Delivery(
                    topic=topic,
                    body=body,
                    message_id=str(message.get("MessageId", "")),
                    receive_count=int(attributes.get("ApproximateReceiveCount", 1)),
                    headers=headers,
                    handle=message["ReceiptHandle"],
                    lease=float(visibility),
                    received_at=now,
                    refused=refused,
                    group=attributes.get("MessageGroupId") if fifo else None,
                )
            )
        return deliveries

    # -- settling -----------------------------------------------------------------------------

    def ack(self, delivery: Delivery) -> None:
        url = self.queue_url(delivery.topic)
        with self._translated("DeleteMessage", delivery.topic):
            self.client.delete_message(QueueUrl=url, ReceiptHandle=delivery.handle)

    def ack_many(self, deliveries: Sequence[Delivery]) -> list[BaseException | None]:
        """Delete deliveries with ``DeleteMessageBatch``; return one outcome per delivery.

        ``None`` means deleted. Every entry of every response is checked: entries the service
        failed are retried (``send_retries`` times, with backoff); an entry whose receipt handle
        is no longer valid gets :class:`~balog.exceptions.LeaseExpired`; anything else a
        :class:`~balog.exceptions.TransportError`. Never raises.
        """
        outcomes: list[BaseException | None] = [None] * len(deliveries)
        by_topic: dict[str, list[int]] = {}
        for i, delivery in enumerate(deliveries):
            by_topic.setdefault(delivery.topic, []).append(i)
        for topic, indexes in by_topic.items():
            for start in range(0, len(indexes), MAX_BATCH_ENTRIES):
                chunk = indexes[start : start + MAX_BATCH_ENTRIES]
                self._delete_chunk(topic, [deliveries[i] for i in chunk], chunk, outcomes)
        return outcomes

    def _delete_chunk(
        self,
        topic: str,
        chunk: list[Delivery],
        indexes: list[int],
        outcomes: list[BaseException | None],
    ) -> None:
        try:
            url = self.queue_url(topic)
        except TransportError as exc:
            for i in indexes:
                outcomes[i] = exc
            return
        pending = {str(n): (i, d) for n, (i, d) in enumerate(zip(indexes, chunk, strict=True))}
        delay = self.retry_delay
        for attempt in range(self.send_retries + 1):
            entries: list[Any] = [
                {"Id": key, "ReceiptHandle": d.handle} for key, (_, d) in pending.items()
            ]
            try:
                with self._translated("DeleteMessageBatch", topic):
                    response = self.client.delete_message_batch(QueueUrl=url, Entries=entries)
            except TransportError as exc:
                for i, _ in pending.values():
                    outcomes[i] = exc
                return
            retry: dict[str, tuple[int, Delivery]] = {}
            for item in response.get("Failed", []):
                key = item.get("Id", "")
                if key not in pending:
                    continue
                code = str(item.get("Code") or "")
                index, delivery = pending[key]
                if code in _LEASE_LOST or (
                    code == "InvalidParameterValue" and "receipt" in str(item.get("Message", ""))
                ):
                    outcomes[index] = LeaseExpired(
                        f"SQS DeleteMessageBatch on queue {topic!r}: the receipt handle of "
                        f"message {delivery.message_id} is no longer valid"
                    )
                elif item.get("SenderFault"):
                    outcomes[index] = TransportError(
                        f"SQS DeleteMessageBatch on queue {topic!r} failed for message "
                        f"{delivery.message_id}: {self._scrub(code)}"
                    )
                else:
                    retry[key] = pending[key]
                    outcomes[index] = TransportError(
                        f"SQS DeleteMessageBatch on queue {topic!r} kept failing for message "
                        f"{delivery.message_id}: {self._scrub(code)}"
                    )
            if not retry or attempt == self.send_retries:
                return
            for index, _ in retry.values():
                outcomes[index] = None  # the next attempt decides
            logger.warning(
                "SQS failed to delete %d message(s) from %s; retrying in %.2fs",
                len(retry),
                topic,
                delay,
            )
            time.sleep(delay)
            delay = min(delay * 2, 5.0)
            pending = retry

    def _change_visibility(self, delivery: Delivery, seconds: float, action: str) -> None:
        url = self.queue_url(delivery.topic)
        timeout = max(0, min(MAX_VISIBILITY_TIMEOUT, math.ceil(seconds)))
        with self._translated(action, delivery.topic):
            self.client.change_message_visibility(
                QueueUrl=url, ReceiptHandle=delivery.handle, VisibilityTimeout=timeout
            )

    def nack(self, delivery: Delivery, *, delay: float = 0.0) -> None:
        """Make the message visible again after ``delay`` seconds (whole seconds, at most 12 h).

        Its next receipt counts one more receive (SQS counts receives, not nacks).
        """
        self._change_visibility(delivery, delay, "ChangeMessageVisibility (nack)")

    def release(self, delivery: Delivery) -> None:
        """Make the message visible again at once (visibility timeout 0).

        SQS counted its receipt already: its next ``receive_count`` is one higher.
        """
        self._change_visibility(delivery, 0.0, "ChangeMessageVisibility (release)")

    def release_many(self, deliveries: Sequence[Delivery]) -> list[BaseException | None]:
        """Release deliveries with ``ChangeMessageVisibilityBatch``; one outcome per delivery."""
        outcomes: list[BaseException | None] = [None] * len(deliveries)
        by_topic: dict[str, list[int]] = {}
        for i, delivery in enumerate(deliveries):
            by_topic.setdefault(delivery.topic, []).append(i)
        for topic, indexes in by_topic.items():
            for start in range(0, len(indexes), MAX_BATCH_ENTRIES):
                chunk = indexes[start : start + MAX_BATCH_ENTRIES]
                try:
                    url = self.queue_url(topic)
                    with self._translated("ChangeMessageVisibilityBatch", topic):
                        response = self.client.change_message_visibility_batch(
                            QueueUrl=url,
                            Entries=[
                                {
                                    "Id": str(i),
                                    "ReceiptHandle": deliveries[i].handle,
                                    "VisibilityTimeout": 0,
                                }
                                for i in chunk
                            ],
                        )
                except TransportError as exc:
                    for i in chunk:
                        outcomes[i] = exc
                    continue
                for item in response.get("Failed", []):
                    key = str(item.get("Id", ""))
                    if key.isdigit() and int(key) in chunk:
                        outcomes[int(key)] = LeaseExpired(
                            f"SQS could not release message {deliveries[int(key)].message_id} "
                            f"on {topic!r}: {self._scrub(str(item.get('Code') or ''))}"
                        )
        return outcomes

    def extend_lease(self, delivery: Delivery, lease: float) -> None:
        """Keep the message invisible for ``lease`` more seconds (ChangeMessageVisibility).

        SQS allows 12 hours from receipt in all; the extension is cut to what remains, and
        :class:`~balog.exceptions.LeaseExpired` is raised once nothing remains.
        """
        remaining = MAX_VISIBILITY_TIMEOUT - (time.monotonic() - delivery.received_at) - 1
        if remaining < 1:
            raise LeaseExpired(
                f"message {delivery.message_id} reached SQS's 12-hour visibility limit"
            )
        self._change_visibility(delivery, min(lease, remaining), "ChangeMessageVisibility")

    # -- dead letters -------------------------------------------------------------------------

    def dead_letter(self, delivery: Delivery, reason: str) -> None:
        """Send the message to its dead-letter queue with the reason, then delete it.

        The dead-letter queue is the redrive policy's target when the queue has one, else
        ``<topic>-dead-letter``, created on demand when ``create_queues`` is set (otherwise a
        missing one raises :class:`~balog.exceptions.TopicNotFound` and the message stays).
        The body always goes whole; the attributes are fitted around it within
        ``max_body_size``: the message's own attributes are left out first, then the reason is
        shortened, down to nothing when the body leaves no room. A crash between the send and
        the delete leaves a duplicate, never a loss.
        """
        target = self._dead_letter_queue(delivery.topic)
        headers = self._dead_letter_attributes(delivery, reason)
        self.send(target, [delivery.body], headers=headers)
        self.ack(delivery)

    def _dead_letter_attributes(self, delivery: Delivery, reason: str) -> dict[str, str]:
        """The balog headers, then the message's own attributes, as fit beside the body."""
        limit = self.capabilities.max_body_size or DEFAULT_MAX_BODY_SIZE
        room = limit - _wire(delivery.body)[1]
        own = dead_letter_headers(delivery, clip(reason, 1000))
        kept = [
            (k, v)
            for k, v in delivery.headers.items()
            if k not in own and k != ENCODING_ATTRIBUTE and v
        ][: MAX_MESSAGE_ATTRIBUTES - 1 - len(own)]
        # Fixed headers first (source queue, attempts), then the reason, then the rest.
        fitted: dict[str, str] = {}
        for name in (SOURCE_TOPIC_HEADER, ATTEMPTS_HEADER):
            size = _attribute_size(name, own[name])
            if size <= room - _attribute_size(REASON_HEADER, "x"):
                fitted[name] = own[name]
                room -= size
        reason_room = room - _attribute_size(REASON_HEADER, "")
        if reason_room > 0:
            fitted[REASON_HEADER] = _shorten(own[REASON_HEADER], reason_room)
            room -= _attribute_size(REASON_HEADER, fitted[REASON_HEADER])
        for name, value in kept:
            size = _attribute_size(name, value)
            if size <= room:
                fitted[name] = value
                room -= size
        return fitted

    def _dead_letter_queue(self, topic: str) -> str:
        """The name of ``topic``'s dead-letter queue, checked to exist (or created)."""
        target = self.dead_letter_topic(topic)
        try:
            self.queue_url(target)
        except TopicNotFound as exc:
            if self._redrive_policy(topic).dead_letter_queue:
                raise TopicNotFound(
                    f"the redrive policy of SQS queue {topic!r} names the dead-letter queue "
                    f"{target!r}, which does not exist: create it, or fix the policy"
                ) from exc
            raise TopicNotFound(
                f"SQS queue {topic!r} has no dead-letter queue: {target!r} does not exist; "
                f"create it, pass create_queues=True, or give {topic!r} a redrive policy"
            ) from exc
        return target

    def verify(self, topic: str) -> None:
        """Check at start-up that queue ``topic`` and its dead-letter queue exist (or create
        them, with ``create_queues``) and that SQS accepts the credentials.

        Raises :class:`~balog.exceptions.TopicNotFound` naming the missing queue and what to
        change, :class:`~balog.exceptions.AuthenticationError` for refused credentials or
        permissions, :class:`~balog.exceptions.TransportConnectionError` when SQS cannot be
        reached.
        """
        self.queue_url(topic)
        self._dead_letter_queue(topic)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(Exception):
            self.client.close()


def _attribute_size(name: str, value: str) -> int:
    """Bytes a String message attribute adds to a message, as SQS counts them."""
    return len(name.encode()) + len("String") + len(value.encode())


_ENCODING_SIZE = _attribute_size(ENCODING_ATTRIBUTE, "base64")


def _wire(body: bytes) -> tuple[str | None, int]:
    """How ``body`` travels: its text (``None`` when it must go base64-encoded) and the bytes
    it then takes, the ``balog-encoding`` attribute included."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and _NOT_SQS_TEXT.search(text) is None:
        return text, len(body)
    return None, 4 * ((len(body) + 2) // 3) + _ENCODING_SIZE


def _shorten(text: str, size: int) -> str:
    """``text`` cut to at most ``size`` UTF-8 bytes, marked ``...`` where it was cut."""
    raw = text.encode()
    if len(raw) <= size:
        return text
    if size <= 3:
        return raw[:size].decode(errors="ignore")
    return raw[: size - 3].decode(errors="ignore") + "..."


def _check_endpoint(url: str) -> None:
    """Refuse an endpoint URL botocore could not use, before it prints it whole in an error."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
        usable = parts.scheme in ("http", "https") and bool(parts.hostname)
    except ValueError:
        usable = False
    if not usable:
        raise ConfigurationError(
            f"endpoint_url {_secrets.mask_url(url)!r} is not an http:// or https:// URL with a "
            "host (characters such as / in a password must be percent-encoded)"
        )
