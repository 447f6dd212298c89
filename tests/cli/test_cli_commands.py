"""The ``balog`` command run for real in subprocesses: help, plugins, validate, describe, config,
and the one-line errors for bad arguments and bad configuration."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import RunBalog, StartBalog, balog_argv, clean_env, write_module

from balog.events import encode, new_event

COMMANDS = [
    [],
    ["consume"],
    ["send"],
    ["plugins"],
    ["validate"],
    ["describe"],
    ["dead-letters"],
    ["dead-letters", "list"],
    ["dead-letters", "replay"],
    ["dead-letters", "purge"],
    ["config"],
]


def _one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert "Traceback" not in result.stderr
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "balog")
def test_every_command_has_help(run_balog: RunBalog, command: list[str]) -> None:
    """--help works on every command and sub-command, and exits 0."""
    result = run_balog(*command, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: balog {' '.join(command)}".rstrip())


def test_help_imports_no_backend_or_schema_library(tmp_path: Path) -> None:
    """balog --help imports no boto3, kombu, jsonschema, stevedore or sqlite3 (it stays quick)."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "balog", "--help"],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines()}
    heavy = {"boto3", "botocore", "kombu", "jsonschema", "fastjsonschema", "stevedore", "sqlite3"}
    assert set() == heavy & imported


def test_version(run_balog: RunBalog) -> None:
    """--version prints balog's version."""
    from balog import __version__

    result = run_balog("--version")
    assert (0, f"balog {__version__}\n") == (result.returncode, result.stdout)


# -- plugins ------------------------------------------------------------------------------------


def _third_party_plugins(root: Path) -> None:
    """An installed distribution with a working transport and two broken plugins."""
    write_module(
        root,
        "thirdparty_balog.transport",
        '''
        from balog.transports.base import Capabilities
        from balog.transports.memory import MemoryTransport


        class LoopTransport(MemoryTransport):
            """A third-party transport for the plugin listing."""

            capabilities = Capabilities(max_body_size=1000, ordering=True, delay=False)


        class EndpointTransport(MemoryTransport):
            """A transport that takes its URL as endpoint_url, as HTTP-based ones do."""

            def __init__(self, endpoint_url=None, region=None):
                if (endpoint_url, region) != ("http://127.0.0.1:9/q", "here"):
                    raise ValueError(f"unexpected {endpoint_url!r} {region!r}")
                super().__init__()
        ''',
    )
    info = root / "thirdparty_balog-1.2.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: thirdparty-balog\nVersion: 1.2.3\n"
    )
    (info / "entry_points.txt").write_text(
        "[balog.transports]\n"
        "loop = thirdparty_balog.transport:LoopTransport\n"
        "endpoint = thirdparty_balog.transport:EndpointTransport\n"
        "broken = thirdparty_balog.missing:Nothing\n"
        "[balog.engines]\n"
        "halfbroken = thirdparty_balog.transport:NoSuchEngine\n"
    )


def test_plugins_lists_builtins_third_party_and_failures(
    run_balog: RunBalog, packages: Path
) -> None:
    """plugins shows each engine/transport with its package and capabilities, failures with why."""
    _third_party_plugins(packages)
    result = run_balog("plugins", "--format", "json")
    assert result.returncode == 0, result.stderr
    rows = {(r["kind"], r["name"]): r for r in json.loads(result.stdout)}
    loop = rows[("transport", "loop")]
    assert (loop["status"], loop["package"], loop["version"]) == ("ok", "thirdparty-balog", "1.2.3")
    assert loop["capabilities"]["max_body_size"] == 1000
    assert loop["capabilities"]["ordering"] is True
    broken = rows[("transport", "broken")]
    assert broken["status"] == "failed"
    assert "No module named 'thirdparty_balog.missing'" in broken["reason"]
    half = rows[("engine", "halfbroken")]
    assert half["status"] == "failed"
    assert "NoSuchEngine" in half["reason"]
    for name in ("memory", "sqlite"):
        assert rows[("transport", name)]["status"] == "ok"
        assert rows[("transport", name)]["package"] == "balog"
        assert rows[("engine", name)]["status"] == "ok"

    text = run_balog("plugins")
    assert text.returncode == 0
    assert "thirdparty-balog 1.2.3  thirdparty_balog.transport:LoopTransport" in text.stdout
    assert "A third-party transport for the plugin listing." in text.stdout
    assert "capabilities: lease_expiry, receive_count, ordering; max body 1000 bytes" in (
        text.stdout
    )
    assert "FAILED TO LOAD: ModuleNotFoundError: No module named 'thirdparty_balog.missing'" in (
        text.stdout
    )


