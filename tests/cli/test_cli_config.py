"""Configuration loading: TOML, INI, BALOG_* variables, precedence, masking."""

from __future__ import annotations

from pathlib import Path

import pytest

from balog._plugins import coerce_option
from balog._secrets import mask_text, mask_url
from balog.config import Config, load_config, read_file
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
        ("amqp://user:pa[ss@host//", "amqp://user:**@host//"),
        ("me@example.com", "me@example.com"),
    ],
)
def test_mask_url_hides_passwords(url: str, expected: str) -> None:
    """Passwords in URLs, and secret-named query values, are shown as **."""
    assert expected == mask_url(url)


def test_describe_masks_every_secret() -> None:
    """The printable rows, the JSON form and the repr of a configuration carry no password or
    secret option, nested ones and a Redis ?password= included."""
    config = load_config(
        environ={"BALOG_URL": "redis://127.0.0.1:6379/0?password=topsecret"},
        options={
            "aws_secret_access_key": "KEYVALUE",
            "sentinel_kwargs": {"password": "NESTEDVALUE", "socket_timeout": 1},
            "wait": 1,
        },
    )
    text = repr(config.describe()) + repr(config.masked()) + repr(config)
    for secret in ("topsecret", "KEYVALUE", "NESTEDVALUE"):
        assert secret not in text
    rows = config.describe()
    assert ("url", "redis://127.0.0.1:6379/0?password=**", "environment BALOG_URL") in rows
    shown = ("option sentinel_kwargs", '{"password": "**", "socket_timeout": 1}', "command line")
    assert shown in rows
    expected = {"password": "**", "socket_timeout": 1}
    assert expected == config.masked()["options"]["sentinel_kwargs"]


def test_coerce_turns_setting_strings_into_values() -> None:
    """Strings from INI files, variables and --option become ints, floats, booleans and, when
    they start with { or [, JSON objects and arrays."""
    assert [
        coerce_option("1"),
        coerce_option("0.5"),
        coerce_option("yes"),
        coerce_option("off"),
        coerce_option("us-west-2"),
        coerce_option(' {"x-queue-type": "quorum"}'),
        coerce_option("[1, 2]"),
    ] == [1, 0.5, True, False, "us-west-2", {"x-queue-type": "quorum"}, [1, 2]]


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


# -- unknown keys -------------------------------------------------------------------------------


def test_public_names_of_balog_config() -> None:
    """balog.config exports load_config, Config and the file helpers; masking is balog._secrets'."""
    import balog.config

    public = {
        "Config",
        "DEFAULT_FILE",
        "ENV_PREFIX",
        "load_config",
        "parse_assignment",
        "read_file",
    }
    assert public == set(balog.config.__all__)
    assert len(balog.config.__all__) == len(public)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[balog]\nengin = 'sqs'\n",
         "unknown key 'engin' in [balog] of {path}; did you mean 'engine'?"),
        ("[balog]\noption = {wait = 1}\n",
         "unknown key 'option' in [balog] of {path}; did you mean 'options'?"),
        ("[balog]\nwait = 5\n",
         "unknown key 'wait' in [balog] of {path}; engine and transport options go in "
         "[balog.options]"),
    ],
    ids=["typo", "option-table", "option-in-balog"],
)  # fmt: skip
def test_unknown_toml_keys_name_the_nearest_valid_one(
    tmp_path: Path, text: str, message: str
) -> None:
    """A key of [balog] that balog does not know is an error naming the key and the one meant."""
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(ConfigurationError) as refused:
        load_config(str(path), environ={})
    assert str(refused.value).startswith(message.format(path=path))


