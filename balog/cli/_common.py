"""What several commands share: configuration from arguments, logging, operators, transports."""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import re
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from balog._secrets import is_secret_name, mask_options, mask_text, mask_url
from balog._text import clip
from balog.config import CURRENT_DIRECTORY, KEYS, Config, load_config
from balog.exceptions import (
    AuthenticationError,
    BalogError,
    ConfigurationError,
    PluginError,
    TopicMismatch,
    TopicNotFound,
    TransportConnectionError,
)

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def config_from_args(args: argparse.Namespace) -> Config:
    """The effective configuration: these arguments over ``BALOG_*`` over the file."""
    values = {key: getattr(args, key, None) for key in KEYS}
    return load_config(
        file=getattr(args, "config", None),
        values=values,
        options=getattr(args, "option", None) or (),
        settings=getattr(args, "settings", None) or (),
    )


def setup_logging(level: str) -> None:
    """Send balog's log (and the consumers' own logging) to stderr at ``level``."""
    logging.basicConfig(level=getattr(logging, level), stream=sys.stderr, format=LOG_FORMAT)


def load_object(spec: str, what: str) -> Any:
    """Import ``module:attribute.path``; a failure is a one-line :class:`ConfigurationError`."""
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise ConfigurationError(f"{what} must be 'module:name', not {spec!r}")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(f"cannot import {what} module {module_name!r}: {exc}") from exc
    for part in attribute.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ConfigurationError(
                f"{what} {spec!r}: {module_name} has no {attribute!r}"
            ) from None
    return obj


def build_operator(config: Config) -> Any:
    """The consumer operator ``factory(settings)`` named by the configuration, or ``None``."""
    if config.operator is None:
        return None
    from balog.consumers import ConsumerOperator

    factory = load_object(config.operator, "operator")
    if not callable(factory):
        raise ConfigurationError(f"operator {config.operator!r} is not callable")
    try:
        operator = factory(dict(config.settings))
    except Exception as exc:
        raise ConfigurationError(
            f"operator factory {config.operator!r} raised {type(exc).__name__}: {clip(str(exc))}"
        ) from exc
    if not isinstance(operator, ConsumerOperator):
        raise ConfigurationError(
            f"operator factory {config.operator!r} returned {type(operator).__name__}, which has "
            "no get_topic/process_event"
        )
    return operator


def scan_packages(packages: Iterable[str]) -> Any:
    """A :class:`~balog.consumers.ConsumerHub` of every consumer in ``packages``."""
    from balog.consumers import ConsumerHub
    from balog.exceptions import BalogError

    hub = ConsumerHub()
    for name in packages:
        try:
            hub.scan(name)
        except BalogError:
            raise
        except ModuleNotFoundError as exc:
            if exc.name and (name == exc.name or name.startswith(exc.name + ".")):
                raise ConfigurationError(f"no package or module named {name!r}") from exc
            raise ConfigurationError(f"importing {name} failed: {exc}") from exc
        except Exception as exc:
            raise ConfigurationError(
                f"importing {name} failed: {type(exc).__name__}: {clip(str(exc))}"
            ) from exc
    return hub


def make_transport(config: Config) -> Any:
    """The transport of the configuration, built with the options meant for it."""
    from balog.transports import create_transport

    name = config.transport_name
    with building(f"transport {name!r}", config):
        return create_transport(name, **config.transport_kwargs())


def summary(config: Config) -> str:
    """One line naming the engine, its url and options, and the file read; secrets masked."""
    parts = [f"engine {config.engine}"]
    if config.url:
        parts.append(f"url {mask_url(config.url)}")
    if config.options:
        masked = mask_options(config.options)
        shown = ", ".join(f"{k}={_shown(v)}" for k, v in sorted(masked.items()))
        parts.append(f"options {shown}")
    if config.file is not None:
        how = config.sources.get("file")
        found = " (found in the current directory)" if how == CURRENT_DIRECTORY else ""
        parts.append(f"config {config.origin('file') or config.file}{found}")
    return "; ".join(parts)


def _shown(value: Any) -> str:
    if isinstance(value, (dict, list)):
        return json.dumps(value, default=str)
    return str(value)


@contextmanager
def building(what: str, config: Config) -> Iterator[None]:
    """Turn a plain ``TypeError``/``ValueError`` raised while ``what`` is built from the
    configuration's options (a number given as text, say) into a :class:`ConfigurationError`."""
    try:
        yield
    except (TypeError, ValueError) as exc:
        text = {k: v for k, v in mask_options(config.options).items() if isinstance(v, str)}
        listed = ", ".join(f"{k}={v!r}" for k, v in sorted(text.items()))
        verb = "is" if len(text) == 1 else "are"
        given = f"; {listed} {verb} text, not a number, boolean or JSON" if text else ""
        raise ConfigurationError(
            f"{what} could not take its options ({type(exc).__name__}: {clip(str(exc))}){given}"
        ) from exc


# -- the one line an error ends with ------------------------------------------------------------


def explain(exc: BaseException, config: Config | None) -> str:
    """What ``balog: error:`` says about ``exc``: the cause, the setting to change, no secret."""
    text = str(exc) if isinstance(exc, BalogError) else f"{type(exc).__name__}: {exc}"
    hint = _hint(exc, config) if config is not None else None
    scrub = config.scrubber() if config is not None else mask_text
    # The cause may be long (an engine listing its options); the hint, short, is kept whole.
    line = clip(scrub(text), 500)
    return f"{line}; {clip(scrub(hint), 200)}" if hint else line


def _hint(exc: BaseException, config: Config) -> str | None:
    url = config.origin("url")
    if isinstance(exc, AuthenticationError):
        if url:
            return f"check the user name and password in {url}"
        secret = [config.origin(f"option:{n}") or n for n in config.options if is_secret_name(n)]
        if secret:
            return f"check the credentials in {', '.join(secret)}"
        return "give credentials the backend accepts (in --url, or the backend's own settings)"
    if isinstance(exc, TopicMismatch):
        declared = config.origin("option:queue_arguments")
        if declared:
            return f"make queue_arguments ({declared}) match the existing queue, or delete it"
        return (
            "the queue exists with other arguments: give the same ones with "
            "-o queue_arguments=JSON, or delete the queue"
        )
    if isinstance(exc, TopicNotFound):
        return "create the queue, or check the topic the consumers (or --operator) name"
    if isinstance(exc, TransportConnectionError):
        if url:
            return f"check the host and port in {url}, and that the backend is running"
        return (
            f"no url is set, so engine {config.engine!r} used its default: set one with --url, "
            "BALOG_URL or url in [balog] of balog.toml"
        )
    if isinstance(exc, ConfigurationError):
        text = str(exc)
        named = [
            where
            for where in _mentioned(text, config, plugin=isinstance(exc, PluginError))
            if where not in text
        ]
        if named:
            return f"set by {', '.join(dict.fromkeys(named))}"
    return None


def _mentioned(text: str, config: Config, *, plugin: bool) -> Iterator[str]:
    """Where the options (and, for a plugin error, the engine or transport) that ``text``
    names were set."""
    for name in config.options:
        if re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", text):
            yield config.origin(f"option:{name}") or name
    if plugin:
        for key in ("engine", "transport"):
            value = getattr(config, key)
            where = config.origin(key)
            if value and where and f"{value!r}" in text:
                yield where
