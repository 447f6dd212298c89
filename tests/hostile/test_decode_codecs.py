"""decode gives the same verdict on hostile bodies whichever JSON codec is in use.

orjson is used when installed (the ``fast`` extra) and the standard library otherwise; a body must
not be accepted by one and refused by the other, nor refused with a different error class.
"""

from __future__ import annotations

import pytest

import balog.events
from balog.events import decode, encode, new_event
from balog.exceptions import DecodeError, EventError, EventTooDeep

CODECS = {"orjson": balog.events.loads, "stdlib": balog.events.std_loads}


def _event_body() -> bytes:
    return encode(new_event("codec.probe", {"cls_type": "probe", "n": 0}))


BODIES: list[tuple[str, bytes, type[EventError], str | None]] = [
    ("deep-array", b"[" * 200_000 + b"]" * 200_000, EventTooDeep, None),
    ("deep-object", b'{"a":' * 50_000 + b"1" + b"}" * 50_000, EventTooDeep, None),
    (
        "int-100k-digits",
        _event_body().replace(b'"n":0', b'"n":' + b"9" * 100_000),
        DecodeError,
        None,
    ),
    ("float-overflow", _event_body().replace(b'"n":0', b'"n":1e400'), DecodeError, None),
    ("nan", _event_body().replace(b'"n":0', b'"n":NaN'), DecodeError, None),
    ("infinity", _event_body().replace(b'"n":0', b'"n":-Infinity'), DecodeError, None),
    ("duplicate-schema", _event_body()[:-1] + b',"schema":"0.2"}', DecodeError, "schema"),
    (
        "duplicate-cls-type",
        _event_body().replace(b'"cls_type":', b'"cls_type":"log","cls\\u005ftype":', 1),
        DecodeError,
        "payload.cls_type",
    ),
    ("invalid-utf8", b'{"a":"\xed\xa0\x80"}', DecodeError, None),
    ("bom", b"\xef\xbb\xbf" + _event_body(), DecodeError, None),
]


@pytest.mark.parametrize("codec", sorted(CODECS))
@pytest.mark.parametrize(
    ("body", "error", "field"),
    [pytest.param(b, e, f, id=name) for name, b, e, f in BODIES],
)
def test_hostile_body_gets_the_same_error_with_either_codec(
    codec: str,
    body: bytes,
    error: type[EventError],
    field: str | None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each hostile body raises the same EventError subclass, naming the same field, per codec."""
    monkeypatch.setattr(balog.events, "loads", CODECS[codec])
    with pytest.raises(EventError) as rejected:
        decode(body, max_size=2_000_000)
    assert error is type(rejected.value)
    assert field == rejected.value.field
    assert "\n" not in str(rejected.value)
    assert len(str(rejected.value)) < 300


@pytest.mark.parametrize("codec", sorted(CODECS))
def test_repeated_key_inside_open_content_is_not_an_error(
    codec: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Facility field names may recur deeper in the payload; only the facility layer is checked."""
    monkeypatch.setattr(balog.events, "loads", CODECS[codec])
    event = new_event(
        "codec.probe",
        {"cls_type": "probe", "inner": {"schema": 1, "id": "x", "payload": {"cls_type": "y"}}},
    )
    event["header"]["context"] = {"id": "ctx", "channel": "c\x1b"}
    assert event == decode(encode(event))
