"""``balog plugins``, ``balog validate``, ``balog describe`` and ``balog config``."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import sys
from collections.abc import Iterator
from typing import Any

from balog._text import clip
from balog.cli._common import build_operator, scan_packages
from balog.config import Config
from balog.exceptions import ConfigurationError, EventError, PluginError, PluginLoadError

# -- plugins ----------------------------------------------------------------------------------


def _capabilities(obj: Any) -> dict[str, Any] | None:
    """The capabilities a transport class declares, or ``None`` when they are set per instance.

    Building a transport just to read them could create files or open connections, so only what
    the class itself (or a base other than :class:`Transport`) declares is shown.
    """
    from balog.transports.base import Capabilities, Transport

    if not isinstance(obj, type):
        return None
    for klass in obj.__mro__:
        if klass is Transport:
            return None
        caps = vars(klass).get("capabilities")
        if isinstance(caps, Capabilities):
            return dataclasses.asdict(caps)
    return None


def _describe_caps(caps: dict[str, Any] | None) -> str:
    if caps is None:
        return ""
    flags = [name for name, value in caps.items() if value is True]
    text = ", ".join(flags) or "none"
    if caps.get("max_body_size"):
        text += f"; max body {caps['max_body_size']} bytes"
    return text


_ROLE = re.compile(r":[a-z]+:`~?(?:[\w.]*\.)?([\w]+)`")


def _summary_line(obj: Any) -> str:
    """The first line of the plugin's docstring, reST roles reduced to their last name."""
    doc = (getattr(obj, "__doc__", None) or "").strip()
    first = doc.splitlines()[0] if doc else ""
    return _ROLE.sub(r"\1", first).replace("``", "")


def plugin_table() -> list[dict[str, Any]]:
    """Every installed engine and transport, loaded, with its package and capabilities."""
    from balog import _plugins

    rows: list[dict[str, Any]] = []
    for kind, namespace in (("engine", _plugins.ENGINES), ("transport", _plugins.TRANSPORTS)):
        for name in _plugins.installed(namespace):
            ep = _plugins.entry_point(namespace, name)
            dist = getattr(ep, "dist", None)
            row: dict[str, Any] = {
                "kind": kind,
                "name": name,
                "target": ep.value if ep is not None else "",
                "package": dist.name if dist is not None else None,
                "version": dist.version if dist is not None else None,
            }
            try:
                obj = _plugins.load(namespace, name)
            except PluginLoadError as exc:
                row.update(status="failed", reason=exc.reason)
            except PluginError as exc:
                row.update(status="failed", reason=str(exc))
            else:
                row.update(status="ok", summary=_summary_line(obj))
                caps = _capabilities(obj)
                same_name = _plugins.entry_point(_plugins.TRANSPORTS, name) is not None
                if caps is None and kind == "engine" and same_name:
                    # An engine runs on a transport; show that transport's capabilities.
                    try:
                        caps = _capabilities(_plugins.load(_plugins.TRANSPORTS, name))
                    except PluginError:
                        caps = None
                row["capabilities"] = caps
            rows.append(row)
    return rows


def run_plugins(args: argparse.Namespace) -> int:
    rows = plugin_table()
    if args.format == "json":
        print(json.dumps(rows, indent=2))
        return 0
    for kind in ("engine", "transport"):
        group = [r for r in rows if r["kind"] == kind]
        print(f"{kind}s:")
        if not group:
            print("  (none installed)")
        width = max((len(r["name"]) for r in group), default=0)
        for r in group:
            package = f"{r['package']} {r['version']}" if r["package"] else "unknown package"
            head = f"  {r['name']:<{width}}  {package}  {r['target']}"
            if r["status"] == "ok":
                caps = _describe_caps(r.get("capabilities")) or "set when built (see its docs)"
                print(head)
                if r.get("summary"):
                    print(f"  {'':<{width}}  {clip(r['summary'], 200)}")
                print(f"  {'':<{width}}  capabilities: {caps}")
            else:
                print(f"{head}\n  {'':<{width}}  FAILED TO LOAD: {clip(r['reason'], 300)}")
    return 0


# -- validate ---------------------------------------------------------------------------------


