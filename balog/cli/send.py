"""``balog send TOPIC``: one event from arguments, or one per line of NDJSON on stdin."""

from __future__ import annotations

import argparse
import os
import stat
import sys
import time
from collections.abc import Iterator
from typing import IO, Any

from balog._text import clip
from balog.cli._common import make_transport, setup_logging
from balog.config import Config
from balog.exceptions import ConfigurationError, EventError


class Progress:
    """A one-line progress display on a terminal, redrawn at most ten times a second.

    It appears only once sending has taken ``after`` seconds, so a quick run shows nothing, and
    it is wiped when done. With ``total`` (bytes, when stdin is a regular file) it draws a bar;
    without, a running count.
    """

    WIDTH = 30
    AFTER = 0.5

    def __init__(self, stream: IO[str], total: int | None, enabled: bool) -> None:
        self.stream = stream
        self.total = total
        self.enabled = enabled
        self.started = time.monotonic()
        self._drawn_at = 0.0
        self._shown = False

    def update(self, events: int, consumed: int, *, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self.started < self.AFTER:
            return
        if not force and now - self._drawn_at < 0.1:
            return
        self._drawn_at = now
        rate = events / max(now - self.started, 1e-6)
        if self.total:
            done = min(consumed / self.total, 1.0)
            filled = int(done * self.WIDTH)
            bar = "#" * filled + "-" * (self.WIDTH - filled)
            line = f"[{bar}] {done:4.0%}  {events} events  {rate:,.0f}/s"
        else:
            line = f"{events} events  {rate:,.0f}/s"
        self.stream.write("\r" + line + "\x1b[K")
        self.stream.flush()
        self._shown = True

    def finish(self) -> None:
        if self._shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


def _stdin_size() -> int | None:
    try:
        info = os.fstat(sys.stdin.fileno())
    except (OSError, ValueError):
        return None
    return info.st_size if stat.S_ISREG(info.st_mode) else None


def _payload_event(channel: str, payload: Any, cls_type: str | None, where: str) -> Any:
    from balog.events import new_event

    if not isinstance(payload, dict):
        raise ConfigurationError(f"{where}: the payload must be a JSON object")
    if cls_type is not None:
        payload = {**payload, "cls_type": cls_type}
    if not isinstance(payload.get("cls_type"), str):
        raise ConfigurationError(f"{where}: the payload has no cls_type (give --cls-type)")
    return new_event(channel, payload)


def _check(event: Any, where: str) -> bytes:
    from balog.events import encode, validate

    try:
        validate(event)
    except EventError as exc:
        raise ConfigurationError(f"{where}: invalid event: {exc}") from exc
    return encode(event)


def _from_arguments(args: argparse.Namespace) -> Iterator[tuple[bytes, int]]:
    from balog.events import std_loads

    try:
        payload = std_loads(args.payload) if args.payload is not None else {}
    except ValueError as exc:
        raise ConfigurationError(f"--payload is not valid JSON: {clip(str(exc), 120)}") from exc
    for _ in range(args.count):
        event = _payload_event(args.channel, payload, args.cls_type, "--payload")
        yield _check(event, "--payload"), 0


def _from_stdin(args: argparse.Namespace) -> Iterator[tuple[bytes, int]]:
    """``(body, bytes read so far)`` for each non-blank line of stdin."""
    from balog.events import std_loads

    consumed = 0
    for number, line in enumerate(sys.stdin.buffer, 1):
        consumed += len(line)
        text = line.strip()
        if not text:
            continue
        if args.raw:
            yield text, consumed
            continue
        where = f"stdin line {number}"
        try:
            obj = std_loads(text)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ConfigurationError(f"{where}: not valid JSON: {clip(str(exc), 120)}") from exc
        if isinstance(obj, dict) and "schema" in obj and "header" in obj:
            yield _check(obj, where), consumed
        else:
            yield _check(_payload_event(args.channel, obj, args.cls_type, where), where), consumed


def run_send(args: argparse.Namespace, config: Config) -> int:
    if args.count < 1 or args.batch_size < 1:
        raise ConfigurationError("--count and --batch-size must be at least 1")
    from_arguments = args.payload is not None
    if from_arguments and args.raw:
        raise ConfigurationError("--raw sends stdin as is; it does not go with --payload")
    if not from_arguments and args.count != 1:
        raise ConfigurationError("--count repeats the --payload event; give --payload")
    if not from_arguments and sys.stdin.isatty():
        raise ConfigurationError("give --payload, or pipe NDJSON events into stdin")
    setup_logging(config.log_level or "WARNING")
    show = args.progress == "always" or (args.progress == "auto" and sys.stderr.isatty())
    source = _from_arguments(args) if from_arguments else _from_stdin(args)
    progress = Progress(sys.stderr, None if from_arguments else _stdin_size(), show)
    sent = 0
    with make_transport(config) as transport:
        batch: list[bytes] = []
        consumed = 0
        try:
            for body, consumed in source:
                batch.append(body)
                if len(batch) >= args.batch_size:
                    transport.send(args.topic, batch)
                    sent += len(batch)
                    batch = []
                    progress.update(sent, consumed)
        except ConfigurationError as exc:
            # Send what came before the bad line, so that "sent N" tells where to resume.
            if batch:
                transport.send(args.topic, batch)
                sent += len(batch)
            progress.finish()
            raise ConfigurationError(f"{exc} (sent {sent} event(s) before it)") from exc
        if batch:
            transport.send(args.topic, batch)
            sent += len(batch)
        progress.update(sent, consumed, force=True)
        progress.finish()
    print(f"sent {sent} event(s) to {args.topic}")
    return 0
