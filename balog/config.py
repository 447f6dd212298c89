"""One configuration for both sides: the ``balog`` command, and a library that produces or consumes.

:func:`load_config` merges, for each key, the highest layer that sets it (engine options merge key
by key the same way):

1. the command line (``values``, ``options``, ``settings``: what ``balog`` passes from argparse);
2. ``BALOG_*`` environment variables;
3. the file or mapping: ``source``, else the file named by ``BALOG_CONFIG``, else ``balog.toml``
   in the current directory when there is one;
4. defaults: the engine :data:`balog.engines.DEFAULT_ENGINE`, nothing else.

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

An INI file with Paste/Pyramid-style flat keys in ``[app:main]`` (or the section named after
``#``: ``production.ini#worker``), or balog's own keys in a ``[balog]`` section::

    [app:main]
    balog.engine = sqs
    balog.engine.region = us-west-2
    balog.engine.wait = 20
    api.sqs.queue_env = prod

Environment: ``BALOG_CONFIG`` (the file; set and empty: no file), ``BALOG_ENGINE``,
``BALOG_TRANSPORT``, ``BALOG_URL``, ``BALOG_OPERATOR``, ``BALOG_CONCURRENCY``,
``BALOG_LOG_LEVEL`` and ``BALOG_OPTION_<NAME>`` (one option, its name lowercased).

A key balog does not know (in ``[balog]``, a ``balog.*`` INI key, a ``BALOG_*`` variable that is
close to one of balog's) is a :class:`~balog.exceptions.ConfigurationError` naming the nearest
valid one. Option names are not guessed here: the engine or transport that takes them refuses an
unknown one. Whatever is shown of a configuration goes through :mod:`balog._secrets`.
"""

from __future__ import annotations

import configparser
import dataclasses
import json
import os
import re
import sys
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

from balog._options import nearest
from balog._plugins import coerce_option
from balog._secrets import Scrubber, mask_options, mask_url
from balog.exceptions import ConfigurationError

__all__ = [
    "DEFAULT_FILE",
    "ENV_PREFIX",
    "Config",
    "load_config",
    "parse_assignment",
    "read_file",
]

ENV_PREFIX = "BALOG_"
DEFAULT_FILE = "balog.toml"
"""Read from the current directory when no file is named (``--config``, ``BALOG_CONFIG``)."""

KEYS = ("engine", "transport", "url", "operator", "concurrency", "log_level", "topic")
"""The keys every layer may set, besides ``options`` and ``topic_vars``."""

_MAPPINGS = ("options", "topic_vars")
"""The keys that hold a table of names: engine/transport options, the topic's variables."""

_ENV_CONFIG = ENV_PREFIX + "CONFIG"
_ENV_NAMES = {key: ENV_PREFIX + key.upper() for key in KEYS}
_ENV_OPTION = ENV_PREFIX + "OPTION_"
_ENV_TOPIC_VAR = ENV_PREFIX + "TOPIC_VAR_"
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_OPTION_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_OPTION_PREFIXES = ("engine", "options")
"""``balog.engine.<name>`` and ``balog.options.<name>`` set an option in flat settings."""
_TOPIC_VARS = "topic_vars"

DEFAULT = "default"
ENVIRONMENT = "environment"
COMMAND_LINE = "command line"
CURRENT_DIRECTORY = "current directory"


# -- values -----------------------------------------------------------------------------------


