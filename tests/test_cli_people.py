"""The CLI speaks to people: one line for a mistake, plain text for a message's content, tables that fit.

Run as people run it: `payrelay` as a subprocess, on a pseudo-terminal where the width matters, against
the real RabbitMQ and ledger.
"""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import os
import pty
import re
import socket
import struct
import sys
import termios
import uuid
from pathlib import Path
from typing import Any

import aio_pika
import orjson
import pytest

from service.bankfiles import demo
from service.broker import declare_once
from service.cli import build_parser
from service.cli.dev import DEV_SECRET, dev_settings
from service.settings import DEFAULT_INVOICE_PATTERN, load_settings
from service.topology import build
from tests.conftest import AMQP_URL, SECRET, free_port
from tests.factories import new_deposit
from tests.pipeline import put_dead_letter, until

pytestmark = pytest.mark.usefixtures("rabbitmq_reachable")

PAYRELAY = str(Path(sys.executable).parent / "payrelay")
ROOT = Path(__file__).parent.parent
SGR = re.compile(r"\x1b\[[0-9;]*m")  # colours and bold: what rich itself writes on a terminal


@pytest.fixture
async def topology(prefix: str, amqp: aio_pika.abc.AbstractConnection) -> None:
    await declare_once(AMQP_URL, build(prefix, [5, 30, 120, 600, 1800], 20))


