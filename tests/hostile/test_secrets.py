"""Canary credentials set everywhere balog takes them never show up in output, logs or reprs.

Each test sets canaries (an AWS key pair and session token, an AMQP password, a Redis password
in the URL), drives balog into its error paths (wrong password, unreachable endpoint) with every
logger at DEBUG, and then looks for the canaries in the captured log records (formatted, with
tracebacks), in stdout/stderr, in reprs and in the error messages.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from balog.consumers import Consumer, ConsumerHub
from balog.engines import create_engine
from balog.exceptions import BalogError, TransportError

AWS_KEY_ID = "AKIACANARY7XQ2ZP4KDW"
AWS_SECRET = "cAnArY/sEcReT+aws+9f3b1e0c7d2a5b8e4f6a1c3d5e7f9b0a2c4e6"
AWS_TOKEN = "cAnArYsEsSiOnToKeN0123456789abcdefCANARY"
AMQP_PASSWORD = "amqpCanaryPw-5e1f9c"
REDIS_PASSWORD = "redisCanaryPw-7a3d2b"
SECRETS = (AWS_SECRET, AMQP_PASSWORD, REDIS_PASSWORD)
# botocore's own DEBUG logs print the access key id and the session token (both are part of the
# signed request it logs); that is botocore's output, under the application's logging config.
# balog's own logs, reprs and errors must hold neither, and nor must the command's output.
BALOG_ONLY = (AWS_KEY_ID, AWS_TOKEN)


def dead_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def everything_at_debug(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    caplog.set_level(logging.DEBUG)
    for name in ("balog", "botocore", "boto3", "urllib3", "kombu", "amqp", "redis"):
        logging.getLogger(name).setLevel(logging.DEBUG)
    yield caplog
    for name in ("botocore", "boto3", "urllib3", "kombu", "amqp", "redis"):
        logging.getLogger(name).setLevel(logging.NOTSET)


def formatted_logs(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str]]:
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    return [(r.name, formatter.format(r)) for r in caplog.records]


def assert_no_canary(texts: list[str], logs: list[tuple[str, str]]) -> None:
    for text in texts:
        for secret in SECRETS + BALOG_ONLY:
            assert secret not in text, f"canary {secret[:8]}... in {text[:300]!r}"
    for name, line in logs:
        for secret in SECRETS:
            assert secret not in line, f"canary {secret[:8]}... in a {name} log line"
        if name.startswith("balog"):
            for secret in BALOG_ONLY:
                assert secret not in line, f"access key id in a {name} log line: {line[:300]}"


def error_chain(exc: BaseException) -> list[str]:
    texts = []
    seen: BaseException | None = exc
    while seen is not None:
        texts += [str(seen), repr(seen)]
        seen = seen.__cause__ or seen.__context__
    return texts


def run_engine_briefly(engine: Any, seconds: float) -> list[str]:
    """Run ``engine`` for about ``seconds``; return the texts of the error run() raised (an
    engine stops on a fatal error such as refused credentials), if any."""
    raised: list[BaseException] = []

    def target() -> None:
        try:
            engine.run()
        except BaseException as exc:
            raised.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    engine.stop()
    thread.join(30)
    engine.close()
    return [text for exc in raised for text in error_chain(exc)]


def test_aws_canaries_stay_out_of_errors_reprs_and_logs(
    everything_at_debug: pytest.LogCaptureFixture, sqs_endpoint: str
) -> None:
    """SQS with canary keys, against moto and against a dead port: no canary anywhere."""
    from balog.transports.sqs import SQSTransport

    creds = {
        "aws_access_key_id": AWS_KEY_ID,
        "aws_secret_access_key": AWS_SECRET,
        "aws_session_token": AWS_TOKEN,
    }
    texts: list[str] = []
    live = SQSTransport(endpoint_url=sqs_endpoint, region="us-east-1", create_queues=True, **creds)
    live.send("canary-topic", [b'{"not": "an event"}'])
    texts.append(repr(live))
    hub = ConsumerHub([Consumer(lambda e: None, "canary-topic")])
    engine = create_engine(
        "sqs",
        hub=hub,
        endpoint_url=sqs_endpoint,
        region="us-east-1",
        wait=0.5,
        handle_signals=False,
        **creds,
    )
    texts.append(repr(engine))
    texts += run_engine_briefly(engine, 1.5)  # the bad body meets a missing dead-letter queue
    live.close()
    dead = SQSTransport(
        endpoint_url=f"http://127.0.0.1:{dead_port()}",
        region="us-east-1",
        send_retries=0,
        **creds,
    )
    texts.append(repr(dead))
    with pytest.raises(TransportError) as failed:
        dead.send("canary-topic", [b"{}"])
    texts += error_chain(failed.value)
    dead.close()
    assert_no_canary(texts, formatted_logs(everything_at_debug))


@pytest.mark.parametrize("service", ["rabbitmq", "redis"])
def test_broker_passwords_stay_out_of_errors_reprs_and_logs(
    service: str, everything_at_debug: pytest.LogCaptureFixture, request: pytest.FixtureRequest
) -> None:
    """A wrong broker password: the refusal, the engine's retries and every repr hide it."""
    from balog.transports.kombu import KombuTransport

    if service == "rabbitmq":
        request.getfixturevalue("rabbitmq_url")
        url = f"amqp://guest:{AMQP_PASSWORD}@127.0.0.1:5672//"
    else:
        request.getfixturevalue("redis_url")
        url = f"redis://canaryuser:{REDIS_PASSWORD}@127.0.0.1:6379/0"  # a user Redis lacks
    texts: list[str] = []
    transport = KombuTransport(url, connect_timeout=2, max_retries=0)
    texts.append(repr(transport))
    with pytest.raises(BalogError) as refused:
        transport.send("canary-topic", [b"{}"])
    texts += error_chain(refused.value)
    transport.close()
    hub = ConsumerHub([Consumer(lambda e: None, "canary-topic")])
    engine = create_engine("kombu", hub=hub, url=url, wait=0.2, handle_signals=False)
    texts.append(repr(engine))
    texts += run_engine_briefly(engine, 1.5)
    unreachable = KombuTransport(
        url.replace("5672", str(dead_port())).replace("6379", str(dead_port())),
        connect_timeout=1,
        max_retries=0,
    )
    with pytest.raises(BalogError) as down:
        unreachable.send("canary-topic", [b"{}"])
    texts += error_chain(down.value)
    unreachable.close()
    assert_no_canary(texts, formatted_logs(everything_at_debug))


