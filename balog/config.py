"""Configuration for the ``balog`` command: a file, ``BALOG_*`` variables and the command line.

Precedence, highest first: command line, environment, file, defaults. Each key is taken from the
highest layer that sets it; engine options merge key by key the same way.

A TOML file (``tomllib`` on Python 3.11+, the ``tomli`` package on 3.10)::

    [balog]
    engine = "sqs"
    url = "https://sqs.us-west-2.amazonaws.com"
    operator = "myapp.events:make_operator"
    concurrency = 2

    [balog.options]
    region = "us-west-2"
    wait = 20

    [api.sqs]            # everything in the file is also handed to the operator factory,
    queue_env = "prod"   # flattened: settings["api.sqs.queue_env"] == "prod"

An INI file with Paste/Pyramid-style flat keys, in ``[app:main]`` or ``[balog]`` (or the section
named after ``#``: ``production.ini#worker``)::

    [app:main]
    balog.engine = sqs
    balog.engine.region = us-west-2
    balog.engine.wait = 20
    api.sqs.queue_env = prod

Environment: ``BALOG_CONFIG`` (the file), ``BALOG_ENGINE``, ``BALOG_TRANSPORT``, ``BALOG_URL``,
``BALOG_OPERATOR``, ``BALOG_CONCURRENCY``, ``BALOG_LOG_LEVEL`` and ``BALOG_OPTION_<NAME>`` (one
engine option, its name lowercased). Other ``BALOG_*`` variables are ignored.

Whenever configuration is shown, passwords in URLs and options whose names look secret are
masked (:func:`mask_url`, :func:`mask_option`).
"""

from __future__ import annotations

import configparser
import dataclasses
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from balog.exceptions import ConfigurationError

__all__ = [
    "ENV_PREFIX",
    "Config",
    "coerce",
    "load_config",
    "mask_option",
    "mask_text",
    "mask_url",
    "parse_assignment",
    "read_file",
]

ENV_PREFIX = "BALOG_"

_SCALAR_KEYS = ("engine", "transport", "url", "operator", "concurrency", "log_level")
"""The keys every layer may set, besides ``options``."""

_ENV_NAMES = {key: ENV_PREFIX + key.upper() for key in _SCALAR_KEYS}
_ENV_OPTION = ENV_PREFIX + "OPTION_"
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_OPTION_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SECRET_WORDS = (
    "password",
    "passwd",
    "secret",
    "token",
    "credential",
    "access_key",
    "api_key",
    "apikey",
    "private_key",
)
MASK = "**"

DEFAULT = "default"
ENVIRONMENT = "environment"
COMMAND_LINE = "command line"


# -- values -----------------------------------------------------------------------------------


def coerce(value: Any) -> Any:
    """Turn the strings of INI files, variables and ``--option`` into ints, floats and booleans."""
    if not isinstance(value, str):
        return value
    lowered = value.strip().lower()
    if lowered in {"true", "yes", "on"}:
        return True
    if lowered in {"false", "no", "off"}:
        return False
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