def parse_assignment(text: str, what: str = "option") -> tuple[str, str]:
    """Split ``KEY=VALUE``; a missing ``=`` or an empty key is a :class:`ConfigurationError`."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigurationError(f"{what} {text!r} is not KEY=VALUE")
    return key, value


def _unknown_key(
    place: str, name: str, valid: Collection[str], hint: str = "", prefix: str = ""
) -> ConfigurationError:
    """The error for key ``prefix + name`` of ``place``, naming the nearest of ``valid``."""
    guess = nearest(name, valid)
    meant = f"; did you mean '{prefix}{guess}'?" if guess else ""
    more = f"; {hint}" if hint and not guess else ""
    known = ", ".join(prefix + k for k in sorted(valid))
    return ConfigurationError(
        f"unknown key '{prefix}{name}' in {place}{meant}{more} (balog's keys: {known})"
    )


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, default=str)
    return str(value)


# -- the merged result ------------------------------------------------------------------------


@dataclasses.dataclass
class Config:
    """The effective configuration, and where each value came from.

    ``options`` go to the engine (and to the transport, for commands that build only that).
    ``topic`` and ``topic_vars`` are the producer's (:func:`balog.configure`): the topic it sends
    to, a template filled from ``topic_vars``.
    ``settings`` is the flat mapping handed to an operator factory (``factory(settings)``): every
    key of the file (TOML tables flattened to dotted keys) plus ``--set KEY=VALUE`` and the
    effective ``balog.<key>`` values. ``sources`` says which layer set each key (``"option:NAME"``
    for options, ``"file"`` for how the file was found); ``origins`` names it as the user wrote it
    (``--url``, ``BALOG_OPTION_WAIT``, ``wait in [balog.options] of balog.toml``).
    """

    engine: str
    transport: str | None = None
    url: str | None = None
    operator: str | None = None
    concurrency: int | None = None
    log_level: str | None = None
    topic: str | None = None
    options: dict[str, Any] = dataclasses.field(default_factory=dict)
    topic_vars: dict[str, Any] = dataclasses.field(default_factory=dict)
    settings: dict[str, Any] = dataclasses.field(default_factory=dict)
    sources: dict[str, str] = dataclasses.field(default_factory=dict)
    origins: dict[str, str] = dataclasses.field(default_factory=dict)
    file: str | None = None

    def __repr__(self) -> str:
        return (
            f"Config(engine={self.engine!r}, transport={self.transport!r}, "
            f"url={mask_url(self.url) if self.url else None!r}, "
            f"options={mask_options(self.options)!r}, file={self.file!r})"
        )

    @property
    def transport_name(self) -> str:
        """The transport of ``send`` and ``dead-letters``: ``transport``, else the engine's."""
        return self.transport or self.engine

    def origin(self, key: str) -> str | None:
        """Where ``key`` (or ``"option:NAME"``) was set, as the user wrote it; ``None``: unset."""
        return self.origins.get(key)

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

    def transport_kwargs(self) -> dict[str, Any]:
        """The keywords to build this configuration's transport with (``balog send``, the
        producer): the transport's own options and any unknown one (to be reported, never
        dropped), not the engine's alone (``wait``, ``lease``, ``concurrency``, ...); the URL
        under the name the transport takes it by."""
        from balog import _plugins

        factory = _plugins.load(_plugins.TRANSPORTS, self.transport_name)
        names, _ = _plugins.parameters(factory)
        engine_only = _plugins.engine_only_options(self.engine)
        return self.transport_options(
            lambda option: option in names or option not in engine_only,
            _plugins.url_key(factory),
        )

    def scrubber(self) -> Scrubber:
        """A :class:`~balog._secrets.Scrubber` of this configuration's secrets, for free text."""
        known = dict(self.options)
        if self.url is not None:
            known["url"] = self.url
        return Scrubber.for_options(known)

    def describe(self) -> list[tuple[str, str, str]]:
        """``(key, shown value, source)`` rows, secrets masked, for printing."""
        rows: list[tuple[str, str, str]] = []
        if self.file is not None:
            rows.append(("file", self.file, self.sources.get("file", DEFAULT)))
        for key in KEYS:
            value = getattr(self, key)
            if value is None:
                continue
            shown = mask_url(value) if isinstance(value, str) else str(value)
            rows.append((key, shown, self.sources.get(key, DEFAULT)))
        masked = mask_options(self.options)
        for name in sorted(masked):
            source = self.sources.get(f"option:{name}", DEFAULT)
            rows.append((f"option {name}", _show(masked[name]), source))
        return rows

    def masked(self) -> dict[str, Any]:
        """The configuration as a JSON-able mapping, secrets masked."""
        out: dict[str, Any] = {}
        for key in KEYS:
            value = getattr(self, key)
            if value is not None:
                out[key] = mask_url(value) if isinstance(value, str) else value
        out["options"] = dict(sorted(mask_options(self.options).items()))
        out["file"] = self.file
        out["sources"] = dict(sorted(self.sources.items()))
        return out


# -- files and mappings -----------------------------------------------------------------------


