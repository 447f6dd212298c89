"""A small shop back end that produces and consumes balog events: the testing example.

``orders_app.producers`` logs events as the shop's code runs; ``orders_app.consumers`` declares
what reacts to them; ``orders_app.operator.OrdersOperator`` runs the consumers with the app's
settings, in the way of the consumer operator of balog's README. ``build_hub()`` collects the
consumers.
"""

from __future__ import annotations

from balog.consumers import ConsumerHub


def build_hub() -> ConsumerHub:
    """Every consumer of the app, found by scanning its consumers module."""
    from orders_app import consumers

    hub = ConsumerHub()
    hub.scan(consumers)
    return hub
