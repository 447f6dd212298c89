"""What the shop does when its events arrive. ``settings["ledger"]`` is the app's store."""

from __future__ import annotations

from typing import Any

from balog.consumers import consumer_config


class RefundRefused(Exception):
    """A refund larger than what was paid for the order."""


@consumer_config(topic="orders-{env}", cls_type="order", version="<1.0")
def record_order(settings: dict[str, Any], event: dict[str, Any]) -> None:
    payload = event["payload"]
    settings["ledger"].record(payload["order_id"], payload["amount_cents"])


@consumer_config(topic="orders-{env}", cls_type="refund", version="<1.0")
def apply_refund(settings: dict[str, Any], event: dict[str, Any]) -> None:
    payload = event["payload"]
    ledger = settings["ledger"]
    paid = ledger.paid(payload["order_id"])
    if payload["amount_cents"] > paid:
        raise RefundRefused(
            f"refund of {payload['amount_cents']} on order {payload['order_id']} paid {paid}"
        )
    ledger.record(payload["order_id"], -payload["amount_cents"])
