"""Configuration loading: TOML, INI, BALOG_* variables, precedence, masking."""

from __future__ import annotations

from pathlib import Path

import pytest

from balog.config import (
    Config,
    coerce,
    load_config,
    mask_option,
    mask_text,
    mask_url,
    read_file,
)
from balog.engines import DEFAULT_ENGINE
from balog.exceptions import ConfigurationError

TOML = """
[balog]
engine = "kombu"
url = "amqp://worker:hunter2@127.0.0.1:5672//"
concurrency = 3
operator = "myapp.ops:make"

[balog.options]
wait = 5
lease = 60

[api.sqs]
queue_env = "prod"
"""

INI = """
[app:main]
balog.engine = sqs
balog.engine.region = us-west-2
balog.engine.wait = 20
balog.options.visible = true
balog.url = https://user:p%40ss@sqs.example.com/q
api.sqs.queue_env = develop
data_dir = %(here)s/data

[worker]
balog.engine = memory
"""


@pytest.fixture
def toml_file(tmp_path: Path) -> Path:
    path = tmp_path / "balog.toml"
    path.write_text(TOML)
    return path


@pytest.fixture
def ini_file(tmp_path: Path) -> Path:
    path = tmp_path / "production.ini"
    path.write_text(INI)
    return path


def test_defaults_use_the_default_engine() -> None:
    """With no file, variables or arguments the engine is balog's default (sqlite)."""
    config = load_config(environ={})
    assert DEFAULT_ENGINE == "sqlite"
    assert config.engine == DEFAULT_ENGINE
    assert config.sources["engine"] == "default"
    assert config.options == {}
    assert config.url is None


def test_toml_file_sets_engine_options_and_flat_settings(toml_file: Path) -> None:
    """A TOML file's [balog] table sets the engine and options; every key becomes a setting."""
    config = load_config(file=str(toml_file), environ={})
    assert config.engine == "kombu"
    assert config.url == "amqp://worker:hunter2@127.0.0.1:5672//"
    assert config.concurrency == 3
    assert config.options == {"wait": 5, "lease": 60}
    assert config.settings["api.sqs.queue_env"] == "prod"
    assert config.operator == "myapp.ops:make"
    expected = {"wait": 5, "lease": 60, "url": config.url, "concurrency": 3}
    assert expected == config.engine_options()


def test_ini_file_reads_paste_style_flat_keys(ini_file: Path) -> None:
    """INI [app:main] keys balog.engine(.option) work as in Pyramid settings; %(here)s expands."""
    config = load_config(file=str(ini_file), environ={})
    assert config.engine == "sqs"
    assert config.options == {"region": "us-west-2", "wait": 20, "visible": True}
    assert config.url == "https://user:p%40ss@sqs.example.com/q"
    assert config.settings["api.sqs.queue_env"] == "develop"
    assert str(ini_file.parent / "data") == config.settings["data_dir"]


def test_ini_section_can_be_named(ini_file: Path) -> None:
    """FILE#SECTION reads that section of an INI file."""
    config = load_config(file=f"{ini_file}#worker", environ={})
    assert config.engine == "memory"
    assert config.options == {}


def test_environment_overrides_file_and_command_line_overrides_both(toml_file: Path) -> None:
    """Precedence is command line, then BALOG_* variables, then the file, key by key."""
    environ = {
        "BALOG_CONFIG": str(toml_file),
        "BALOG_ENGINE": "sqs",
        "BALOG_OPTION_WAIT": "7",
        "BALOG_OPTION_REGION": "eu-west-1",
        "BALOG_TEST_AMQP_URL": "amqp://ignored",
    }
    config = load_config(
        environ=environ,
        values={"engine": "memory", "url": None},
        options=["region=us-east-2", "batch_size=4"],
    )
    assert config.engine == "memory"
    assert config.sources["engine"] == "command line"
    # url: only the file sets it.
    assert config.url == "amqp://worker:hunter2@127.0.0.1:5672//"
    assert f"file {toml_file}" == config.sources["url"]
    assert config.options == {"wait": 7, "lease": 60, "region": "us-east-2", "batch_size": 4}
    assert config.sources["option:wait"] == "environment BALOG_OPTION_WAIT"
    assert config.sources["option:region"] == "command line"
    assert f"file {toml_file}" == config.sources["option:lease"]


def test_effective_balog_keys_reach_the_operator_settings(toml_file: Path) -> None:
    """The operator's settings hold the file's keys, --set values and the effective engine."""
    config = load_config(
        file=str(toml_file), environ={"BALOG_ENGINE": "memory"}, settings=["demo.env=ci"]
    )
    assert config.settings["balog.engine"] == "memory"
    assert config.settings["demo.env"] == "ci"
    assert config.settings["api.sqs.queue_env"] == "prod"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("amqp://guest:guest@127.0.0.1:5672//", "amqp://guest:**@127.0.0.1:5672//"),
        ("redis://:s3cret@localhost:6379/0", "redis://:**@localhost:6379/0"),
        ("sqlite:///var/lib/events.db", "sqlite:///var/lib/events.db"),
        (
            "https://sqs.example.com/q?token=abc&region=x",
            "https://sqs.example.com/q?token=**&region=x",
        ),
        ("not a url", "not a url"),
        ("guest:guest@localhost:5672", "guest:**@localhost:5672"),
        ("amqp://user:p@ss@host:5672//", "amqp://user:**@host:5672//"),
        ("amqp://user:pa[ss@host//", "amqp://**@host//"),
        ("me@example.com", "me@example.com"),
    ],
)
def test_mask_url_hides_passwords(url: str, expected: str) -> None:
    """Passwords in URLs, and secret-named query values, are shown as **."""
    assert expected == mask_url(url)


