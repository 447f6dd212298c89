"""A FastAPI app that logs balog events and consumes them on its own event loop.

``POST /signups`` logs a ``signup`` event; the ``async def`` consumer ``welcome`` receives it and
puts the address on an ``asyncio.Queue`` of the app; ``GET /welcomed/next`` waits on that queue.
The producer and the engine share one embedded sqlite file. The engine runs for as long as the
app does (``async with engine`` in the lifespan): async consumers run on the app's loop, where
they may use what the app set up there, while balog's own threads talk to the backend.

Run it with ``uvicorn --app-dir examples/asyncio_app signups:app``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from pydantic import BaseModel

import balog
from balog.consumers import Consumer, ConsumerHub, consumer_config
from balog.engines.sqlite import SQLiteEngine
from balog.events import EventDict
from balog.producer import state as producer_state

TOPIC = "signups"

balogger = balog.get_logger(__name__)


class Inbox:
    """What the consumer hands to the app, on the app's loop."""

    def __init__(self) -> None:
        self.welcomed: asyncio.Queue[str] = asyncio.Queue()


@consumer_config(topic=TOPIC, cls_type="signup", version="<1.0")
async def welcome(inbox: Inbox, event: EventDict) -> None:
    await inbox.welcomed.put(event["payload"]["email"])


class AppOperator:
    """Calls each consumer with the app's inbox (as the README's operator passes settings)."""

    def __init__(self, inbox: Inbox) -> None:
        self.inbox = inbox

    def get_topic(self, consumer: Consumer) -> str:
        return consumer.topic

    def process_event(self, consumer: Consumer, event: EventDict) -> Any:
        return consumer.func(self.inbox, event)  # a coroutine: the engine awaits it


class Signup(BaseModel):
    email: str


def create_app(database: str = "signups.sqlite3") -> FastAPI:
    """The app, its producer and its consumers on the sqlite file ``database``."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        balog.configure("sqlite", topic=TOPIC, path=database)
        app.state.inbox = inbox = Inbox()
        engine = SQLiteEngine(ConsumerHub([welcome]), AppOperator(inbox), path=database, wait=0.2)
        try:
            async with engine:  # stops, letting in-flight events finish, when the app stops
                yield
        finally:
            producer_state.reset()  # flush what was logged, detach balog's handler

    app = FastAPI(lifespan=lifespan)

    @app.post("/signups", status_code=202)
    async def sign_up(signup: Signup) -> dict[str, str]:
        balogger.info("signed_up", payload={"cls_type": "signup", "email": signup.email})
        return {"status": "accepted"}

    @app.get("/welcomed/next")
    async def next_welcomed(request: Request, timeout: float = 5.0) -> dict[str, str]:
        inbox: Inbox = request.app.state.inbox
        try:
            email = await asyncio.wait_for(inbox.welcomed.get(), timeout)
        except asyncio.TimeoutError:
            raise HTTPException(404, f"nobody welcomed in {timeout:g} s") from None
        return {"email": email}

    return app


app = create_app(os.environ.get("SIGNUPS_DATABASE", "signups.sqlite3"))
