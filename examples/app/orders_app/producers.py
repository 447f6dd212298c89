"""Where the shop's code logs its events."""

from __future__ import annotations

from balog import get_logger

balogger = get_logger(__name__)


def place_order(order_id: str, amount_cents: int, customer: str) -> None:
    """Take an order (here: only the event that says so)."""
    balogger.info(
        "placed",
        payload={
            "cls_type": "order",
            "order_id": order_id,
            "amount_cents": amount_cents,
            "customer": customer,
        },
    )


def refund(order_id: str, amount_cents: int) -> None:
    """Refund part or all of an order."""
    balogger.info(
        "refunded",
        payload={"cls_type": "refund", "order_id": order_id, "amount_cents": amount_cents},
    )


def report_sales(total_cents: int, orders: int) -> None:
    """A metrics event, in the shape of balog's built-in ``metrics`` payload."""
    balogger.info(
        "sales",
        payload={
            "cls_type": "metrics",
            "values": [
                {"name": "total_cents", "value": total_cents},
                {"name": "orders", "value": orders},
            ],
        },
    )