def parse_assignment(text: str, what: str = "option") -> tuple[str, str]:
    """Split ``KEY=VALUE``; a missing ``=`` or an empty key is a :class:`ConfigurationError`."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigurationError(f"{what} {text!r} is not KEY=VALUE")
    return key, value


def _is_secret_name(name: str) -> bool:
    lowered = name.lower()
    return any(word in lowered for word in _SECRET_WORDS)


def mask_url(url: str) -> str:
    """``url`` with its password, and query values with secret-looking names, shown as ``**``.

    ``amqp://guest:guest@host//`` becomes ``amqp://guest:**@host//``. Text that is not a URL is
    returned unchanged.
    """
    if "://" not in url:
        # "user:password@host" with no scheme: hide what follows the first ":" of the userinfo.
        userinfo, at, host = url.rpartition("@")
        if at and ":" in userinfo:
            return f"{userinfo.split(':', 1)[0]}:{MASK}@{host}"
        return url
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        # Unparseable: keep the scheme, hide everything from there up to the last "@".
        scheme, _, rest = url.partition("://")
        _, at, tail = rest.rpartition("@")
        return f"{scheme}://{MASK}@{tail}" if at else url
    # Edit the text in place rather than re-assembling it: urlunsplit() would turn
    # "sqlite:///file" into "sqlite:/file".
    masked = url
    if password is not None:
        userinfo, _, hostinfo = parts.netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]
        masked = masked.replace(f"//{parts.netloc}", f"//{user}:{MASK}@{hostinfo}", 1)
    if parts.query:
        pairs = parse_qsl(parts.query, keep_blank_values=True)
        if any(_is_secret_name(k) for k, _ in pairs):
            query = urlencode([(k, MASK if _is_secret_name(k) else v) for k, v in pairs], safe="*")
            masked = masked.replace(f"?{parts.query}", f"?{query}", 1)
    return masked


_URL_CREDENTIALS = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://[^\s:/@]*:)[^\s@/]*@")


def mask_text(text: str) -> str:
    """``text`` with the password of every URL in it shown as ``**`` (for error messages)."""
    return _URL_CREDENTIALS.sub(lambda m: f"{m.group(1)}{MASK}@", text)


def mask_option(name: str, value: Any) -> Any:
    """The value to show for option ``name``: ``**`` for secret names, URLs masked."""
    if _is_secret_name(name) and value not in (None, ""):
        return MASK
    if isinstance(value, str):
        return mask_url(value)
    return value


# -- the merged result ------------------------------------------------------------------------


@dataclasses.dataclass
class Config:
    """The effective configuration, and where each value came from.

    ``settings`` is the flat mapping handed to an operator factory (``factory(settings)``): every
    key of the file (TOML tables flattened to dotted keys) plus ``--set KEY=VALUE``.
    """

    engine: str
    transport: str | None = None
    url: str | None = None
    operator: str | None = None
    concurrency: int | None = None
    log_level: str | None = None
    options: dict[str, Any] = dataclasses.field(default_factory=dict)
    settings: dict[str, Any] = dataclasses.field(default_factory=dict)
    sources: dict[str, str] = dataclasses.field(default_factory=dict)
    file: str | None = None
    warnings: list[str] = dataclasses.field(default_factory=list)

    @property
    def transport_name(self) -> str:
        """The transport of ``send`` and ``dead-letters``: ``transport``, else the engine's."""
        return self.transport or self.engine

    def engine_options(self, url_key: str = "url") -> dict[str, Any]:
        """Options for the engine: ``options``, and the url under ``url_key`` when one is set."""
        options = dict(self.options)
        if self.url is not None:
            options[url_key] = self.url
        if self.concurrency is not None:
            options["concurrency"] = self.concurrency
        return options

    def transport_options(
        self, accepts: Callable[[str], bool], url_key: str = "url"
    ) -> dict[str, Any]:
        """Options for the transport alone: those ``accepts(name)`` says it takes, and the url."""
        options = {k: v for k, v in self.options.items() if accepts(k)}
        if self.url is not None:
            options[url_key] = self.url
        return options

    def describe(self) -> list[tuple[str, str, str]]:
        """``(key, shown value, source)`` rows, secrets masked, for printing."""
        rows: list[tuple[str, str, str]] = []
        for key in _SCALAR_KEYS:
            value = getattr(self, key)
            if value is None:
                continue
            shown = mask_url(value) if isinstance(value, str) else str(value)
            rows.append((key, shown, self.sources.get(key, DEFAULT)))
        for name in sorted(self.options):
            shown_value = mask_option(name, self.options[name])
            rows.append(
                (f"option {name}", _show(shown_value), self.sources.get(f"option:{name}", DEFAULT))
            )
        return rows

    def masked(self) -> dict[str, Any]:
        """The configuration as a JSON-able mapping, secrets masked."""
        out: dict[str, Any] = {}
        for key in _SCALAR_KEYS:
            value = getattr(self, key)
            if value is not None:
                out[key] = mask_url(value) if isinstance(value, str) else value
        out["options"] = {k: mask_option(k, v) for k, v in sorted(self.options.items())}
        out["file"] = self.file
        out["sources"] = dict(sorted(self.sources.items()))
        return out


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


# -- files ------------------------------------------------------------------------------------


@dataclasses.dataclass
class FileLayer:
    """What a config file sets: balog's keys, engine options, and the flat settings."""

    values: dict[str, Any] = dataclasses.field(default_factory=dict)
    options: dict[str, Any] = dataclasses.field(default_factory=dict)
    settings: dict[str, Any] = dataclasses.field(default_factory=dict)
    warnings: list[str] = dataclasses.field(default_factory=list)


