"""One call that puts balog's process-wide state back as a fresh interpreter has it."""

from __future__ import annotations

__all__ = ["reset"]


def reset(timeout: float | None = 5.0) -> None:
    """Reset every piece of balog's process-wide state; call it between tests.

    - the producer set up by :func:`balog.configure`: flushed for up to ``timeout`` seconds, its
      handler removed from its logger and closed, the default level restored;
    - every other live :class:`~balog.handler.EventHandler` (one built by ``dictConfig``, say) is
      left alone: it belongs to the logging configuration that made it;
    - :data:`balog.transports.memory.default_broker`: emptied;
    - :data:`balog.events.default_registry`: payload schemas and upcasters registered since
      import forgotten (the built-in ones kept; entry point ones loaded again on next use);
    - :data:`balog.handler.last_resort`: attached to the ``balog`` logger again if a test
      removed it; which problems of log calls were already reported is forgotten.

    balog's own test fixtures call it before and after every test, as the pytest plugin's
    ``balog_reset`` fixture does for applications.
    """
    import balog.producer
    from balog.events import default_registry
    from balog.handler import last_resort
    from balog.transports.memory import default_broker

    balog.producer.state.reset(timeout)
    default_broker.reset()
    default_registry.reset()
    last_resort.attach()