def clean_env(**values: str) -> dict[str, str]:
    """The caller's environment without any PAYRELAY_* (nor PAYRELAY_CONFIG), plus `values`."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PAYRELAY_")} | values


def broker_env(prefix: str, tmp_path: Path) -> dict[str, str]:
    return clean_env(
        PAYRELAY_AMQP_URL=AMQP_URL,
        PAYRELAY_AMQP_PREFIX=prefix,
        PAYRELAY_LEDGER_URL=f"sqlite:///{tmp_path / 'ledger.db'}",
    )


async def run(*args: str, env: dict[str, str], cwd: Path) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        PAYRELAY, *args, env=env, cwd=cwd, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def _drain(master: int) -> bytes:
    chunks = []
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    return b"".join(chunks)


async def on_terminal(*args: str, env: dict[str, str], cwd: Path, columns: int) -> tuple[int, str, str]:
    """Like `run`, with standard output on a pseudo-terminal `columns` wide, as an operator's is."""
    master, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    attributes = termios.tcgetattr(terminal)
    attributes[1] &= ~termios.OPOST  # keep "\n" as written (no "\r\n")
    termios.tcsetattr(terminal, termios.TCSANOW, attributes)
    env = {k: v for k, v in env.items() if k not in ("COLUMNS", "LINES", "NO_COLOR")} | {
        "TERM": "xterm-256color"
    }
    process = await asyncio.create_subprocess_exec(
        PAYRELAY, *args, env=env, cwd=cwd, stdin=asyncio.subprocess.DEVNULL, stdout=terminal,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    os.close(terminal)
    reading = asyncio.create_task(asyncio.to_thread(_drain, master))
    _, err = await asyncio.wait_for(process.communicate(), 60)
    out = await reading
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def one_line(err: str) -> str:
    """The whole of stderr is one `payrelay: ...` line, never a traceback."""
    assert "Traceback" not in err and err.count("\n") == 1 and err.startswith("payrelay: "), err
    return err


async def test_a_receiver_that_is_down_is_one_line_and_exit_4(tmp_path: Path) -> None:
    """`send` to nothing: one line naming the address and what to do; --debug adds the traceback."""
    url = f"http://127.0.0.1:{free_port()}"
    args = ("send", "--url", url, "--secret", SECRET, "--amount", "1.00")
    code, _, err = await run(*args, env=clean_env(), cwd=tmp_path)
    assert code == 4
    assert url.removeprefix("http://") in one_line(err) and "--url" in err
    code, _, err = await run("--debug", *args, env=clean_env(), cwd=tmp_path)
    assert code == 4 and "Traceback" in err and "ClientConnectorError" in err


@pytest.mark.parametrize(
    ("secret", "says"),
    [("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_"), ("whsec_not*base64!", "base64")],
)
async def test_a_bad_secret_is_one_line_and_exit_2(tmp_path: Path, secret: str, says: str) -> None:
    """A secret without `whsec_` or with bad base64 is refused before anything is sent, never echoed."""
    url = f"http://127.0.0.1:{free_port()}"
    code, _, err = await run(
        "send", "--url", url, "--secret", secret, "--amount", "1", env=clean_env(), cwd=tmp_path
    )
    assert code == 2 and "--secret" in one_line(err) and says in err and secret not in err


async def test_a_missing_or_non_json_file_is_one_line_and_exit_2(tmp_path: Path) -> None:
    """`send FILE`: a file that is not there, or not JSON, is named in one line."""
    (tmp_path / "notes.txt").write_text("deposit of 25.00 for INV-1001\n")
    for name, says in (("missing.json", "No such file"), ("notes.txt", "is not JSON")):
        code, _, err = await run("send", name, "--secret", SECRET, env=clean_env(), cwd=tmp_path)
        assert code == 2 and name in one_line(err) and says in err


async def test_send_without_an_amount_refuses(tmp_path: Path) -> None:
    """No --amount and no FILE: exit 2 before anything is posted (it used to send 100.00)."""
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens: an attempt to send would be exit 4
    code, _, err = await run(
        "send", "--url", url, "--secret", SECRET, "--invoice", "INV-1001", env=clean_env(), cwd=tmp_path
    )
    assert code == 2 and "--amount" in one_line(err)


async def test_help_says_what_payrelay_is_and_every_default(tmp_path: Path) -> None:
    """The top-level help describes payrelay, lists the commands and the exit codes; defaults are shown."""
    code, out, _ = await run("--help", env=clean_env(), cwd=tmp_path)
    assert code == 0 and "composition root" not in out and "Chargebee invoices" in out
    for command in ("receiver", "consumer", "ops", "sandbox", "dev", "check", "dlq", "send", "topology"):
        assert re.search(rf"^\s+{command}\s+\S", out, re.M), command
    assert "exit codes: 0 done" in out and "--debug" in out
    code, out, _ = await run("send", "--help", env=clean_env(), cwd=tmp_path)
    assert "(default: http://127.0.0.1:8080)" in " ".join(out.split())
    code, out, _ = await run("dlq", "list", "--help", env=clean_env(), cwd=tmp_path)
    assert "(default: 1000)" in out and "--wide" in out


def test_every_option_has_help() -> None:
    """Every option and argument of every command says what it is (its default is then shown)."""

    def parsers(parser: argparse.ArgumentParser) -> Any:
        yield parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for child in action.choices.values():
                    yield from parsers(child)

    missing = [
        f"{parser.prog} {action.dest}"
        for parser in parsers(build_parser())
        for action in parser._actions
        if not action.help and action.dest not in ("help", "command", "topology_command", "dlq_command")
    ]
    assert missing == []


@pytest.mark.parametrize("action", ["list", "replay", "purge"])
async def test_an_unknown_reason_is_refused_with_the_known_ones(tmp_path: Path, action: str) -> None:
    """`--reason bogus` would select nothing, silently: it is refused and the reasons are listed."""
    code, _, err = await run("dlq", action, "--reason", "bogus", env=clean_env(), cwd=tmp_path)
    assert code == 2 and "'bogus'" in err and "unmatched_invoice" in err and "delivery_limit_exceeded" in err


MARKUP_ID = "[link=https://evil.example]fix[/link]"
HIDDEN = "[conceal]look here[/conceal]"
ESCAPES = "\x1b[2J\x07\x1b]8;;https://evil.example\x1b\\click\x1b]8;;\x1b\\\u202e"


def assert_plain(shown: str) -> None:
    """The markup is printed as written and every planted control character escaped."""
    assert MARKUP_ID in shown and HIDDEN in shown, shown
    assert "\\x1b[2J" in shown and "\\x07" in shown and "\\u202e" in shown
    for raw in ("\x1b[2J", "\x07", "\x1b]8;", "\u202e"):
        assert raw not in shown


async def test_dead_letter_content_is_plain_text(
    prefix: str, tmp_path: Path, topology: None, amqp: aio_pika.abc.AbstractConnection
) -> None:
    """Markup and escape sequences from a message reach the terminal as visible text in list, show, audit."""
    event = new_deposit(f"INV-{ESCAPES}", "10.00") | {"id": MARKUP_ID}
    await put_dead_letter(amqp, prefix, event, error=f"{HIDDEN} {ESCAPES}")
    env = broker_env(prefix, tmp_path)
    code, out, err = await on_terminal("dlq", "list", "--wide", env=env, cwd=tmp_path, columns=100)
    assert code == 0, err
    assert_plain(out)
    code, out, err = await on_terminal("dlq", "show", MARKUP_ID, env=env, cwd=tmp_path, columns=100)
    assert code == 0, err
    assert MARKUP_ID in out and HIDDEN in out and "\x1b]8;" not in out and "\x07" not in out
    code, _, err = await run("dlq", "show", f"{MARKUP_ID}-gone", env=env, cwd=tmp_path)
    assert code == 1 and f"{MARKUP_ID}-gone" in err
    code, _, err = await run("dlq", "purge", "--invoice", f"INV-{ESCAPES}", "--yes", env=env, cwd=tmp_path)
    assert code == 0, err
    code, out, err = await on_terminal("dlq", "audit", env=env, cwd=tmp_path, columns=200)
    assert code == 0 and "\\x1b[2J" in out and "\x1b[2J" not in out and "\x07" not in out, err


async def test_list_fits_80_columns_and_wide_shows_everything(
    prefix: str, tmp_path: Path, topology: None, amqp: aio_pika.abc.AbstractConnection
) -> None:
    """At 80 columns every line fits and every id is whole on one; --wide has every column; JSON as it was."""
    chargebee = "Chargebee 400 param_wrong_value: amount : should be between 1 and the amount due (50000)"
    events = [new_deposit(f"INV-{1001 + i}", "25") for i in range(3)]
    for event in events:
        await put_dead_letter(amqp, prefix, event, reason="rejected_by_chargebee", error=chargebee)
    env = broker_env(prefix, tmp_path)
    code, out, err = await on_terminal("dlq", "list", env=env, cwd=tmp_path, columns=80)
    assert code == 0, err
    lines = SGR.sub("", out).splitlines()
    assert all(len(line) <= 80 for line in lines), lines
    rows = orjson.loads((await run("dlq", "list", "--json", env=env, cwd=tmp_path))[1])
    for row in rows:
        assert any(row["id"] in line for line in lines), (row["id"], lines)
    code, out, err = await on_terminal("dlq", "list", "--wide", env=env, cwd=tmp_path, columns=80)
    shown = SGR.sub("", out)
    for header in (
        "id",
        "reason",
        "amount",
        "invoice",
        "failed at",
        "attempts",
        "origin",
        "type",
        "source",
        "error",
    ):
        assert re.search(rf"(^|\s){header}(\s|$)", shown.splitlines()[0]), header
    assert "25.00 USD" in shown and "amount due (50000 = 500.00 USD)" in shown
    assert [(r["amount"], r["currency"]) for r in rows] == [("25", "USD")] * 3  # JSON keeps the event's own


async def test_the_replay_summary_says_how_many_matched(
    prefix: str, tmp_path: Path, topology: None, amqp: aio_pika.abc.AbstractConnection
) -> None:
    """ "replayed 1 of 1 matched (2 looked at)", not "1 of 2 dead letter(s)"."""
    events = [new_deposit(None, "10.00") for _ in range(2)]
    for event in events:
        await put_dead_letter(amqp, prefix, event)
    env = broker_env(prefix, tmp_path)
    code, out, err = await run("dlq", "replay", "--id", events[0]["id"], "--yes", env=env, cwd=tmp_path)
    assert code == 0, err
    assert re.search(r"^replayed 1 of 1 matched dead letter\(s\) \(\d+ looked at\)$", out, re.M), out


def test_the_dev_config_is_read_only_when_payrelay_config_is_unset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """./payrelay-dev.toml is read without PAYRELAY_CONFIG; PAYRELAY_CONFIG (even empty) wins."""
    (tmp_path / "payrelay-dev.toml").write_text('ledger_url = "sqlite:///dev.db"\namqp_prefix = "devx"\n')
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PAYRELAY_CONFIG", raising=False)
    monkeypatch.delenv("PAYRELAY_LEDGER_URL", raising=False)
    monkeypatch.setenv("PAYRELAY_AMQP_PREFIX", "fromenv")
    loaded = load_settings()
    assert (loaded.ledger.url, loaded.broker.prefix) == ("sqlite:///dev.db", "fromenv")
    monkeypatch.setenv("PAYRELAY_CONFIG", "")
    assert load_settings().ledger.url != "sqlite:///dev.db"


def _free_dev_port() -> int:
    def busy(port: int) -> bool:
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", port)) == 0

    port = free_port()
    while any(busy(p) for p in (port + 1, port + 10, port + 1022, port + 1023)):
        port = free_port()
    return port


@pytest.mark.timeout(120)
async def test_dev_shares_its_ledger_and_a_second_dev_is_one_line(
    prefix: str, tmp_path: Path, amqp: aio_pika.abc.AbstractConnection
) -> None:
    """`payrelay dev` writes payrelay-dev.toml: the CLI, run there with no PAYRELAY_*, sees its dead
    letters and audit; the banner prints the exports; the consumer logs major units; a second dev
    says its port is taken in one line."""
    port, log = _free_dev_port(), tmp_path / "dev.log"
    dev_env = clean_env(PAYRELAY_AMQP_URL=AMQP_URL, PAYRELAY_AMQP_PREFIX=prefix)
    with log.open("wb") as stderr:
        process = await asyncio.create_subprocess_exec(
            PAYRELAY, "dev", "--port", str(port), env=dev_env, cwd=tmp_path,
            stdout=asyncio.subprocess.PIPE, stderr=stderr,
        )  # fmt: skip
    try:
        assert process.stdout is not None
        banner = ""
        while f"PAYRELAY_AMQP_PREFIX={prefix}" not in banner:
            line = await asyncio.wait_for(process.stdout.readline(), 30)
            assert line, f"payrelay dev exited: {log.read_text()}"
            banner += line.decode()
        assert f"export PAYRELAY_LEDGER_URL=sqlite:///{tmp_path / 'payrelay-dev.db'}" in banner
        assert (tmp_path / "payrelay-dev.toml").is_file()
        cli = clean_env()  # what another terminal has: nothing about payrelay
        url = f"http://127.0.0.1:{port}"
        for invoice in ("INV-1001", "INV-9002"):  # INV-9002 is voided: a dead letter
            sent = ("send", "--url", url, "--secret", DEV_SECRET, "--invoice", invoice, "--amount", "25.00")
            code, out, _ = await run(*sent, env=cli, cwd=tmp_path)
            assert code == 0, out

        async def dead() -> bool:
            code, out, _ = await run("dlq", "list", "--json", env=cli, cwd=tmp_path)
            return code == 0 and len(orjson.loads(out)) == 1

        await until(dead, within=30, what="the dead letter in the dev setup")
        # The README's bank-file walkthrough: the demo camt.054 through `payrelay import`, as written.
        camt = str(demo.path("camt054"))
        importing = ("import", camt, "--source", "acme-bank")
        code, out, err = await run(*importing, "--dry-run", env=cli, cwd=tmp_path)
        assert code == 0 and "nothing was published" in out, err
        code, out, err = await run(*importing, env=cli, cwd=tmp_path)
        assert code == 0 and "published 3 event(s)" in out, err
        await until(lambda: _logged(log, "on INV-1006: 450.00 USD"), within=30, what="the file's payments")
        await until(lambda: _logged(log, "on INV-1001: 25.00 USD"), within=30, what="log")
        code, _, err = await run("dlq", "purge", "--all", "--yes", env=cli, cwd=tmp_path)
        assert code == 0, err
        code, out, _ = await run("dlq", "audit", "--json", env=cli, cwd=tmp_path)
        assert [r["action"] for r in orjson.loads(out)] == ["purge"]
        second = tmp_path / "second"
        second.mkdir()
        code, _, err = await run("dev", "--port", str(port), env=dev_env, cwd=second)
        assert code == 4 and str(port) in one_line(err) and "payrelay dev" in err
        assert not (second / "payrelay-dev.toml").exists()
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), 30)


