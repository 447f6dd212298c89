"""Bodies as balog 1.x's producer wrote them, built by hand the way its code built them.

balog 1.x serialised each event with its colander schema (``FacilityRecordSchema``) and
``json.dumps``: schema ``"0.0.1"``; an id of ``"LG"`` and a base58 uuid4 (``coid``); the timestamp
``datetime.utcnow()`` in UTC as ``isoformat()``; an empty context; and each metric value as
``str(float(value))`` under Python 2, which keeps 12 significant digits and adds ``.0``.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timezone
from typing import Any

_BASE58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def guid() -> str:
    """An id as ``GUIDFactory('LG')`` made it: ``LG`` and a uuid4 in base58."""
    number = uuid.uuid4().int
    digits = ""
    while number:
        number, rest = divmod(number, 58)
        digits = _BASE58[rest] + digits
    return "LG" + digits


def py2_str(value: float) -> str:
    """``str(float)`` as Python 2 wrote it: ``%.12g``, with ``.0`` added to a whole number."""
    text = f"{value:.12g}"
    if text.lstrip("-") in ("inf", "nan"):
        return text
    if "." not in text and "e" not in text:
        text += ".0"
    return text


def event(channel: str, payload: dict[str, Any]) -> dict[str, Any]:
    """The event ``LogProcessor`` built for ``channel`` and ``payload``."""
    if payload.get("cls_type") == "metrics":
        payload = {
            **payload,
            "values": [
                {"name": v["name"], "value": py2_str(float(v["value"]))} for v in payload["values"]
            ],
        }
    return {
        "schema": "0.0.1",
        "header": {
            "id": guid(),
            "channel": channel,
            "timestamp": datetime.now(timezone.utc).isoformat(),
            "context": {},
        },
        "payload": payload,
    }


def body(channel: str, payload: dict[str, Any]) -> bytes:
    """The JSON balog 1.x's producer sent: Python 2's ``json.dumps``, ASCII only."""
    return json.dumps(event(channel, payload), ensure_ascii=True).encode("ascii")


MESSAGE_JSON = (
    b'{"header": {"timestamp": "2014-10-07T15:06:51.641083+00:00", '
    b'"id": "LGk37Fo3xLLVx9GrfnyTuvBd", "context": {}, '
    b'"channel": "tests.unit.test_log.foobar"}, '
    b'"payload": {"cls_type": "metrics", "values": ['
    b'{"name": "foo", "value": "1234.0"}, {"name": "bar", "value": "5678.0"}]}, '
    b'"schema": "0.0.1"}'
)
"""balog 1.x's own test fixture ``tests/fixtures/message.json``, byte for byte in content."""
