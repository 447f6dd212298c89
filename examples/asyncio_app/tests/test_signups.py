"""The example app end to end: through its HTTP API, with the app's own lifespan and loop."""

from __future__ import annotations

from fastapi.testclient import TestClient
from signups import create_app


def test_a_signup_is_welcomed_by_the_async_consumer(database: str) -> None:
    """An event logged by ``POST /signups`` reaches the async consumer, on the app's loop."""
    with TestClient(create_app(database)) as client:
        accepted = client.post("/signups", json={"email": "ada@example.org"})
        welcomed = client.get("/welcomed/next", params={"timeout": 20})
    assert accepted.status_code == 202
    assert welcomed.status_code == 200
    assert welcomed.json() == {"email": "ada@example.org"}


def test_every_signup_is_welcomed_once(database: str) -> None:
    """Several signups are each consumed once, while the app keeps serving requests."""
    emails = [f"user{n}@example.org" for n in range(5)]
    with TestClient(create_app(database)) as client:
        for email in emails:
            assert client.post("/signups", json={"email": email}).status_code == 202
        welcomed = [client.get("/welcomed/next", params={"timeout": 20}) for _ in emails]
    assert [r.status_code for r in welcomed] == [200] * len(emails)
    assert sorted(r.json()["email"] for r in welcomed) == sorted(emails)