@pytest.mark.parametrize(
    ("section", "line", "message"),
    [
        ("app:main", "balog.enigne = sqs",
         "unknown key 'balog.enigne' in [app:main] of {path}; did you mean 'balog.engine'?"),
        ("app:main", "balog.engin.wait = 5",
         "unknown key 'balog.engin.wait' in [app:main] of {path}; "
         "did you mean 'balog.engine.wait'?"),
        ("app:main", "balog.wait = 5",
         "unknown key 'balog.wait' in [app:main] of {path}; an option is balog.engine.<option>"),
        ("balog", "urll = x", "unknown key 'urll' in [balog] of {path}; did you mean 'url'?"),
    ],
    ids=["typo", "option-prefix", "option-without-prefix", "balog-section"],
)  # fmt: skip
def test_unknown_ini_keys_name_the_nearest_valid_one(
    tmp_path: Path, section: str, line: str, message: str
) -> None:
    """A balog.* key of an INI file (any key of its [balog] section) that balog does not know is
    an error naming the nearest valid key; the application's own keys are left alone."""
    path = tmp_path / "app.ini"
    app_key = "api.sqs.queue_env = prod\n" if section == "app:main" else ""
    path.write_text(f"[{section}]\n{app_key}{line}\n")
    with pytest.raises(ConfigurationError) as refused:
        load_config(str(path), environ={})
    assert str(refused.value).startswith(message.format(path=path))


def test_ini_balog_section_takes_bare_keys(tmp_path: Path) -> None:
    """In an INI [balog] section the keys need no balog. prefix; options are options.<name>."""
    path = tmp_path / "worker.ini"
    path.write_text("[balog]\nengine = kombu\nurl = amqp://h//\noptions.wait = 2\n")
    config = load_config(str(path), environ={})
    expected = ("kombu", "amqp://h//", {"wait": 2})
    assert expected == (config.engine, config.url, config.options)
    assert f"options.wait in [balog] of {path}" == config.origin("option:wait")


@pytest.mark.parametrize(
    ("var", "meant"),
    [
        ("BALOG_URLL", "BALOG_URL"),
        ("BALOG_ENGIN", "BALOG_ENGINE"),
        ("BALOG_LOGLEVEL", "BALOG_LOG_LEVEL"),
        ("BALOG_OPTIONS_WAIT", "BALOG_OPTION_WAIT"),
        ("BALOG_OPTION", "BALOG_OPTION_<NAME>"),
    ],
)
def test_misspelt_balog_variables_are_errors(var: str, meant: str) -> None:
    """A BALOG_* variable that is a misspelling of balog's own is an error naming the one meant."""
    with pytest.raises(ConfigurationError) as refused:
        load_config(environ={var: "x"})
    assert str(refused.value).startswith(
        f"environment variable {var} is not one of balog's; did you mean {meant}?"
    )


def test_other_programs_balog_variables_are_left_alone() -> None:
    """BALOG_* variables that resemble none of balog's (another tool's, a test suite's) are not
    read and not refused."""
    environ = {"BALOG_TEST_AMQP_URL": "amqp://x//", "BALOG_HOME": "/srv", "BALOG_OPTION_WAIT": "2"}
    expected = {"wait": 2}
    assert expected == load_config(environ=environ).options


def test_unknown_values_key_names_the_nearest() -> None:
    """load_config(values=...) refuses a key it does not know, naming the nearest."""
    with pytest.raises(ConfigurationError, match=r"unknown key 'urll'.*did you mean 'url'"):
        load_config(environ={}, values={"urll": "x"})


# -- JSON option values -------------------------------------------------------------------------


def test_json_option_values_from_every_layer(tmp_path: Path) -> None:
    """An option value that starts with { or [ is JSON, from -o, BALOG_OPTION_* and INI alike."""
    path = tmp_path / "app.ini"
    path.write_text('[app:main]\nbalog.engine.transport_options = {"visibility_timeout": 60}\n')
    config = load_config(
        str(path),
        environ={"BALOG_OPTION_BACKOFF": "[1, 2.5]"},
        options=['queue_arguments={"x-queue-type": "quorum", "x-max-length": 10}'],
    )
    expected = {
        "transport_options": {"visibility_timeout": 60},
        "backoff": [1, 2.5],
        "queue_arguments": {"x-queue-type": "quorum", "x-max-length": 10},
    }
    assert expected == config.options