@dataclasses.dataclass
class FileLayer:
    """What a config file or mapping sets: balog's keys, options, and the flat settings.

    ``origins`` names each key (``"option:NAME"`` for options) as it is written there.
    """

    values: dict[str, Any] = dataclasses.field(default_factory=dict)
    options: dict[str, Any] = dataclasses.field(default_factory=dict)
    topic_vars: dict[str, Any] = dataclasses.field(default_factory=dict)
    settings: dict[str, Any] = dataclasses.field(default_factory=dict)
    origins: dict[str, str] = dataclasses.field(default_factory=dict)


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


def _nested_layer(data: Mapping[str, Any], where: str) -> FileLayer:
    """A TOML document, or a mapping of its shape: balog's keys in ``data["balog"]``."""
    layer = FileLayer(settings=_flatten(data))
    section = data.get("balog", {})
    if not isinstance(section, Mapping):
        raise ConfigurationError(f"{where}: 'balog' must be a table")
    for key, value in section.items():
        if key == "options":
            if not isinstance(value, Mapping):
                raise ConfigurationError(f"{where}: balog.options must be a table")
            for name, option in value.items():
                layer.options[_option_name(str(name), where)] = option
                layer.origins[f"option:{name}"] = f"{name} in [balog.options] of {where}"
        elif key == _TOPIC_VARS:
            if not isinstance(value, Mapping):
                raise ConfigurationError(f"{where}: balog.topic_vars must be a table")
            for name, var in value.items():
                layer.topic_vars[_option_name(str(name), where)] = var
                layer.origins[f"topic_var:{name}"] = f"{name} in [balog.topic_vars] of {where}"
        elif key in KEYS:
            layer.values[key] = value
            layer.origins[key] = f"{key} in [balog] of {where}"
        else:
            raise _unknown_key(
                f"[balog] of {where}",
                str(key),
                (*KEYS, *_MAPPINGS),
                "engine and transport options go in [balog.options]",
            )
    return layer


def _flat_layer(flat: Mapping[str, Any], where: str, label: str, *, bare: bool) -> FileLayer:
    """Flat settings: ``balog.<key>``, ``balog.engine.<option>``; with ``bare``, also without
    the ``balog.`` prefix (every key of a ``[balog]`` INI section is balog's). ``where`` starts
    error messages; ``label`` says where a key is written (``"[app:main] of prod.ini"``)."""
    layer = FileLayer(settings=dict(flat))
    for key, raw in flat.items():
        if key.startswith("balog."):
            prefix, rest = "balog.", key[len("balog.") :]
        elif bare:
            prefix, rest = "", key
        else:
            continue
        written = f"{key} in {label}"
        head, dot, name = rest.partition(".")
        if dot and head in _OPTION_PREFIXES:
            option = _option_name(name, where)
            layer.options[option] = coerce_option(raw, what=written)
            layer.origins[f"option:{option}"] = written
        elif dot and head == _TOPIC_VARS:
            var = _option_name(name, where)
            layer.topic_vars[var] = raw
            layer.origins[f"topic_var:{var}"] = written
        elif not dot and rest in KEYS:
            layer.values[rest] = raw
            layer.origins[rest] = written
        elif dot and nearest(head, (*_OPTION_PREFIXES, _TOPIC_VARS)):
            guess = nearest(head, (*_OPTION_PREFIXES, _TOPIC_VARS))
            raise ConfigurationError(
                f"unknown key {key!r} in {label}; did you mean '{prefix}{guess}.{name}'?"
            )
        else:
            raise _unknown_key(label, rest, KEYS, f"an option is {prefix}engine.<option>", prefix)
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
    return _flat_layer(flat, path, f"[{name}] of {path}", bare=name == "balog")


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
            return _nested_layer(_load_toml(path), path)
        if ext in {".ini", ".cfg", ".conf"}:
            return _read_ini(path, section or None)
    except OSError as exc:
        raise ConfigurationError(f"cannot read config file {path}: {exc.strerror}") from exc
    raise ConfigurationError(f"config file {path}: use a .toml, .ini, .cfg or .conf file")


def _mapping_layer(data: Mapping[str, Any]) -> FileLayer:
    """A mapping given to :func:`load_config`: TOML-shaped when ``data["balog"]`` is a mapping,
    else flat settings as a Pyramid app holds them (strings turned into values as from INI)."""
    where = "the settings"
    if isinstance(data.get("balog"), Mapping):
        return _nested_layer(data, where)
    return _flat_layer(_flatten(data), where, where, bare=False)


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