@pytest.mark.parametrize(
    "url",
    [
        f"redis://canaryuser:{REDIS_PASSWORD}@127.0.0.1:6379/0",
        f"redis://canaryuser@127.0.0.1:6379/0?password={REDIS_PASSWORD}",
    ],
    ids=["in-user-info", "in-query"],
)
def test_native_redis_password_stays_out_of_errors_reprs_and_logs(
    everything_at_debug: pytest.LogCaptureFixture, redis_url: str, url: str
) -> None:
    """The native Redis transport and engine, with the password in the user info or as
    redis-py's ``?password=``: a refused password (at verify() and at a send), the engine's
    retries, an unreachable server and every repr hide it."""
    from balog.exceptions import AuthenticationError, TransportConnectionError
    from balog.transports.redis import RedisTransport

    # canaryuser is a user Redis lacks, so the password is refused
    texts: list[str] = []
    transport = RedisTransport(url, connect_timeout=2)
    texts.append(repr(transport))
    with pytest.raises(AuthenticationError) as at_start:
        transport.verify("canary-topic")
    texts += error_chain(at_start.value)
    with pytest.raises(AuthenticationError) as refused:
        transport.send("canary-topic", [b"{}"])
    texts += error_chain(refused.value)
    transport.close()
    hub = ConsumerHub([Consumer(lambda e: None, "canary-topic")])
    engine = create_engine("redis", hub=hub, url=url, wait=0.2, handle_signals=False)
    texts.append(repr(engine))
    texts += run_engine_briefly(engine, 1.5)
    unreachable = RedisTransport(url.replace("6379", str(dead_port())), connect_timeout=1)
    texts.append(repr(unreachable))
    with pytest.raises(TransportConnectionError) as down:
        unreachable.receive("canary-topic", wait=0.0)
    texts += error_chain(down.value)
    unreachable.close()
    assert_no_canary(texts, formatted_logs(everything_at_debug))


def test_cli_output_hides_every_canary(tmp_path: Any) -> None:
    """`balog config` and `balog plugins` with canaries in the URL, options and environment:
    the canaries appear in neither stdout nor stderr, even at DEBUG."""
    env = {
        **os.environ,
        "BALOG_ENGINE": "kombu",
        "BALOG_URL": f"amqp://guest:{AMQP_PASSWORD}@127.0.0.1:5672//",
        "BALOG_OPTION_AWS_SECRET_ACCESS_KEY": AWS_SECRET,
        "BALOG_OPTION_AWS_SESSION_TOKEN": AWS_TOKEN,
        "BALOG_LOG_LEVEL": "DEBUG",
        "AWS_ACCESS_KEY_ID": AWS_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": AWS_SECRET,
    }
    commands = [
        ["config"],
        ["config", "--format", "json"],
        ["config", "--url", f"redis://:{REDIS_PASSWORD}@127.0.0.1:6379/0"],
        ["config", "-o", f"aws_secret_access_key={AWS_SECRET}", "-o", f"password={AMQP_PASSWORD}"],
        ["plugins"],
        [
            "dead-letters",
            "list",
            "canary-topic",
            "--url",
            f"redis://:{REDIS_PASSWORD}@127.0.0.1:1/0",
        ],
        [
            "send",
            "canary-topic",
            "--cls-type",
            "x",
            "--payload",
            "{}",
            "--url",
            f"amqp://guest:{AMQP_PASSWORD}@127.0.0.1:1//",
        ],
    ]
    outputs = []
    for args in commands:
        result = subprocess.run(
            [sys.executable, "-m", "balog", *args],
            capture_output=True,
            env=env,
            cwd=tmp_path,
            timeout=60,
            check=False,
        )
        outputs += [result.stdout.decode(), result.stderr.decode()]
    config_out = outputs[0]
    assert "127.0.0.1:5672" in config_out  # the URL is shown, its password masked
    assert_no_canary(outputs, [])
