"""The ``balog`` command: run consumers as a service, produce, inspect and repair.

::

    balog consume PACKAGE [PACKAGE...]   run the consumers found in the packages until SIGTERM
    balog send TOPIC                     produce events from arguments or NDJSON on stdin
    balog plugins                        the installed engines and transports
    balog validate [FILE...]             check events against the facility and payload schemas
    balog describe PACKAGE [PACKAGE...]  the consumer catalog, with overlaps and gaps
    balog dead-letters list|replay|purge TOPIC
    balog config                         the effective configuration, secrets masked

This module imports only the standard library's ``argparse`` at import time, so that
``balog --help`` is quick; each command imports what it needs when it runs. Every error a user
can cause ends in one line on stderr and a non-zero exit: 2 for bad arguments, 1 otherwise.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

__all__ = ["main"]

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line: ``balog send: error: ...``."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _backend_options(parser: argparse.ArgumentParser, *, transport: bool) -> None:
    group = parser.add_argument_group("configuration (command line > BALOG_* environment > file)")
    group.add_argument(
        "--config",
        metavar="FILE",
        help="a .toml or .ini file (INI: FILE#SECTION picks the section); env BALOG_CONFIG; "
        "default ./balog.toml when there is one",
    )
    group.add_argument(
        "--engine",
        metavar="NAME",
        help="engine by name (see 'balog plugins'); default sqlite; env BALOG_ENGINE",
    )
    if transport:
        group.add_argument(
            "--transport",
            metavar="NAME",
            help="transport by name; default: the engine's name; env BALOG_TRANSPORT",
        )
    group.add_argument(
        "--url",
        metavar="URL",
        help="backend URL: option url (endpoint_url where the backend names it so); env BALOG_URL",
    )
    group.add_argument(
        "-o",
        "--option",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        help="an engine/transport option (repeatable); VALUE may be JSON ({...}, [...]); "
        "env BALOG_OPTION_<KEY>",
    )
    group.add_argument(
        "--log-level",
        metavar="LEVEL",
        type=str.upper,
        choices=("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"),
        help="level of balog's own log on stderr; env BALOG_LOG_LEVEL",
    )


def _operator_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("consumer operator")
    group.add_argument(
        "--operator",
        metavar="MODULE:FACTORY",
        help="build the operator with FACTORY(settings); default: call consumer(event); "
        "env BALOG_OPERATOR",
    )
    group.add_argument(
        "--set",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        dest="settings",
        help="add KEY=VALUE to the settings given to the operator factory (repeatable)",
    )


def _format_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--format", choices=("text", "json"), default="text", help="output format (default text)"
    )


def build_parser() -> argparse.ArgumentParser:
    """The whole command line, every command with its ``--help``."""
    parser = _Parser(
        prog="balog",
        description="Structured event logging and consumption over pluggable transports.",
        epilog="Run 'balog COMMAND --help' for a command's options.",
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    parser.add_argument(
        "--traceback",
        action="store_true",
        help="on an unexpected error, print the full traceback instead of one line",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    consume = commands.add_parser(
        "consume",
        help="run the consumers of packages until SIGTERM or Ctrl-C",
        description="Scan the packages for consumers and run them on the chosen engine until "
        "SIGTERM or Ctrl-C; then finish the events in progress and exit 0. A one-line status "
        "goes to stderr periodically. When the consumers cannot run (credentials refused, "
        "backend unreachable, queue missing or declared otherwise), exit 1 with one line "
        "naming the cause and the setting to change.",
    )
    consume.add_argument("packages", nargs="+", metavar="PACKAGE", help="a package or module")
    _backend_options(consume, transport=False)
    _operator_options(consume)
    consume.add_argument(
        "--concurrency",
        type=int,
        metavar="N",
        help="worker threads per topic; env BALOG_CONCURRENCY",
    )
    consume.add_argument(
        "--status-interval",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="seconds between status lines on stderr; 0 for none (default 10)",
    )

    send = commands.add_parser(
        "send",
        help="produce events to a topic",
        description="Produce one event from --cls-type/--payload, or one event per line of "
        "newline-delimited JSON on stdin. A line is a whole event, or a payload (an object with "
        "a cls_type) to wrap in one. Events are validated before anything is sent.",
    )
    send.add_argument("topic", metavar="TOPIC")
    send.add_argument(
        "--channel", default="balog.send", help="channel of events built here (default balog.send)"
    )
    send.add_argument("--cls-type", metavar="TYPE", help="the payload's cls_type")
    send.add_argument("--payload", metavar="JSON", help="the payload, a JSON object")
    send.add_argument(
        "--count", type=int, default=1, metavar="N", help="send the --payload event N times"
    )
    send.add_argument(
        "--raw",
        action="store_true",
        help="send each stdin line as the body, as is: no wrapping, no validation",
    )
    send.add_argument(
        "--batch-size", type=int, default=100, metavar="N", help="bodies per send (default 100)"
    )
    send.add_argument(
        "--progress",
        choices=("auto", "always", "never"),
        default="auto",
        help="progress on stderr: auto shows it when stderr is a terminal (default)",
    )
    _backend_options(send, transport=True)

    plugins = commands.add_parser(
        "plugins",
        help="list the installed engines and transports",
        description="List the engines and transports installed under the balog.engines and "
        "balog.transports entry points, with their package and capabilities. A plugin that "
        "fails to load is listed with the reason.",
    )
    _format_option(plugins)

    validate = commands.add_parser(
        "validate",
        help="check events against the facility and payload schemas",
        description="Check events in JSON (an object or an array) or NDJSON files, or stdin, "
        "against the facility schema and the registered payload schemas. Prints one line per "
        "bad event, naming the field, and exits 1 if any is bad.",
    )
    validate.add_argument("files", nargs="*", metavar="FILE", help="files to check; - is stdin")
    validate.add_argument(
        "--schema",
        action="append",
        default=[],
        metavar="CLS_TYPE=FILE",
        help="also check payloads of CLS_TYPE against the JSON Schema in FILE (repeatable)",
    )

    describe = commands.add_parser(
        "describe",
        help="the consumer catalog, with overlaps and gaps",
        description="List each consumer of the packages with its topic, cls_types and version "
        "range, and warn about overlaps (a cls_type and version two consumers on one topic "
        "both take) and gaps (versions balog reads that no consumer takes).",
    )
    describe.add_argument("packages", nargs="+", metavar="PACKAGE")
    describe.add_argument("--config", metavar="FILE", help="settings for the operator factory")
    _operator_options(describe)
    _format_option(describe)
    describe.add_argument("--strict", action="store_true", help="exit 1 when there is any warning")

    dead = commands.add_parser(
        "dead-letters",
        help="list, replay or purge a topic's dead letters",
        description="Inspect a topic's dead-lettered events with their reasons, put them back "
        "on the topic after a fix, or remove them.",
    )
    actions = dead.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser)
    actions.required = True
    dl_list = actions.add_parser(
        "list",
        help="show the dead letters and why",
        description=(
            "Show the topic's dead letters with the reason each was dead-lettered (they stay)."
        ),
    )
    dl_list.add_argument("topic", metavar="TOPIC")
    dl_list.add_argument("--limit", type=int, default=100, metavar="N", help="at most N (100)")
    _format_option(dl_list)
    _backend_options(dl_list, transport=True)
    dl_replay = actions.add_parser(
        "replay",
        help="put the dead letters back on the topic",
        description="Move the topic's dead letters back onto it.",
    )
    dl_replay.add_argument("topic", metavar="TOPIC")
    dl_replay.add_argument("--limit", type=int, metavar="N", help="at most N (default all)")
    _backend_options(dl_replay, transport=True)
    dl_purge = actions.add_parser(
        "purge",
        help="remove the dead letters for good",
        description="Remove the topic's dead letters for good.",
    )
    dl_purge.add_argument("topic", metavar="TOPIC")
    dl_purge.add_argument("--yes", action="store_true", help="confirm: this cannot be undone")
    _backend_options(dl_purge, transport=True)

    config = commands.add_parser(
        "config",
        help="show the effective configuration, secrets masked",
        description="Show the configuration the other commands would use, where each value "
        "comes from, with passwords and secret options masked.",
    )
    _backend_options(config, transport=True)
    _operator_options(config)
    config.add_argument("--concurrency", type=int, metavar="N")
    _format_option(config)
    return parser


_CONFIGURED = frozenset({"consume", "send", "dead-letters", "config", "describe"})
"""The commands that read the configuration (file, ``BALOG_*``, arguments)."""


def _run(args: argparse.Namespace, parser: argparse.ArgumentParser, config: Any) -> int:
    if args.version:
        from balog import __version__

        print(f"balog {__version__}")
        return EXIT_OK
    command = args.command
    if command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    if command == "consume":
        from balog.cli.consume import run_consume

        return run_consume(args, config)
    if command == "send":
        from balog.cli.send import run_send

        return run_send(args, config)
    if command == "dead-letters":
        from balog.cli.deadletters import run_dead_letters

        return run_dead_letters(args, config)
    from balog.cli import info as commands

    if command in _CONFIGURED:
        runner = commands.run_describe if command == "describe" else commands.run_config
        return int(runner(args, config))
    runners: dict[str, Any] = {"plugins": commands.run_plugins, "validate": commands.run_validate}
    return int(runners[command](args))


def _import_from_current_directory() -> None:
    """Let every command import packages from the current directory, as ``python -m`` does.

    The console script's ``sys.path`` starts with its own directory instead. Python's
    ``-P`` / ``PYTHONSAFEPATH`` (3.11+) keeps the current directory out, here too.
    """
    if getattr(sys.flags, "safe_path", False):
        return
    cwd = os.getcwd()
    if "" not in sys.path and cwd not in sys.path:
        sys.path.insert(0, cwd)


def _debug_detail(exc: BaseException, scrub: Any) -> None:
    import traceback

    detail = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    print(f"balog: debug: the error in full:\n{scrub(detail).rstrip()}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``balog`` command line; return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _import_from_current_directory()
    config = None
    try:
        if args.command in _CONFIGURED and not args.version:
            from balog.cli._common import config_from_args

            config = config_from_args(args)
        return _run(args, parser, config)
    except KeyboardInterrupt:
        print("balog: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (``balog plugins | head``): say nothing more, and point stdout at
        # the null device so that the interpreter's final flush does not fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_ERROR
    except Exception as exc:
        from balog._secrets import mask_text
        from balog.cli._common import explain
        from balog.exceptions import BalogError

        if getattr(args, "traceback", False) and not isinstance(exc, BalogError):
            raise
        level = getattr(config, "log_level", None) or getattr(args, "log_level", None)
        if level == "DEBUG":
            _debug_detail(exc, config.scrubber() if config is not None else mask_text)
        known = isinstance(exc, BalogError | OSError)
        hint = "" if known else " (--traceback shows where)"
        kind = "error" if known else "unexpected error"
        print(f"balog: {kind}: {explain(exc, config)}{hint}", file=sys.stderr)
        return EXIT_ERROR