async def _logged(log: Path, line: str) -> bool:
    return line in await asyncio.to_thread(log.read_text, errors="replace")


def test_the_documented_defaults_and_examples_match_the_code() -> None:
    """README: invoice_pattern's default is the code's and dev's; example invoices exist in the sandbox;
    the admin token the API examples use is set first; Python 3.11 or newer."""
    from service.chargebee_sandbox.resources import SEEDS

    readme = (ROOT / "README.md").read_text()
    assert f"| `invoice_pattern` | `{DEFAULT_INVOICE_PATTERN}` |" in readme
    dev = dev_settings("127.0.0.1", 8090, str(uuid.uuid4()))
    assert dev.sources["acme-bank"].invoice_pattern == DEFAULT_INVOICE_PATTERN
    seeded = {seed[0] for seed in SEEDS}
    sending = readme[readme.index("## Sending events") : readme.index("## RabbitMQ topology")]
    assert set(re.findall(r"INV-\d+", sending)) <= seeded
    examples = readme[readme.index("```sh", readme.index("#### JSON API")) :]
    assert examples.index("export PAYRELAY_ADMIN_TOKEN=") < examples.index("$PAYRELAY_ADMIN_TOKEN")
    assert "needs Python 3.11 or newer" in readme
    makefile = (ROOT / "Makefile").read_text()
    dev_target = makefile[makefile.index("\ndev:") :]
    assert dev_target.index("management plugin") < dev_target.index(".ci/services")


