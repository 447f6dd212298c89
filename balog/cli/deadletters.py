"""``balog dead-letters list|replay|purge TOPIC``."""

from __future__ import annotations

import argparse
import json
from typing import Any

from balog._text import clip
from balog.cli._common import make_transport, setup_logging
from balog.config import Config
from balog.exceptions import ConfigurationError


def _about(body: bytes) -> dict[str, Any] | None:
    """What can be told of a body that may not even be JSON (``None``: it is not)."""
    from balog.events import std_loads

    try:
        event = std_loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    if not isinstance(event, dict):
        return {}
    header = event.get("header") if isinstance(event.get("header"), dict) else {}
    payload = event.get("payload") if isinstance(event.get("payload"), dict) else {}
    about = {
        "id": header.get("id") if header else None,
        "channel": header.get("channel") if header else None,
        "cls_type": payload.get("cls_type") if payload else None,
    }
    return {k: v for k, v in about.items() if isinstance(v, str)}


def run_dead_letters(args: argparse.Namespace, config: Config) -> int:
    setup_logging(config.log_level or "WARNING")
    if args.action == "purge" and not args.yes:
        raise ConfigurationError(
            f"purge removes the dead letters of {args.topic} for good; add --yes to confirm"
        )
    if getattr(args, "limit", None) is not None and args.limit < 1:
        raise ConfigurationError("--limit must be at least 1")
    with make_transport(config) as transport:
        if args.action == "list":
            letters = transport.dead_letters(args.topic, limit=args.limit)
            if args.format == "json":
                rows = [
                    {
                        "message_id": d.message_id,
                        "topic": d.topic,
                        "receive_count": d.receive_count,
                        "reason": d.reason,
                        "body": d.body.decode("utf-8", "replace"),
                    }
                    for d in letters
                ]
                print(json.dumps(rows, indent=2))
                return 0
            print(f"{len(letters)} dead letter(s) on {args.topic}")
            for d in letters:
                about = _about(d.body)
                if about is None:
                    described = f"body of {len(d.body)} bytes, not JSON"
                elif not about:
                    described = f"body of {len(d.body)} bytes, no channel or cls_type"
                else:
                    described = "  ".join(f"{k} {clip(v, 80)}" for k, v in about.items())
                print(f"- {clip(d.message_id, 80)}  received {d.receive_count}x  {described}")
                print(f"    reason: {clip(d.reason, 300)}")
            return 0
        if args.action == "replay":
            moved = transport.replay_dead_letters(args.topic, limit=args.limit)
            print(f"replayed {moved} dead letter(s) onto {args.topic}")
            return 0
        removed = transport.purge(transport.dead_letter_topic(args.topic))
        print(f"purged {removed} dead letter(s) of {args.topic}")
        return 0