def test_url_goes_to_endpoint_url_where_the_transport_names_it_so(
    run_balog: RunBalog, packages: Path
) -> None:
    """--url reaches a transport that takes endpoint_url, not url; engine options stay out."""
    _third_party_plugins(packages)
    payload = '{"cls_type": "log", "message": "m", "severity": "info"}'
    result = run_balog(
        "send", "t", "--transport", "endpoint", "--url", "http://127.0.0.1:9/q",
        "-o", "region=here", "-o", "max_attempts=3", "--payload", payload,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout == "sent 1 event(s) to t\n"


# -- validate -----------------------------------------------------------------------------------


def _event(**payload: object) -> str:
    return encode(new_event("orders.cli", payload)).decode()


def test_validate_reports_one_line_per_bad_event_naming_the_field(
    run_balog: RunBalog, tmp_path: Path
) -> None:
    """validate exits 1 and prints file:line, the field and the reason for each bad event."""
    good = _event(cls_type="log", message="ok", severity="info")
    no_channel = json.loads(good)
    del no_channel["header"]["channel"]
    lines = [
        good,
        json.dumps(no_channel),
        "",
        _event(cls_type="log", message="ok", severity="loud"),
        "not json",
        json.dumps({"schema": "7.0", "header": {}, "payload": {}}),
        _event(cls_type="metrics", values=[{"name": "n", "value": 1}]),
    ]
    path = tmp_path / "events.ndjson"
    path.write_text("\n".join(lines) + "\n")
    result = run_balog("validate", str(path))
    assert result.returncode == 1
    assert [
        f"{path}:2: header.channel: required field is missing [InvalidEvent]",
        f"{path}:4: payload.severity: 'loud' is not one of ['debug', 'info', 'warning', 'error', "
        "'critical'] [InvalidPayload]",
        f"{path}:5: (event): not valid JSON: invalid literal, expected 'null': line 1 column 1 "
        "(char 0) [DecodeError]",
        f"{path}:6: schema: version '7.0' is not supported (balog reads 0.x) "
        "[UnsupportedSchemaVersion]",
    ] == result.stdout.splitlines()
    assert "checked 6 event(s): 4 invalid" in result.stderr


def test_validate_reads_stdin_and_json_arrays(run_balog: RunBalog, tmp_path: Path) -> None:
    """validate takes NDJSON on stdin and a JSON array file; all valid exits 0."""
    good = _event(cls_type="log", message="ok", severity="info")
    assert run_balog("validate", input=good + "\n" + good + "\n").returncode == 0
    array = tmp_path / "events.json"
    bad = json.loads(_event(cls_type="metrics", values="many"))
    array.write_text(json.dumps([json.loads(good), bad], indent=2))
    result = run_balog("validate", str(array))
    assert result.returncode == 1
    assert [f"{array}[1]: payload.values: 'many' is not of type 'array' [InvalidPayload]"] == (
        result.stdout.splitlines()
    )


def test_validate_with_a_registered_payload_schema(run_balog: RunBalog, tmp_path: Path) -> None:
    """--schema CLS_TYPE=FILE checks that cls_type's payloads against the file's schema."""
    schema = tmp_path / "order.json"
    schema.write_text(
        json.dumps(
            {
                "type": "object",
                "required": ["cls_type", "amount"],
                "properties": {"amount": {"type": "integer", "minimum": 1}},
            }
        )
    )
    events = _event(cls_type="order", amount=5) + "\n" + _event(cls_type="order") + "\n"
    plain = run_balog("validate", input=events)
    assert plain.returncode == 0
    checked = run_balog("validate", "--schema", f"order={schema}", input=events)
    assert checked.returncode == 1
    assert (checked.stdout.splitlines()) == [
        "<stdin>:2: payload.amount: required field is missing [InvalidPayload]"
    ]


# -- describe -----------------------------------------------------------------------------------

CATALOG = """
from balog.consumers import consumer_config


@consumer_config(topic="orders-{env}", cls_type="order", version="<0.5")
def book_order(settings, event):
    pass


@consumer_config(topic="orders-{env}", cls_type=("order", "refund"), version=">=0.3,<0.9")
def audit(settings, event):
    pass


@consumer_config(topic="orders-{env}", cls_type="refund", version=">=0.0,<1.0")
def refund(settings, event):
    pass
"""

OPERATOR = """
class Operator:
    def __init__(self, settings):
        self.env = settings["shop.env"]

    def get_topic(self, consumer):
        return consumer.topic.format(env=self.env)

    def process_event(self, consumer, event):
        return consumer.func(self, event)


def make(settings):
    return Operator(settings)
"""


def test_describe_lists_consumers_and_finds_overlap_and_gap(
    run_balog: RunBalog, packages: Path
) -> None:
    """describe prints the catalog and warns of an overlap and a gap."""
    write_module(packages, "shop.consumers", CATALOG)
    result = run_balog("describe", "shop")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "3 consumer(s) on 1 topic(s); balog produces schema 0.1.0 and reads >=0.0,<1.0" in out
    assert "topic orders-{env}" in out
    assert "shop.consumers.audit       cls_type order, refund  version >=0.3,<0.9" in out
    assert (
        "overlap: topic orders-{env}: cls_type order at version >=0.3,<0.5 is taken by both "
        "shop.consumers.book_order and shop.consumers.audit"
    ) in out
    assert (
        "overlap: topic orders-{env}: cls_type refund at version >=0.3,<0.9 is taken by both "
        "shop.consumers.audit and shop.consumers.refund"
    ) in out
    assert (
        "gap: topic orders-{env}: cls_type order at version >=0.9,<1.0 is taken by no consumer"
    ) in out
    assert "3 warning(s):" in out


def test_describe_json_with_operator_and_strict(run_balog: RunBalog, packages: Path) -> None:
    """--format json gives the catalog under the operator's topics; --strict exits 1 on warnings."""
    write_module(packages, "shop.consumers", CATALOG)
    write_module(packages, "shop.ops", OPERATOR)
    result = run_balog(
        "describe", "shop", "--operator", "shop.ops:make", "--set", "shop.env=prod",
        "--format", "json", "--strict",
    )  # fmt: skip
    assert result.returncode == 1
    document = json.loads(result.stdout)
    assert list(document["topics"]) == ["orders-prod"]
    names = [c["name"] for c in document["topics"]["orders-prod"]]
    assert names == ["shop.consumers.book_order", "shop.consumers.audit", "shop.consumers.refund"]
    kinds = sorted((w["kind"], w["cls_type"], w["versions"]) for w in document["warnings"])
    assert kinds == [
        ("gap", "order", ">=0.9,<1.0"),
        ("overlap", "order", ">=0.3,<0.5"),
        ("overlap", "refund", ">=0.3,<0.9"),
    ]


def test_describe_clean_catalog(run_balog: RunBalog) -> None:
    """The example package has neither overlaps nor gaps."""
    result = run_balog("describe", "demo_app", "--strict")
    assert result.returncode == 0, result.stdout
    assert "no overlaps or gaps" in result.stdout


# -- config -------------------------------------------------------------------------------------


def test_config_shows_precedence_and_masks_secrets(run_balog: RunBalog, tmp_path: Path) -> None:
    """config shows each value with its source; command line > environment > file; no secret."""
    path = tmp_path / "balog.toml"
    path.write_text(
        '[balog]\nengine = "kombu"\nurl = "amqp://worker:hunter2@mq:5672//"\n'
        '[balog.options]\nwait = 5\nlease = 60\naws_secret_access_key = "AKIASECRET"\n'
    )
    result = run_balog(
        "config", "--config", str(path), "-o", "wait=3", "--format", "json",
        env={"BALOG_ENGINE": "sqs", "BALOG_OPTION_LEASE": "90"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["engine"] == "sqs"
    assert shown["url"] == "amqp://worker:**@mq:5672//"
    assert shown["options"] == {"wait": 3, "lease": 90, "aws_secret_access_key": "**"}
    assert {
        "file": "command line",
        "engine": "environment BALOG_ENGINE",
        "url": f"file {path}",
        "option:wait": "command line",
        "option:lease": "environment BALOG_OPTION_LEASE",
        "option:aws_secret_access_key": f"file {path}",
    } == shown["sources"]
    text = run_balog("config", "--config", str(path))
    assert "hunter2" not in text.stdout + text.stderr
    assert "AKIASECRET" not in text.stdout + text.stderr
    assert "url" in text.stdout


# -- errors -------------------------------------------------------------------------------------

BAD_ARGUMENTS = [
    (["frobnicate"], {}, 2, "balog: error: argument COMMAND: invalid choice: 'frobnicate'"),
    (["consume"], {}, 2, "balog consume: error: the following arguments are required: PACKAGE"),
    (["send", "t", "--count", "x"], {}, 2, "argument --count: invalid int value: 'x'"),
    (["dead-letters"], {}, 2, "the following arguments are required: ACTION"),
    (["consume", "demo_app", "--log-level", "loud"], {}, 2, "argument --log-level"),
    (["consume", "no_such_package_here"], {}, 1, "no package or module named"),
    (["consume", "demo_app", "--engine", "nosuch"], {}, 1, "no balog.engines plugin named"),
    (["consume", "demo_app", "-o", "novalue"], {}, 1, "--option 'novalue' is not KEY=VALUE"),
    (
        ["consume", "demo_app", "-o", 'queue_arguments={"x-max-length": 2'],
        {},
        1,
        "-o queue_arguments starts with '{' but is not valid JSON",
    ),
    (["consume", "demo_app"], {"BALOG_URLL": "sqlite:///x"}, 1, "did you mean BALOG_URL?"),
    (["config"], {"BALOG_OPTIONS_WAIT": "1"}, 1, "did you mean BALOG_OPTION_WAIT?"),
    (["consume", "demo_app", "--concurrency", "0"], {}, 1, "concurrency must be"),
    (["consume", "demo_app", "--operator", "nomod_xyz:f"], {}, 1, "cannot import operator"),
    (["consume", "demo_app"], {"BALOG_CONCURRENCY": "many"}, 1, "BALOG_CONCURRENCY"),
    (["config"], {"BALOG_CONFIG": "missing.toml"}, 1, "config file missing.toml does not exist"),
    (["send", "t", "--payload", "{bad"], {}, 1, "--payload is not valid JSON"),
    (["send", "t", "--payload", "{}"], {}, 1, "the payload has no cls_type"),
    (["dead-letters", "purge", "t"], {}, 1, "add --yes to confirm"),
    (["validate", "no-such-file.ndjson"], {}, 1, "no such file: no-such-file.ndjson"),
]


@pytest.mark.parametrize(
    ("argv", "env", "status", "message"), BAD_ARGUMENTS, ids=[" ".join(a[0]) for a in BAD_ARGUMENTS]
)
def test_bad_arguments_give_one_line_and_no_traceback(
    run_balog: RunBalog, argv: list[str], env: dict[str, str], status: int, message: str
) -> None:
    """A bad argument or setting exits non-zero with a single error line on stderr."""
    result = run_balog(*argv, env=env, timeout=30)
    assert status == result.returncode, result.stderr
    assert message in _one_line_error(result)


SEND = ["send", "t", "--cls-type", "log", "--payload", '{"message": "m", "severity": "info"}']


@pytest.mark.parametrize(
    ("args", "env", "message", "where"),
    [
        (["-o", "bogus=1"], {}, "has no option 'bogus'", "-o bogus"),
        (["-o", "wiat=1"], {}, "has no option 'wiat'; did you mean 'wait'?", "-o wiat"),
        (["-o", "lease=abc"], {}, "'abc'", "-o lease"),
        ([], {"BALOG_OPTION_LEASE": "abc"}, "'abc'", "BALOG_OPTION_LEASE"),
        (["-o", "max_body_size=abc"], {}, "max_body_size='abc'", "-o max_body_size"),
        ([*SEND, "-o", "pth=x"], {}, "has no option 'pth'; did you mean 'path'?", "-o pth"),
    ],
    ids=["unknown", "misspelt", "wrong-type", "wrong-type-from-environment", "transport-option",
         "send-misspelt"],
)  # fmt: skip
def test_option_errors_say_where_the_option_was_set(
    run_balog: RunBalog, args: list[str], env: dict[str, str], message: str, where: str
) -> None:
    """An option the engine (or, for send, the transport) refuses (unknown, misspelt, of the
    wrong type) stops the command with one line naming it and ending with where it was set."""
    command = args if args[:1] == ["send"] else ["consume", "demo_app", *args]
    result = run_balog(*command, env=env, timeout=30)
    line = _one_line_error(result)
    assert result.returncode == 1
    assert message in line
    assert line.endswith(f"; set by {where}")


BAD_FILES = [
    ("bad.toml", "[balog\nengine = 'sqs'\n", "bad.toml: not valid TOML"),
    ("bad.ini", "balog.engine = sqs\n", "bad.ini: not a valid INI file"),
    ("none.ini", "[other]\nx = 1\n", "no [app:main] or [balog] section"),
    ("types.toml", "[balog]\nengine = 3\n", "engine must be a non-empty string"),
    ("conc.toml", "[balog]\nconcurrency = 'x'\n", "concurrency must be a whole number"),
    ("opts.toml", "[balog]\noptions = 5\n", "balog.options must be a table"),
    ("settings.yaml", "balog: {}\n", "use a .toml, .ini, .cfg or .conf file"),
    ("binary.ini", "\udcff", "not UTF-8 text"),
    ("typo.toml", "[balog]\nengin = 'sqs'\n", "unknown key 'engin' in [balog] of"),
    ("typo.ini", "[app:main]\nbalog.urll = x\n", "did you mean 'balog.url'?"),
]


@pytest.mark.parametrize(("name", "text", "message"), BAD_FILES, ids=[f[0] for f in BAD_FILES])
@pytest.mark.parametrize("command", ["consume", "send", "config"])
def test_bad_config_files_give_one_line_and_no_traceback(
    run_balog: RunBalog, tmp_path: Path, name: str, text: str, message: str, command: str
) -> None:
    """A malformed config file stops every command with one line naming the file and the fault."""
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8", "surrogateescape"))
    args = {"consume": ["consume", "demo_app"], "send": ["send", "t"], "config": ["config"]}
    result = run_balog(*args[command], "--config", str(path), input="", timeout=30)
    assert result.returncode == 1
    assert message in _one_line_error(result)


def test_errors_never_show_a_url_password(run_balog: RunBalog, packages: Path) -> None:
    """An error whose text carries the configured URL shows it with the password masked."""
    write_module(
        packages,
        "leaky",
        """
        def make(settings):
            raise RuntimeError(f"cannot reach {settings['balog.url']}")
        """,
    )
    result = run_balog(
        "consume", "demo_app", "--operator", "leaky:make",
        env={"BALOG_URL": "amqp://worker:s3cret@mq:5672//"},
    )  # fmt: skip
    line = _one_line_error(result)
    assert result.returncode == 1
    assert line == (
        "balog: error: operator factory 'leaky:make' raised RuntimeError: cannot reach "
        "amqp://worker:**@mq:5672//"
    )


def test_python_dash_m_and_console_script_agree(run_balog: RunBalog) -> None:
    """The console script 'balog' is installed next to the interpreter and runs the same main."""
    script = Path(sys.executable).with_name("balog")
    if not script.exists():
        pytest.skip("the console script is not installed next to this interpreter")
    result = subprocess.run(
        [str(script), "--version"], env=clean_env(), capture_output=True, text=True, check=False
    )
    assert run_balog("--version").stdout == result.stdout
    assert balog_argv("x")[-3:] == ["-m", "balog", "x"]


# -- where packages and the config file are found -----------------------------------------------

CWD_PACKAGE = """
from balog.consumers import consumer_config


@consumer_config(topic="cwd-topic", cls_type="job")
def work(event):
    pass
"""


@pytest.mark.parametrize(
    ("args", "status", "expected"),
    [
        (["describe", "cwdpkg"], 0, "cwdpkg.work"),
        (["consume", "cwdpkg", "--engine", "nosuch"], 1, "no balog.engines plugin named 'nosuch'"),
    ],
    ids=["describe", "consume"],
)
def test_console_script_imports_packages_from_the_current_directory(
    tmp_path: Path, args: list[str], status: int, expected: str
) -> None:
    """The installed 'balog' script finds a package in the current directory, as python -m
    does (consume gets past the import to the engine)."""
    script = Path(sys.executable).with_name("balog")
    assert script.exists(), "the console script is installed next to the interpreter"
    write_module(tmp_path, "cwdpkg.__init__", CWD_PACKAGE)
    result = subprocess.run(
        [str(script), *args],
        env=clean_env(),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert status == result.returncode, result.stderr
    assert expected in result.stdout + result.stderr


def test_balog_toml_in_the_current_directory_is_used(
    run_balog: RunBalog, start_balog: StartBalog, tmp_path: Path
) -> None:
    """With no --config and no BALOG_CONFIG, ./balog.toml configures every command; consume's
    start-up line says it was read; BALOG_CONFIG set empty reads no file."""
    db = tmp_path / "from-toml.sqlite3"
    (tmp_path / "balog.toml").write_text(
        f'[balog]\nurl = "sqlite:///{db}"\n[balog.options]\nwait = 0.2\n'
    )
    shown = run_balog("config", "--format", "json")
    assert shown.returncode == 0, shown.stderr
    document = json.loads(shown.stdout)
    assert (f"sqlite:///{db}", "balog.toml") == (document["url"], document["file"])
    assert document["sources"]["file"] == "current directory"
    consumer = start_balog("consume", "demo_app")
    line = consumer.wait_for_line("balog: consuming")
    assert line.endswith("; config ./balog.toml (found in the current directory)")
    assert f"url sqlite:///{db}" in line
    assert consumer.stop() == 0
    ignored = run_balog("config", "--format", "json", env={"BALOG_CONFIG": ""})
    assert json.loads(ignored.stdout)["file"] is None


def test_config_masks_nested_secrets_and_query_passwords(
    run_balog: RunBalog, tmp_path: Path
) -> None:
    """balog config shows nested secret options and a Redis ?password= masked, as text and
    JSON; JSON option values are shown as JSON."""
    path = tmp_path / "redis.toml"
    path.write_text(
        '[balog]\nengine = "redis"\nurl = "redis://127.0.0.1:6379/0?password=QUERYCANARY"\n'
        '[balog.options.sentinel_kwargs]\npassword = "NESTEDCANARY"\nsocket_timeout = 2\n'
    )
    json_out = run_balog("config", "--config", str(path), "--format", "json")
    text_out = run_balog(
        "config", "--config", str(path), "-o", 'transport_options={"token": "OPTIONCANARY"}'
    )
    for result in (json_out, text_out):
        assert result.returncode == 0, result.stderr
        for canary in ("QUERYCANARY", "NESTEDCANARY", "OPTIONCANARY"):
            assert canary not in result.stdout + result.stderr
    document = json.loads(json_out.stdout)
    assert document["url"] == "redis://127.0.0.1:6379/0?password=**"
    expected = {"sentinel_kwargs": {"password": "**", "socket_timeout": 2}}
    assert expected == document["options"]
    assert 'option transport_options  {"token": "**"}' in text_out.stdout