def test_bad_json_option_is_a_clear_error_without_the_value() -> None:
    """Broken JSON in an option names the option and the fault, and never quotes the value."""
    with pytest.raises(ConfigurationError) as refused:
        load_config(environ={}, options=['sentinel_kwargs={"password": "hunter2"'])
    message = str(refused.value)
    assert message.startswith("-o sentinel_kwargs starts with '{' but is not valid JSON")
    assert "hunter2" not in message


# -- sources: a path, a mapping, the current directory ------------------------------------------


def test_mapping_sources_give_the_same_config_as_the_file(toml_file: Path) -> None:
    """load_config takes a TOML-shaped mapping or Pyramid-style flat settings as it takes a file:
    a library (the producer side) gets the Config that balog consume uses."""
    tomllib = pytest.importorskip("tomllib")

    from_file = load_config(toml_file, environ={})
    from_mapping = load_config(tomllib.loads(TOML), environ={})
    assert (from_file.engine, from_file.url, from_file.options, from_file.settings) == (
        from_mapping.engine,
        from_mapping.url,
        from_mapping.options,
        from_mapping.settings,
    )
    flat = {"balog.engine": "sqs", "balog.engine.wait": "20", "api.sqs.queue_env": "prod"}
    from_settings = load_config(flat, environ={"BALOG_OPTION_REGION": "eu-west-1"})
    expected = ("sqs", {"wait": 20, "region": "eu-west-1"})
    assert expected == (from_settings.engine, from_settings.options)
    assert from_settings.settings["api.sqs.queue_env"] == "prod"
    assert from_settings.file is None


def test_a_config_is_returned_as_it_is() -> None:
    """load_config(config) hands back that Config, so an API can take either."""
    config = load_config(environ={})
    assert config is load_config(config)


def test_balog_toml_in_the_current_directory_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no file named and no BALOG_CONFIG, ./balog.toml is read; BALOG_CONFIG set empty
    reads no file; BALOG_CONFIG naming a file wins over ./balog.toml."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "balog.toml").write_text("[balog]\nengine = 'memory'\n")
    found = load_config(environ={})
    expected = ("memory", "balog.toml", "current directory")
    assert expected == (found.engine, found.file, found.sources["file"])
    none = load_config(environ={"BALOG_CONFIG": ""})
    assert none.file is None
    assert none.engine == DEFAULT_ENGINE
    other = tmp_path / "other.toml"
    other.write_text("[balog]\nengine = 'kombu'\n")
    named = load_config(environ={"BALOG_CONFIG": str(other)})
    expected_named = ("kombu", str(other))
    assert expected_named == (named.engine, named.file)


def test_the_producers_topic_comes_from_every_layer(tmp_path: Path) -> None:
    """topic and topic_vars are keys of the one configuration: a TOML table, flat settings and
    BALOG_TOPIC / BALOG_TOPIC_VAR_<NAME>, the environment over the file."""
    path = tmp_path / "balog.toml"
    path.write_text(
        '[balog]\ntopic = "orders-{env}"\n[balog.topic_vars]\nenv = "dev"\nzone = "a"\n'
    )
    from_file = load_config(str(path), environ={})
    assert (from_file.topic, from_file.topic_vars) == ("orders-{env}", {"env": "dev", "zone": "a"})
    overridden = load_config(
        str(path), environ={"BALOG_TOPIC": "audit-{env}", "BALOG_TOPIC_VAR_ENV": "prod"}
    )
    assert (
        overridden.topic,
        overridden.topic_vars,
    ) == ("audit-{env}", {"env": "prod", "zone": "a"})
    flat = load_config({"balog.topic": "t-{x}", "balog.topic_vars.x": "1"}, environ={})
    assert (flat.topic, flat.topic_vars) == ("t-{x}", {"x": "1"})
    assert flat.settings["balog.topic_vars.x"] == "1"