def _check_env_name(var: str) -> None:
    """Refuse a ``BALOG_*`` variable that is a misspelling of one of balog's."""
    if var == _ENV_CONFIG or var in _ENV_NAMES.values():
        return
    if var.startswith((_ENV_OPTION, _ENV_TOPIC_VAR)):
        return
    suffix = var[len(ENV_PREFIX) :]
    known = [_ENV_CONFIG[len(ENV_PREFIX) :], *(k.upper() for k in KEYS)]
    guess = nearest(suffix, known)
    head, underscore, rest = suffix.partition("_")
    if suffix == "OPTION" or (guess is None and underscore and nearest(head, ["OPTION"])):
        meant = f"{_ENV_OPTION}{rest or '<NAME>'}"
    elif guess is not None:
        meant = ENV_PREFIX + guess
    else:
        return  # another program's variable that happens to share the prefix
    names = [
        _ENV_CONFIG,
        *_ENV_NAMES.values(),
        f"{_ENV_OPTION}<NAME>",
        f"{_ENV_TOPIC_VAR}<NAME>",
    ]
    raise ConfigurationError(
        f"environment variable {var} is not one of balog's; did you mean {meant}? "
        f"(balog reads {', '.join(names)})"
    )


def _env_layer(environ: Mapping[str, str]) -> FileLayer:
    layer = FileLayer()
    for var, raw in environ.items():
        if not var.startswith(ENV_PREFIX):
            continue
        _check_env_name(var)
        if var.startswith(_ENV_OPTION):
            if len(var) == len(_ENV_OPTION):
                raise ConfigurationError(f"environment variable {var} names no option")
            name = _option_name(var[len(_ENV_OPTION) :].lower(), var)
            layer.options[name] = coerce_option(raw, what=var)
            layer.origins[f"option:{name}"] = var
        elif var.startswith(_ENV_TOPIC_VAR):
            if len(var) == len(_ENV_TOPIC_VAR):
                raise ConfigurationError(f"environment variable {var} names no topic variable")
            name = _option_name(var[len(_ENV_TOPIC_VAR) :].lower(), var)
            layer.topic_vars[name] = raw
            layer.origins[f"topic_var:{name}"] = var
    for key, var in _ENV_NAMES.items():
        value = environ.get(var)
        if value:
            layer.values[key] = value
            layer.origins[key] = var
    return layer


def _find_file(env: Mapping[str, str]) -> tuple[str | None, str, str]:
    """``(path or None, source, origin)`` of the file to read when the caller named none."""
    named = env.get(_ENV_CONFIG)
    if named is not None:
        # Set but empty: read no file at all, not even ./balog.toml.
        return (named or None), f"{ENVIRONMENT} {_ENV_CONFIG}", _ENV_CONFIG
    if os.path.isfile(DEFAULT_FILE):
        return DEFAULT_FILE, CURRENT_DIRECTORY, f"./{DEFAULT_FILE}"
    return None, DEFAULT, ""