def test_mask_option_hides_secret_names_and_url_passwords() -> None:
    """Options named like secrets are masked whole; URL-valued options lose their password."""
    assert mask_option("aws_secret_access_key", "wJalrXUtnFEMI") == "**"
    assert mask_option("password", "guest") == "**"
    assert mask_option("region", "us-west-2") == "us-west-2"
    assert mask_option("broker", "amqp://u:pw@h//") == "amqp://u:**@h//"


def test_describe_masks_every_secret() -> None:
    """The printable rows of a configuration carry no password or secret option."""
    config = load_config(
        environ={"BALOG_URL": "amqp://admin:topsecret@mq:5672//"},
        options={"aws_secret_access_key": "KEYVALUE", "wait": 1},
    )
    text = repr(config.describe()) + repr(config.masked())
    assert "topsecret" not in text
    assert "KEYVALUE" not in text
    assert ("url", "amqp://admin:**@mq:5672//", "environment BALOG_URL") in config.describe()


def test_coerce_turns_setting_strings_into_values() -> None:
    """Strings from INI files, variables and --option become ints, floats and booleans."""
    assert [
        coerce("1"),
        coerce("0.5"),
        coerce("yes"),
        coerce("off"),
        coerce("us-west-2"),
    ] == [1, 0.5, True, False, "us-west-2"]


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    """A TOML syntax error is a ConfigurationError that names the file."""
    path = tmp_path / "bad.toml"
    path.write_text("[balog\nengine = 'x'\n")
    with pytest.raises(ConfigurationError, match=r"bad\.toml: not valid TOML"):
        read_file(str(path))


def test_bad_values_are_configuration_errors(tmp_path: Path) -> None:
    """A bad concurrency, log level, operator or option name is rejected with its source."""
    path = tmp_path / "c.toml"
    path.write_text("[balog]\nconcurrency = 0\n")
    with pytest.raises(ConfigurationError, match="concurrency must be"):
        load_config(file=str(path), environ={})
    with pytest.raises(ConfigurationError, match="BALOG_LOG_LEVEL: log_level must be"):
        load_config(environ={"BALOG_LOG_LEVEL": "loud"})
    with pytest.raises(ConfigurationError, match="operator must be 'module:factory'"):
        load_config(environ={}, values={"operator": "nocolon"})
    with pytest.raises(ConfigurationError, match="is not KEY=VALUE"):
        load_config(environ={}, options=["novalue"])
    with pytest.raises(ConfigurationError, match="not a valid option name"):
        load_config(environ={}, options=["bad-name=1"])


def test_missing_and_unknown_files_are_rejected(tmp_path: Path) -> None:
    """A missing file, an unknown extension and a missing INI section are one-line errors."""
    with pytest.raises(ConfigurationError, match="does not exist"):
        load_config(file=str(tmp_path / "nope.toml"), environ={})
    other = tmp_path / "settings.yaml"
    other.write_text("balog: {}\n")
    with pytest.raises(ConfigurationError, match=r"use a \.toml, \.ini"):
        load_config(file=str(other), environ={})
    ini = tmp_path / "x.ini"
    ini.write_text("[other]\nkey = 1\n")
    with pytest.raises(ConfigurationError, match=r"no \[app:main\] or \[balog\] section"):
        load_config(file=str(ini), environ={})


def test_unknown_balog_keys_are_warned_about(tmp_path: Path) -> None:
    """A misspelt balog key is reported as a warning, not silently dropped."""
    path = tmp_path / "c.toml"
    path.write_text("[balog]\nengin = 'sqs'\n")
    config = load_config(file=str(path), environ={})
    assert [f"{path}: unknown key balog.engin ignored"] == config.warnings


def test_transport_options_leave_out_what_the_transport_does_not_take() -> None:
    """transport_options keeps the options the predicate accepts, plus the url."""
    config = Config(engine="sqs", url="https://x", options={"region": "r", "wait": 1})
    assert config.transport_options(lambda name: name != "wait") == {
        "region": "r",
        "url": "https://x",
    }


def test_toml_on_python_310_without_tomli_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On Python 3.10 without the tomli package, a TOML file gives an error saying what to do."""
    import sys

    path = tmp_path / "balog.toml"
    path.write_text("[balog]\nengine = 'memory'\n")
    monkeypatch.setattr(sys, "version_info", (3, 10, 12, "final", 0))
    monkeypatch.setitem(sys.modules, "tomli", None)  # an import of tomli now fails
    with pytest.raises(ConfigurationError, match="needs the 'tomli' package"):
        load_config(file=str(path), environ={})


def test_toml_on_python_310_reads_through_tomli(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On Python 3.10 the tomli package, when installed, reads TOML files."""
    import sys

    tomllib = pytest.importorskip("tomllib")
    path = tmp_path / "balog.toml"
    path.write_text("[balog]\nengine = 'memory'\n")
    monkeypatch.setattr(sys, "version_info", (3, 10, 12, "final", 0))
    monkeypatch.setitem(sys.modules, "tomli", tomllib)  # same API as tomli
    assert load_config(file=str(path), environ={}).engine == "memory"


def test_mask_text_hides_passwords_of_urls_inside_messages() -> None:
    """Every URL password inside a free-form message is masked; the rest is kept."""
    text = "cannot reach amqp://worker:s3cret@mq:5672// nor redis://:pw@r:6379/0; see docs"
    assert (
        mask_text(text)
        == "cannot reach amqp://worker:**@mq:5672// nor redis://:**@r:6379/0; see docs"
    )