async def test_dev_listens_on_loopback_only(tmp_path: Path) -> None:
    """dev's secrets and admin token are published in the README: it refuses any other address."""
    code, _, err = await run("dev", "--host", "0.0.0.0", env=clean_env(), cwd=tmp_path)
    assert code == 2 and "loopback only" in err


async def test_the_sandbox_says_what_it_is_and_never_logs_its_api_key(tmp_path: Path) -> None:
    key = "sandbox-key-that-must-not-be-logged"
    process = await asyncio.create_subprocess_exec(
        PAYRELAY, "sandbox", "--port", str(free_port()), "--api-key", key, env=clean_env(), cwd=tmp_path,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert process.stderr is not None
        banner = (await asyncio.wait_for(process.stderr.readline(), 30)).decode()
    finally:
        process.terminate()
        await process.wait()
    assert "development stand-in, never for real money" in banner
    assert key not in banner


@pytest.mark.parametrize("command", [("consumer",), ("ops",), ("review", "list"), ("dlq", "list")])
async def test_a_ledger_that_cannot_be_opened_is_one_line_and_exit_4(
    prefix: str, tmp_path: Path, topology: None, command: tuple[str, ...]
) -> None:
    """A SQLite ledger in a directory that does not exist: every command that opens the ledger
    says so in one line, in the database's words, and what to check."""
    env = broker_env(prefix, tmp_path) | {
        "PAYRELAY_LEDGER_URL": f"sqlite:///{tmp_path / 'no-such-directory' / 'ledger.db'}",
        "PAYRELAY_CHARGEBEE_BASE_URL": f"http://127.0.0.1:{free_port()}",
        "PAYRELAY_CHARGEBEE_API_KEY": "test_key",
        "PAYRELAY_ADMIN_TOKEN": "an-admin-token-of-32-characters!",
    }
    args = (*command, "--port", str(free_port())) if command[0] in ("consumer", "ops") else command
    code, _, err = await run(*args, env=env, cwd=tmp_path)
    *logged, last = err.splitlines()
    assert all(" INFO payrelay." in entry for entry in logged), err  # the servers' start lines
    line = one_line(last + "\n")
    assert code == 4
    assert "the ledger cannot be used: unable to open database file" in line and "ledger_url" in line
