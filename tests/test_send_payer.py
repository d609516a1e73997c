"""`payrelay send --payer-name/--payer-fingerprint`: the payer of a generated event (a subprocess,
the real receiver and RabbitMQ), checked before sending as the event contract checks it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aio_pika
import orjson
import pytest

from service.receiver import create_app
from tests.conftest import free_port, get_all, make_settings, serve
from tests.test_commands import base_env, run

pytestmark = pytest.mark.usefixtures("rabbitmq_reachable")

FINGERPRINT = "acct:9f86d081884c7d65/9a2feaa0c55ad015+a3bf4f1b2b0b822c=="


async def sent(
    prefix: str, tmp_path: Path, amqp: aio_pika.abc.AbstractConnection, *extra: str
) -> list[dict[str, Any]]:
    """`payrelay send --amount 450.00 EXTRA...` to a real receiver: the `data` of each event queued."""
    async with serve(create_app(make_settings(prefix))) as url:
        code, out, err = await run(
            "send", "--url", url, "--amount", "450.00", *extra, env=base_env(prefix, tmp_path)
        )
    assert code == 0 and out.startswith("202 "), out + err
    messages = await get_all(amqp, f"{prefix}.record-payment", expect=1)
    return [orjson.loads(message.body)["data"] for message in messages]


async def test_payer_name_and_fingerprint_become_data_payer(
    prefix: str, tmp_path: Path, amqp: aio_pika.abc.AbstractConnection
) -> None:
    """Both options: data.payer.name and data.payer.account_fingerprint, as given; the receiver takes them."""
    [data] = await sent(
        prefix,
        tmp_path,
        amqp,
        "--payer-name",
        "Globex Corporation",
        "--payer-fingerprint",
        FINGERPRINT,
        "--reference",
        "DEP-GX-7",
    )

    assert data["payer"] == {"name": "Globex Corporation", "account_fingerprint": FINGERPRINT}
    assert (data["bank_reference"], data["amount"]) == ("DEP-GX-7", "450.00")
    assert "invoice_id" not in data


async def test_one_payer_option_alone_and_neither(
    prefix: str, tmp_path: Path, amqp: aio_pika.abc.AbstractConnection
) -> None:
    """--payer-name alone sets only the name; without either option the event has no payer, as before."""
    [named] = await sent(prefix, tmp_path, amqp, "--payer-name", "Hooli, Inc.")
    [plain] = await sent(prefix, tmp_path, amqp, "--invoice", "INV-1001")

    assert named["payer"] == {"name": "Hooli, Inc."}
    assert "payer" not in plain and plain["invoice_id"] == "INV-1001"


@pytest.mark.parametrize(
    ("option", "value", "says"),
    [
        ("--payer-fingerprint", "has spaces", "data.payer.account_fingerprint must be 1-128 characters"),
        ("--payer-fingerprint", "x" * 129, "data.payer.account_fingerprint must be 1-128 characters"),
        ("--payer-name", "n" * 201, "data.payer.name must be a string of at most 200 characters"),
    ],
)
async def test_a_payer_the_contract_refuses_is_exit_2_before_sending(
    prefix: str, tmp_path: Path, option: str, value: str, says: str
) -> None:
    """A fingerprint or name the receiver would refuse: exit 2 with the contract's reason, nothing sent."""
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens: an attempt to send would be exit 4
    code, _, err = await run(
        "send", "--url", url, "--amount", "1.00", option, value, env=base_env(prefix, tmp_path)
    )

    assert code == 2 and f"argument {option}: {says}" in err