def _bodies(name: str, data: bytes) -> Iterator[tuple[str, bytes | Any, bool]]:
    """``(location, body, raw)`` for each event in ``data``: JSON object, array, or NDJSON.

    ``raw`` is True for bytes still to decode, False for an already parsed element of an array.
    """
    from balog.events import std_loads

    stripped = data.strip()
    if stripped[:1] in (b"[", b"{"):
        try:
            whole = std_loads(stripped)
        except (ValueError, UnicodeDecodeError, RecursionError):
            whole = None
        if isinstance(whole, list):
            for i, item in enumerate(whole):
                yield f"{name}[{i}]", item, False
            return
        if isinstance(whole, dict):
            yield f"{name}", stripped, True
            return
    for number, line in enumerate(data.splitlines(), 1):
        if line.strip():
            yield f"{name}:{number}", line, True


def _field_and_message(exc: EventError) -> tuple[str, str]:
    message = str(exc)
    field = exc.field
    if field is not None and message.startswith(field + ": "):
        message = message[len(field) + 2 :]
    return field or "(event)", message


def run_validate(args: argparse.Namespace) -> int:
    from balog.events import SchemaRegistry, decode, validate

    registry = SchemaRegistry()
    for item in args.schema:
        cls_type, sep, path = item.partition("=")
        if not sep or not cls_type or not path:
            raise ConfigurationError(f"--schema {item!r} is not CLS_TYPE=FILE")
        try:
            with open(path, encoding="utf-8") as f:
                schema = json.load(f)
        except OSError as exc:
            raise ConfigurationError(f"cannot read schema file {path}: {exc.strerror}") from exc
        except ValueError as exc:
            raise ConfigurationError(f"schema file {path} is not JSON: {exc}") from exc
        if not isinstance(schema, dict):
            raise ConfigurationError(f"schema file {path} does not hold a JSON object")
        registry.register(cls_type, schema)

    files = args.files or ["-"]
    checked = bad = 0
    for path in files:
        if path == "-":
            name, data = "<stdin>", sys.stdin.buffer.read()
        else:
            if not os.path.isfile(path):
                raise ConfigurationError(f"no such file: {path}")
            name = path
            with open(path, "rb") as f:
                data = f.read()
        for where, body, raw in _bodies(name, data):
            checked += 1
            try:
                if raw:
                    decode(body, registry=registry)
                else:
                    validate(body, registry=registry)
            except EventError as exc:
                bad += 1
                field, message = _field_and_message(exc)
                print(f"{where}: {field}: {clip(message, 300)} [{type(exc).__name__}]")
    if checked == 0:
        print("balog: no events to check", file=sys.stderr)
        return 1
    verdict = "all valid" if not bad else f"{bad} invalid"
    print(f"balog: checked {checked} event(s): {verdict}", file=sys.stderr)
    return 1 if bad else 0


# -- describe ---------------------------------------------------------------------------------


def run_describe(args: argparse.Namespace, config: Config) -> int:
    from balog.cli.catalog import analyse, catalog, domain, format_ranges
    from balog.events import FACILITY_VERSION, default_registry

    operator = build_operator(config)
    hub = scan_packages(args.packages)
    majors = default_registry.supported_majors
    topics = catalog(hub.consumers, operator)
    warnings = analyse(hub.consumers, operator=operator, majors=majors, current=FACILITY_VERSION)
    if args.format == "json":
        document = {
            "facility_version": FACILITY_VERSION,
            "readable_versions": format_ranges(domain(majors)),
            "topics": topics,
            "warnings": [w.as_dict() for w in warnings],
        }
        print(json.dumps(document, indent=2))
    else:
        count = sum(len(v) for v in topics.values())
        print(
            f"{count} consumer(s) on {len(topics)} topic(s); balog produces schema "
            f"{FACILITY_VERSION} and reads {format_ranges(domain(majors))}"
        )
        for topic, consumers in topics.items():
            print(f"\ntopic {topic}")
            width = max(len(c["name"]) for c in consumers)
            for c in consumers:
                types = ", ".join(c["cls_types"]) if c["cls_types"] else "any"
                print(f"  {c['name']:<{width}}  cls_type {types:<12}  version {c['version']}")
        if warnings:
            print(f"\n{len(warnings)} warning(s):")
            for w in warnings:
                print(f"  {w.kind}: {w.message}")
        else:
            print("\nno overlaps or gaps")
    return 1 if warnings and args.strict else 0


# -- config -----------------------------------------------------------------------------------


def run_config(args: argparse.Namespace, config: Config) -> int:
    if args.format == "json":
        print(json.dumps(config.masked(), indent=2, default=str))
        return 0
    rows = config.describe()
    width = max(len(k) for k, _, _ in rows)
    vwidth = max(len(v) for _, v, _ in rows)
    for key, value, source in rows:
        print(f"{key:<{width}}  {value:<{vwidth}}  ({source})")
    return 0
