"""The consumer operator: which queue each consumer reads, and how it is called."""

from __future__ import annotations

import threading
from typing import Any

from balog.consumers import Consumer


class Ledger:
    """The app's store: cents per order. Thread-safe, as consumers may run on several threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cents: dict[str, int] = {}

    def record(self, order_id: str, cents: int) -> None:
        with self._lock:
            self._cents[order_id] = self._cents.get(order_id, 0) + cents

    def paid(self, order_id: str) -> int:
        with self._lock:
            return self._cents.get(order_id, 0)

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._cents)


class OrdersOperator:
    """Fills ``{env}`` in topics from the settings and passes the settings to each consumer."""

    def __init__(self, settings: dict[str, Any]) -> None:
        self.settings = settings

    def get_topic(self, consumer: Consumer) -> str:
        return consumer.topic.format(env=self.settings["env"])

    def process_event(self, consumer: Consumer, event: dict[str, Any]) -> Any:
        return consumer.func(self.settings, event)
