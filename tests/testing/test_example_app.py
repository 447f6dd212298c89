"""The example application's tests pass, unchanged, on every backend chosen by name.

Each case runs ``pytest examples/app/tests`` in a subprocess with the plugin's options, exactly as
docs/testing.md shows, against the real broker.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
APP_TESTS = ROOT / "examples" / "app" / "tests"


def run_app_tests(
    *options: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", str(APP_TESTS), *options],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
    )


def assert_all_passed(result: subprocess.CompletedProcess[str]) -> None:
    tail = "\n".join(result.stdout.splitlines()[-30:])
    assert result.returncode == 0, tail
    assert "4 passed" in result.stdout, tail
    assert "skipped" not in result.stdout, tail


def test_on_redis(redis_url: str) -> None:
    """The app's tests pass on Redis through kombu."""
    assert_all_passed(run_app_tests("--balog-engine=kombu", f"--balog-url={redis_url}"))


def test_on_rabbitmq(rabbitmq_url: str) -> None:
    """The app's tests pass on RabbitMQ through kombu."""
    result = run_app_tests("--balog-engine=kombu", f"--balog-url={rabbitmq_url}")
    assert_all_passed(result)
    assert "guest:guest" not in result.stdout  # the header shows the URL with its password masked


def test_on_sqs(moto_server: str) -> None:
    """The app's tests pass on SQS (the moto server), options given by environment variable."""
    result = run_app_tests(
        env={
            "BALOG_TEST_ENGINE": "sqs",
            "BALOG_TEST_OPTIONS": f"endpoint_url={moto_server} region=us-east-1 create_queues=true",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
        }
    )
    assert_all_passed(result)
    assert "balog backend: sqs" in result.stdout


def test_on_the_third_party_postgres_transport(postgres_dsn: str) -> None:
    """The app's tests pass on the balog-postgres example transport, found by name."""
    pytest.importorskip("balog_postgres")
    assert_all_passed(run_app_tests("--balog-engine=postgres", f"--balog-url={postgres_dsn}"))
