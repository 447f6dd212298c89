"""Testing helpers for applications that produce and consume balog events.

Public, documented test API (see ``docs/testing.md``):

- :func:`capture_events`: collect the events the code under test logs, with no broker at all;
- :class:`EngineHarness` and the one-call helpers :func:`drain`, :func:`run_until`,
  :func:`wait_for_events` and :func:`wait_for_dead_letters`: run a hub until something has
  happened or a deadline passed, re-raising a consumer's exception in the test when asked;
  from async tests, :func:`await_events` and :func:`await_dead_letters` (and the harness's
  ``await_*`` methods) serve the engine on the running loop instead;
- :class:`BackendChoice`: the backend a test suite runs on, chosen by name (memory by default);
- the pytest plugin :mod:`balog.testing.plugin` (installed with balog, registered through the
  ``pytest11`` entry point) with fixtures built on all of these;
- :mod:`balog.testing.conformance`: the suite that checks a transport keeps balog's contract;
- :func:`reset`: every piece of balog's process-wide state back as at import, between tests.

Nothing here imports pytest, except the plugin and the conformance suite.
"""

from __future__ import annotations

from balog.testing._backend import ENGINE_ENV, OPTIONS_ENV, URL_ENV, BackendChoice, parse_options
from balog.testing._capture import CapturedEvents, CapturingHandler, capture_events
from balog.testing._harness import (
    EngineHarness,
    Processed,
    await_dead_letters,
    await_events,
    drain,
    run_until,
    wait_for_dead_letters,
    wait_for_events,
)
from balog.testing._reset import reset

__all__ = [
    "ENGINE_ENV",
    "OPTIONS_ENV",
    "URL_ENV",
    "BackendChoice",
    "CapturedEvents",
    "CapturingHandler",
    "EngineHarness",
    "Processed",
    "await_dead_letters",
    "await_events",
    "capture_events",
    "drain",
    "parse_options",
    "reset",
    "run_until",
    "wait_for_dead_letters",
    "wait_for_events",
]