def _load_toml(path: str) -> dict[str, Any]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - exercised on Python 3.10 only
        try:
            import tomli as tomllib  # type: ignore[import-not-found,no-redef,unused-ignore]
        except ImportError:
            raise ConfigurationError(
                f"{path}: reading TOML on Python 3.10 needs the 'tomli' package "
                "(pip install tomli), or use an INI file"
            ) from None
    try:
        with open(path, "rb") as f:
            data: dict[str, Any] = tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"{path}: not valid TOML: {exc}") from exc
    return data


def _flatten(table: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in table.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def _read_toml(path: str) -> FileLayer:
    data = _load_toml(path)
    layer = FileLayer(settings=_flatten(data))
    section = data.get("balog", {})
    if not isinstance(section, dict):
        raise ConfigurationError(f"{path}: 'balog' must be a table")
    for key, value in section.items():
        if key == "options":
            if not isinstance(value, dict):
                raise ConfigurationError(f"{path}: balog.options must be a table")
            for name, option in value.items():
                layer.options[_option_name(name, path)] = option
        elif key in _SCALAR_KEYS:
            layer.values[key] = value
        else:
            layer.warnings.append(f"{path}: unknown key balog.{key} ignored")
    return layer


def _ini_section(parser: configparser.ConfigParser, path: str, wanted: str | None) -> str:
    if wanted is not None:
        if not parser.has_section(wanted):
            raise ConfigurationError(f"{path}: no section [{wanted}]")
        return wanted
    for candidate in ("balog", "app:main"):
        if parser.has_section(candidate):
            return candidate
    raise ConfigurationError(
        f"{path}: no [app:main] or [balog] section (or name one: FILE#SECTION)"
    )


def _read_ini(path: str, section: str | None) -> FileLayer:
    # No interpolation: a percent-encoded password ("p%40ss") must be read as written. Paste's
    # %(here)s, the file's directory, is the one substitution made.
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys keep their case
    try:
        with open(path, encoding="utf-8") as f:
            parser.read_file(f)
    except configparser.Error as exc:
        message = " ".join(str(exc).split())
        raise ConfigurationError(f"{path}: not a valid INI file: {message}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigurationError(f"{path}: not UTF-8 text") from exc
    name = _ini_section(parser, path, section)
    here = os.path.dirname(os.path.abspath(path))
    flat = {k: v.replace("%(here)s", here) for k, v in parser.items(name)}
    layer = FileLayer(settings=dict(flat))
    for key, raw in flat.items():
        if not key.startswith("balog."):
            continue
        rest = key[len("balog.") :]
        for prefix in ("engine.", "options."):
            if rest.startswith(prefix):
                layer.options[_option_name(rest[len(prefix) :], path)] = coerce(raw)
                break
        else:
            if rest in _SCALAR_KEYS:
                layer.values[rest] = raw
            else:
                layer.warnings.append(f"{path}: unknown key {key} ignored")
    return layer


def _option_name(name: str, where: str) -> str:
    if not _OPTION_NAME.match(name):
        raise ConfigurationError(f"{where}: {name!r} is not a valid option name")
    return name


def read_file(spec: str) -> FileLayer:
    """Read a ``.toml``, ``.ini``, ``.cfg`` or ``.conf`` file; ``path#section`` picks a section."""
    path, _, section = spec.partition("#")
    if not os.path.isfile(path):
        raise ConfigurationError(f"config file {path} does not exist")
    ext = os.path.splitext(path)[1].lower()
    try:
        if ext == ".toml":
            if section:
                raise ConfigurationError(f"{path}: '#section' applies to INI files only")
            return _read_toml(path)
        if ext in {".ini", ".cfg", ".conf"}:
            return _read_ini(path, section or None)
    except OSError as exc:
        raise ConfigurationError(f"cannot read config file {path}: {exc.strerror}") from exc
    raise ConfigurationError(f"config file {path}: use a .toml, .ini, .cfg or .conf file")


# -- merging ----------------------------------------------------------------------------------


def _check_scalar(key: str, value: Any, where: str) -> Any:
    if key == "concurrency":
        if isinstance(value, str):
            try:
                value = int(value)
            except ValueError:
                raise ConfigurationError(f"{where}: concurrency must be a whole number") from None
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigurationError(f"{where}: concurrency must be a whole number of at least 1")
        return value
    if not isinstance(value, str) or not value.strip():
        raise ConfigurationError(f"{where}: {key} must be a non-empty string")
    value = value.strip()
    if key == "log_level":
        upper = value.upper()
        if upper not in _LOG_LEVELS:
            raise ConfigurationError(f"{where}: log_level must be one of {', '.join(_LOG_LEVELS)}")
        return upper
    if key == "operator" and ":" not in value:
        raise ConfigurationError(f"{where}: operator must be 'module:factory', not {value!r}")
    return value


def _env_layer(environ: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, Any]]:
    values: dict[str, Any] = {}
    options: dict[str, Any] = {}
    for key, var in _ENV_NAMES.items():
        raw = environ.get(var)
        if raw is not None and raw != "":
            values[key] = raw
    for var, raw in environ.items():
        if var.startswith(_ENV_OPTION) and len(var) > len(_ENV_OPTION):
            name = _option_name(var[len(_ENV_OPTION) :].lower(), var)
            options[name] = coerce(raw)
    return values, options


def load_config(
    *,
    file: str | None = None,
    values: Mapping[str, Any] | None = None,
    options: Sequence[str] | Mapping[str, Any] = (),
    settings: Sequence[str] = (),
    environ: Mapping[str, str] | None = None,
    default_engine: str | None = None,
) -> Config:
    """Merge defaults, the file, the environment and command-line ``values``/``options``.

    ``file`` defaults to ``BALOG_CONFIG``. ``options`` are ``KEY=VALUE`` strings (or a mapping),
    ``settings`` ``KEY=VALUE`` strings added to the operator's settings. Raises
    :class:`~balog.exceptions.ConfigurationError` naming the file, variable or argument at fault.
    """
    env = os.environ if environ is None else environ
    if default_engine is None:
        from balog.engines import DEFAULT_ENGINE

        default_engine = DEFAULT_ENGINE
    merged: dict[str, Any] = {"engine": default_engine}
    sources: dict[str, str] = {"engine": DEFAULT}
    merged_options: dict[str, Any] = {}
    flat_settings: dict[str, Any] = {}
    warnings: list[str] = []

    path = file or env.get(ENV_PREFIX + "CONFIG") or None
    if path:
        layer = read_file(path)
        where = f"file {path.partition('#')[0]}"
        for key, value in layer.values.items():
            merged[key] = _check_scalar(key, value, path.partition("#")[0])
            sources[key] = where
        for name, value in layer.options.items():
            merged_options[name] = value
            sources[f"option:{name}"] = where
        flat_settings.update(layer.settings)
        warnings.extend(layer.warnings)

    env_values, env_options = _env_layer(env)
    for key, value in env_values.items():
        merged[key] = _check_scalar(key, value, _ENV_NAMES[key])
        sources[key] = f"{ENVIRONMENT} {_ENV_NAMES[key]}"
    for name, value in env_options.items():
        merged_options[name] = value
        sources[f"option:{name}"] = f"{ENVIRONMENT} {_ENV_OPTION}{name.upper()}"

    for key, value in (values or {}).items():
        if value is None:
            continue
        if key not in _SCALAR_KEYS:
            raise ConfigurationError(f"unknown configuration key {key!r}")
        merged[key] = _check_scalar(key, value, f"--{key.replace('_', '-')}")
        sources[key] = COMMAND_LINE
    pairs = (
        options.items()
        if isinstance(options, Mapping)
        else ((k, coerce(v)) for k, v in (parse_assignment(o, "--option") for o in options))
    )
    for name, value in pairs:
        merged_options[_option_name(name, "--option")] = value
        sources[f"option:{name}"] = COMMAND_LINE
    for item in settings:
        key, value = parse_assignment(item, "--set")
        flat_settings[key] = value

    config = Config(
        engine=merged["engine"],
        options=merged_options,
        settings=flat_settings,
        sources=sources,
        file=path.partition("#")[0] if path else None,
        warnings=warnings,
    )
    for key in _SCALAR_KEYS:
        if key != "engine" and key in merged:
            setattr(config, key, merged[key])
    # The operator sees the effective balog keys too, as a Pyramid app's settings would hold them.
    for key in _SCALAR_KEYS:
        value = getattr(config, key)
        if value is not None:
            config.settings[f"balog.{key}"] = value
    return config
