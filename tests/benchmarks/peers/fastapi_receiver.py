"""The peer receiver: FastAPI + pydantic + standardwebhooks + aio-pika, doing payrelay's checks.

What a team would write for the same contract (SPEC §2) without payrelay: a Standard Webhooks
signature check, the CloudEvent and its `data` validated by a pydantic model, one confirmed
persistent publish to the same topic exchange, 202 with the ids. Run by the benchmark as

    PEER_SECRET=whsec_... PEER_EXCHANGE=prefix.events uvicorn tests.benchmarks.peers.fastapi_receiver:app

with uvicorn's defaults (httptools and uvloop, as payrelay's), and INFO logging as a service would run.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Literal

import aio_pika
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, ValidationError
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

SECRET = os.environ.get("PEER_SECRET", "")
EXCHANGE = os.environ.get("PEER_EXCHANGE", "payrelay.events")
AMQP_URL = os.environ.get("PEER_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")


class Deposit(BaseModel):
    amount: Decimal = Field(gt=0)
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    booked_at: str
    bank_reference: str = Field(min_length=1, max_length=100)
    invoice_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.-]{1,50}$")
    remittance_information: str | None = Field(default=None, max_length=2000)


class CloudEvent(BaseModel):
    specversion: Literal["1.0"]
    id: str = Field(min_length=1, max_length=255)
    source: str = Field(min_length=1, max_length=255)
    type: Literal["bank.deposit"]
    data: Deposit


class Broker:
    connection: aio_pika.abc.AbstractConnection
    exchange: aio_pika.abc.AbstractExchange


broker = Broker()


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    broker.connection = await aio_pika.connect_robust(AMQP_URL)
    channel = await broker.connection.channel(publisher_confirms=True)
    broker.exchange = await channel.get_exchange(EXCHANGE)
    yield
    await broker.connection.close()


app = FastAPI(lifespan=lifespan)
webhook = Webhook(SECRET) if SECRET else None


@app.post("/v1/ingest/{source}", status_code=202)
async def ingest(source: str, request: Request) -> JSONResponse:
    body = await request.body()
    if webhook is None:
        raise HTTPException(500, "no secret")
    try:
        webhook.verify(body, dict(request.headers))
    except WebhookVerificationError as exc:
        raise HTTPException(401, str(exc)) from None
    try:
        event = CloudEvent.model_validate_json(body)
    except ValidationError as exc:
        raise HTTPException(422, exc.errors(include_url=False)) from None
    message = aio_pika.Message(
        body,
        message_id=event.id,
        content_type="application/cloudevents+json",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        headers={"x-payrelay-source": source},
        type=event.type,
    )
    await broker.exchange.publish(message, routing_key=event.type)
    return JSONResponse({"accepted": 1, "ids": [event.id]}, status_code=202)


@app.get("/readyz")
async def readyz() -> dict[str, str]:
    return {"status": "ready"}
