"""An example consumer package: what ``balog consume demo_app`` runs in the demo.

Its consumers take the settings as their first argument, as in balog's original README, and
record each event they process in a ledger file (``demo.ledger`` in the settings) so that the
demo can check that every event was processed exactly once.
"""
