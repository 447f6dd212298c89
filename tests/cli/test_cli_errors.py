"""What ``balog`` says when a command fails: one line naming the cause and the setting to change,
secrets scrubbed, exit status 1; the full detail only at ``--log-level DEBUG``."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import StartBalog, error_line, write_module

from balog.cli._common import explain
from balog.config import load_config
from balog.exceptions import (
    AuthenticationError,
    ConfigurationError,
    TopicMismatch,
    TopicNotFound,
    TransportConnectionError,
)

AMQP = "amqp://worker:PASSCANARY@mq.internal:5672//"


def test_credentials_refused_names_where_the_url_was_set(tmp_path: Path) -> None:
    """An AuthenticationError says to check the URL's user and password, naming the argument,
    variable or file key that set it, and scrubs the password even from the backend's text."""
    refused = AuthenticationError("login refused (the server saw password PASSCANARY)")
    from_flag = load_config(environ={}, values={"url": AMQP})
    from_env = load_config(environ={"BALOG_URL": AMQP})
    path = tmp_path / "balog.toml"
    path.write_text(f'[balog]\nurl = "{AMQP}"\n')
    from_file = load_config(path, environ={})
    expected = [
        "login refused (the server saw password **); check the user name and password in --url",
        "login refused (the server saw password **); check the user name and password in BALOG_URL",
        "login refused (the server saw password **); check the user name and password in "
        f"url in [balog] of {path}",
    ]
    assert expected == [explain(refused, c) for c in (from_flag, from_env, from_file)]


def test_unreachable_backend_names_the_url_or_says_none_is_set() -> None:
    """A TransportConnectionError points at the URL's host and port, or says the engine's default
    was used when no URL is configured."""
    down = TransportConnectionError("cannot connect to 127.0.0.1:1")
    with_url = load_config(environ={"BALOG_URL": "amqp://127.0.0.1:1//"})
    without = load_config(environ={"BALOG_ENGINE": "kombu"})
    assert explain(down, with_url) == (
        "cannot connect to 127.0.0.1:1; check the host and port in BALOG_URL, and that the "
        "backend is running"
    )
    assert explain(down, without) == (
        "cannot connect to 127.0.0.1:1; no url is set, so engine 'kombu' used its default: set "
        "one with --url, BALOG_URL or url in [balog] of balog.toml"
    )


def test_queue_mismatch_names_queue_arguments() -> None:
    """A TopicMismatch names queue_arguments and where it was set, or says how to set it."""
    mismatch = TopicMismatch("queue 'q' exists with x-max-length 10")
    given = load_config(environ={}, options=['queue_arguments={"x-max-length": 20}'])
    assert explain(mismatch, given) == (
        "queue 'q' exists with x-max-length 10; make queue_arguments (-o queue_arguments) match "
        "the existing queue, or delete it"
    )
    assert "give the same ones with -o queue_arguments=JSON" in explain(
        mismatch, load_config(environ={})
    )
    missing = explain(TopicNotFound("no queue 'q'"), given)
    assert (
        missing
        == "no queue 'q'; create the queue, or check the topic the consumers (or --operator) name"
    )


def test_option_errors_say_where_the_option_was_set() -> None:
    """An engine's ConfigurationError about an option gets where that option was set appended;
    an error that already says so is left as it is."""
    config = load_config(environ={"BALOG_OPTION_QUEUE_ARGUMETS": "{}"})
    unknown = ConfigurationError(
        "engine 'kombu' has no option 'queue_argumets'; did you mean 'queue_arguments'?"
    )
    assert explain(unknown, config).endswith("; set by BALOG_OPTION_QUEUE_ARGUMETS")
    named = ConfigurationError("BALOG_OPTION_QUEUE_ARGUMETS: queue_argumets is wrong")
    assert str(named) == explain(named, config)


FATAL_ENGINE = '''
import sys

from balog import exceptions
from balog.engines.base import TransportEngine


class FatalEngine(TransportEngine):
    """An engine whose start-up check fails with the error named by its option fail_with."""

    def __init__(self, hub, consumer_operator=None, *, fail_with, url, **options):
        super().__init__(hub, consumer_operator, transport="memory", **options)
        self.fail_with = fail_with
        self.url = url

    def run(self):
        try:
            raise ConnectionRefusedError(f"the server at {self.url} said no")
        except ConnectionRefusedError as exc:
            error = getattr(exceptions, self.fail_with)
            raise error(f"start-up check failed on {self.url}") from exc

    def close(self):
        print("fatal-engine: closed", file=sys.stderr, flush=True)
        super().close()
'''


@pytest.fixture
def fatal_engine(packages: Path) -> None:
    """A third-party engine, installed as 'fatal', whose run() raises at once."""
    write_module(packages, "fatal_balog.engine", FATAL_ENGINE)
    info = packages / "fatal_balog-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fatal-balog\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[balog.engines]\nfatal = fatal_balog.engine:FatalEngine\n"
    )


@pytest.mark.parametrize(
    ("error", "hint"),
    [
        ("AuthenticationError", "; check the user name and password in --url"),
        ("TransportConnectionError", "; check the host and port in --url, and that the backend"),
        ("TopicMismatch", "; the queue exists with other arguments: give the same ones with"),
        ("TopicNotFound", "; create the queue, or check the topic the consumers"),
    ],
)
def test_consume_ends_with_exit_1_and_one_line_when_run_raises(
    fatal_engine: None, start_balog: StartBalog, error: str, hint: str
) -> None:
    """When the engine's run() raises a fatal error, consume closes the engine and exits 1 with
    one line: the cause, what to change, no password, no traceback and no 'stopped' line."""
    consumer = start_balog(
        "consume", "demo_app", "--engine", "fatal", "--url", AMQP, "-o", f"fail_with={error}"
    )
    assert consumer.wait_exit(60) == 1
    stderr = consumer.stderr
    line = error_line(stderr)
    assert line.startswith("balog: error: start-up check failed on amqp://worker:**@mq.internal")
    assert hint in line
    assert "fatal-engine: closed" in stderr
    assert "balog: stopped" not in stderr
    assert "PASSCANARY" not in stderr


def test_debug_log_level_shows_the_detail_without_secrets(
    fatal_engine: None, start_balog: StartBalog
) -> None:
    """At --log-level DEBUG the traceback, with the backend's own error, comes before the one
    line; secrets are scrubbed from it too."""
    consumer = start_balog(
        "consume", "demo_app", "--engine", "fatal", "--url", AMQP,
        "-o", "fail_with=AuthenticationError", "--log-level", "DEBUG",
    )  # fmt: skip
    assert consumer.wait_exit(60) == 1
    stderr = consumer.stderr
    assert "balog: debug: the error in full:" in stderr
    assert "ConnectionRefusedError: the server at amqp://worker:**@mq.internal:5672// said no" in (
        stderr
    )
    assert stderr.splitlines()[-1].startswith("balog: error: start-up check failed")
    assert "PASSCANARY" not in stderr