def load_config(
    source: str | os.PathLike[str] | Mapping[str, Any] | Config | None = None,
    *,
    file: str | None = None,
    values: Mapping[str, Any] | None = None,
    options: Sequence[str] | Mapping[str, Any] = (),
    settings: Sequence[str] = (),
    environ: Mapping[str, str] | None = None,
    default_engine: str | None = None,
) -> Config:
    """The effective configuration, as ``balog consume`` and ``balog.configure(config=...)`` use.

    ``source`` is a config file path (``"prod.ini#worker"`` picks an INI section), a mapping
    (TOML-shaped, ``{"balog": {"engine": ..., "options": {...}}, ...}``, or flat settings,
    ``{"balog.engine": "sqs", "balog.engine.region": "us-west-2", ...}``), or a :class:`Config`,
    returned as it is. Without one, the file is ``BALOG_CONFIG``'s, else ``./balog.toml`` when it
    exists. ``file`` is the same as a path ``source``. The ``BALOG_*`` variables of ``environ``
    (default :data:`os.environ`) override it; ``values`` (``{"engine": ..., "url": ...}``),
    ``options`` (``KEY=VALUE`` strings or a mapping) and ``settings`` (``KEY=VALUE`` strings added
    to the operator's settings) override both: they are the command line.

    Raises :class:`~balog.exceptions.ConfigurationError` naming the file, variable, key or
    argument at fault, and the nearest valid name for an unknown one.
    """
    if isinstance(source, Config):
        if file is not None or values or options or settings or environ is not None:
            raise ConfigurationError("load_config() takes a Config alone, with no other argument")
        return source
    if source is not None and file is not None:
        raise ConfigurationError("give load_config() a source or file=, not both")
    env = os.environ if environ is None else environ
    if default_engine is None:
        from balog.engines import DEFAULT_ENGINE

        default_engine = DEFAULT_ENGINE
    merged = _Merged(default_engine)
    named = file if source is None else source
    path: str | None = None
    if isinstance(named, Mapping):
        merged.add(_mapping_layer(named), lambda key: "settings")
    else:
        if named is not None:
            path, how, origin = os.fspath(named), COMMAND_LINE, "--config"
        else:
            path, how, origin = _find_file(env)
        merged.origins["file"] = origin
        if path:
            merged.sources["file"] = how
            where = f"file {path.partition('#')[0]}"
            merged.add(read_file(path), lambda key: where)
    merged.add(_env_layer(env), _env_source)
    merged.add(_command_line_layer(values, options, settings), lambda key: COMMAND_LINE)
    return merged.config(path.partition("#")[0] if path else None)


def _env_source(key: str) -> str:
    if key.startswith("option:"):
        return f"{ENVIRONMENT} {_ENV_OPTION}{key[len('option:') :].upper()}"
    return f"{ENVIRONMENT} {_ENV_NAMES[key]}"


def _command_line_layer(
    values: Mapping[str, Any] | None,
    options: Sequence[str] | Mapping[str, Any],
    settings: Sequence[str],
) -> FileLayer:
    """``values``, ``options`` and ``settings`` of :func:`load_config` as a layer."""
    layer = FileLayer()
    for key, value in (values or {}).items():
        if value is None:
            continue
        if key not in KEYS:
            raise _unknown_key("load_config(values=...)", key, KEYS)
        layer.values[key] = value
        layer.origins[key] = f"--{key.replace('_', '-')}"
    pairs = (
        options.items()
        if isinstance(options, Mapping)
        else (
            (k, coerce_option(v, what=f"-o {k}"))
            for k, v in (parse_assignment(o, "--option") for o in options)
        )
    )
    for name, value in pairs:
        layer.options[_option_name(name, "--option")] = value
        layer.origins[f"option:{name}"] = f"-o {name}"
    for item in settings:
        key, value = parse_assignment(item, "--set")
        layer.settings[key] = value
    return layer


class _Merged:
    """The layers of a configuration merged so far, each key from the highest that sets it."""

    def __init__(self, default_engine: str) -> None:
        self.values: dict[str, Any] = {"engine": default_engine}
        self.sources: dict[str, str] = {"engine": DEFAULT}
        self.origins: dict[str, str] = {}
        self.options: dict[str, Any] = {}
        self.topic_vars: dict[str, Any] = {}
        self.settings: dict[str, Any] = {}

    def add(self, layer: FileLayer, source_of: Callable[[str], str]) -> None:
        for key, value in layer.values.items():
            self.values[key] = _check_scalar(key, value, layer.origins[key])
            self.sources[key] = source_of(key)
        for name, value in layer.options.items():
            self.options[name] = value
            self.sources[f"option:{name}"] = source_of(f"option:{name}")
        self.topic_vars.update(layer.topic_vars)
        self.origins.update(layer.origins)
        self.settings.update(layer.settings)

    def config(self, file: str | None) -> Config:
        self.origins.setdefault("engine", "the default engine")
        config = Config(
            engine=self.values["engine"],
            options=self.options,
            topic_vars=self.topic_vars,
            settings=self.settings,
            sources=self.sources,
            origins={k: v for k, v in self.origins.items() if v},
            file=file,
        )
        for key in KEYS:
            if key != "engine" and key in self.values:
                setattr(config, key, self.values[key])
        # The operator sees the effective balog keys too, as a Pyramid app's settings hold them.
        for key in KEYS:
            value = getattr(config, key)
            if value is not None:
                config.settings[f"balog.{key}"] = value
        for name, value in config.topic_vars.items():
            config.settings[f"balog.topic_vars.{name}"] = value
        return config
