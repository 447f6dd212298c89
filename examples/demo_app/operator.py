"""The demo's consumer operator, in the style of balog's original README.

``balog consume demo_app --operator demo_app.operator:ConsumerOperator`` builds it with the
settings (``ConsumerOperator(settings)``): ``demo.env`` fills the ``{env}`` of the topics and
every consumer is called as ``func(settings, event)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from balog.consumers import Consumer


class ConsumerOperator:
    def __init__(self, settings: Mapping[str, Any]) -> None:
        self.settings = settings

    def get_topic(self, consumer: Consumer) -> str:
        return consumer.topic.format(env=self.settings.get("demo.env", "dev"))

    def process_event(self, consumer: Consumer, event: dict[str, Any]) -> Any:
        return consumer.func(self.settings, event)
