"""`payrelay`: the composition root, where settings are loaded and every role is started.

The one package where `service` and `consumers` meet (the layering test knows). Each command is a
thin shell over an importable async function and returns an exit code. Ordinary mistakes (a
receiver that is down, a bad secret, a missing file, a port in use) are turned into one line
and an exit code in one place, `explain`; `--debug` shows the traceback as well.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import sys
import traceback
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, TypeVar

from service.cli.help import DESCRIPTION, EPILOG, Parser
from service.cli.mistakes import INTERRUPTED, ensure_free, explain
from service.settings import Settings, load_settings

log = logging.getLogger("payrelay.cli")

Command = Callable[[argparse.Namespace, Settings], int]
T = TypeVar("T")


def run_async(main: Coroutine[Any, Any, T], *, server: bool = False) -> T:
    """Run a command's coroutine on uvloop (what uvicorn's servers use too), asyncio's loop without it.

    `server`: a long-running process, whose garbage collection is tuned first (`tune_gc`).
    """
    if server:
        tune_gc()
    try:
        import uvloop
    except ImportError:  # uvloop is not built for every platform; asyncio's loop is slower, not wrong
        return asyncio.run(main)
    return uvloop.run(main)


# Collect the youngest generation after this many net allocations (CPython's default: 700).
GC_YOUNG_THRESHOLD = 50_000


def tune_gc() -> None:
    """Fewer, cheaper collections for a server: its request and message objects die young (a
    reference count frees them), yet CPython's default collects every 700 allocations and walks
    everything alive; what start-up made (modules, settings, the app) is moved out of reach
    (`gc.freeze`), so the older generations' collections no longer walk it either."""
    gc.collect()
    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, oldest)


def configure_logging(level: str = "INFO") -> None:
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    # aio-pika and aiormq log every reconnect attempt with a traceback; ours say it once, shorter.
    logging.getLogger("aiormq").setLevel(logging.ERROR)
    logging.getLogger("aio_pika").setLevel(logging.ERROR)


def _serve(app: object, host: str, port: int) -> int:
    import uvicorn

    ensure_free(host, {"its port": port})
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False, lifespan="on")  # type: ignore[arg-type]
    return 0


def _topology_refused(settings: Settings) -> bool:
    """Declare the topology once before serving; True (and one clear line) if RabbitMQ refuses it.

    A broker that is down is not a refusal: the server starts and answers 503 until it is back.
    """
    from service.broker import TopologyMismatch, TopologyMissing, declare_once

    topology = settings.broker.topology()
    declares = settings.broker.declare == "declare"
    url = settings.broker.url.get_secret_value()
    try:
        run_async(declare_once(url, topology, connect_timeout=3.0, declares=declares))
    except TopologyMismatch as exc:
        print(f"payrelay: {exc}", file=sys.stderr)
        return True
    except TopologyMissing as exc:  # the topology job has not run yet: serve 503 until it has
        log.warning("%s; serving, and checking again in the background", exc)
    except Exception as exc:  # unreachable now; the server's own supervisor keeps trying
        log.warning(
            "broker not reachable at start (%s); serving, and connecting in the background",
            type(exc).__name__,
        )
    return False


def cmd_receiver(args: argparse.Namespace, settings: Settings) -> int:
    from service.serving import serve_receiver, stop_on_signals

    if _topology_refused(settings):
        return 2
    if not settings.sources:
        log.warning("no [sources.*] configured: every ingest request will be a 404")
    metrics_port = settings.receiver.metrics_port
    ports = {"its port": args.port, **({"its metrics port": metrics_port} if metrics_port else {})}
    ensure_free(args.host, ports)
    log.info("receiver listening on http://%s:%d, metrics on port %d", args.host, args.port, metrics_port)

    async def main() -> None:
        stop = asyncio.Event()
        stop_on_signals(stop)
        await serve_receiver(settings, args.host, args.port, stop)

    run_async(main(), server=True)
    return 0


LOOPBACK = ("127.0.0.1", "localhost", "::1")


def cmd_ops(args: argparse.Namespace, settings: Settings) -> int:
    from service.cli.ops import serve_ops
    from service.serving import stop_on_signals

    if _topology_refused(settings):
        return 2
    ensure_free(args.host, {"its port": args.port})
    log.info("ops app on http://%s:%d", args.host, args.port)

    async def main() -> None:
        stop = asyncio.Event()
        stop_on_signals(stop)
        await serve_ops(settings, args.host, args.port, stop)

    run_async(main(), server=True)
    return 0


def _loopback(host: str) -> str:
    if host not in LOOPBACK:
        raise argparse.ArgumentTypeError(
            f"{host!r}: payrelay dev signs with published secrets and an admin token anyone can read, "
            f"so it listens on loopback only ({', '.join(LOOPBACK)}); run the roles on their own to serve "
            "a network"
        )
    return host


def _operator_name(text: str) -> str:
    from service.settings.parts import check_operator_name

    try:
        return check_operator_name(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def cmd_ops_token(args: argparse.Namespace, settings: Settings) -> int:
    """A new token for one operator, and the line of configuration that lets it in."""
    from service.ops.auth import new_token, token_digest

    token = new_token()
    print(f"{args.name}'s token (give it to them; it is not kept anywhere, so it is shown only now):")
    print(f"  {token}")
    print("Let it in with this line under [ops.operators] in the configuration file:")
    print(f'  "{args.name}" = "{token_digest(token)}"')
    print("(or in PAYRELAY_OPS_OPERATORS, a JSON object of name to digest), then restart `payrelay ops`.")
    return 0


def cmd_topology(args: argparse.Namespace, settings: Settings) -> int:
    from service.broker import TopologyMismatch, declare_once

    topology = settings.broker.topology()
    try:
        names = run_async(declare_once(settings.broker.url.get_secret_value(), topology))
    except TopologyMismatch as exc:
        print(f"payrelay: {exc}", file=sys.stderr)
        return 2
    for name in names:
        print(name)
    return 0


def cmd_send(args: argparse.Namespace, settings: Settings) -> int:
    from service.cli.send import run

    return run_async(run(args, settings))


def cmd_consumer(args: argparse.Namespace, settings: Settings) -> int:
    from consumers.app import run
    from service.broker import TopologyMismatch
    from service.serving import stop_on_signals

    async def main() -> None:
        stop = asyncio.Event()
        stop_on_signals(stop)
        await run(settings, stop, host=args.host, port=args.port)

    try:
        run_async(main(), server=True)
    except TopologyMismatch as exc:
        print(f"payrelay: {exc}", file=sys.stderr)
        return 2
    return 0


def cmd_sandbox(args: argparse.Namespace, settings: Settings) -> int:
    from service.chargebee_sandbox import SandboxConfig, create_app

    config = SandboxConfig(
        api_key=args.api_key,
        latency_ms=args.latency_ms,
        rate_limit=args.rate_limit,
        demo_book=args.demo_book,
    )
    log.info(
        "Chargebee sandbox on http://%s:%d: a development stand-in, never for real money; anyone who "
        "reaches it can change its API key, invoices and faults",
        args.host,
        args.port,
    )
    if args.host not in LOOPBACK:
        log.warning(
            "the sandbox listens beyond loopback (%s): keep it off networks you do not trust", args.host
        )
    return _serve(create_app(config), args.host, args.port)


def cmd_dev(args: argparse.Namespace, settings: Settings) -> int:
    from pathlib import Path

    from service.cli.dev import run_dev

    return run_async(run_dev(args.host, args.port, str(Path(args.ledger).resolve())))


def cmd_check(args: argparse.Namespace, settings: Settings) -> int:
    from service.cli.check import run_checks

    return run_async(run_checks(settings))


def cmd_dlq(args: argparse.Namespace, settings: Settings) -> int:
    from service.cli.dlq import run

    # Connection notices are noise in a terminal tool; warnings and errors still show.
    logging.getLogger("payrelay.broker").setLevel(logging.WARNING)
    return run_async(run(args, settings))


def cmd_review(args: argparse.Namespace, settings: Settings) -> int:
    from service.cli.review import run

    # An unreachable broker is said once, in the command's own line, not once a retry.
    logging.getLogger("payrelay.broker").setLevel(logging.ERROR)
    logging.getLogger("aiormq").setLevel(logging.CRITICAL)
    logging.getLogger("payrelay.review").setLevel(logging.WARNING)  # the decision's line says it
    return run_async(run(args, settings))


def cmd_import(args: argparse.Namespace, settings: Settings) -> int:
    from service.cli.bank_import import run

    logging.getLogger("payrelay.broker").setLevel(logging.WARNING)
    return run_async(run(args, settings))


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="payrelay", description=DESCRIPTION, epilog=EPILOG)
    parser.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="log lines shown"
    )
    parser.add_argument(
        "--debug", action="store_true", help="on an error, show its traceback as well as the one line"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    receiver = sub.add_parser("receiver", help="the signed CloudEvents receiver (HTTP)")
    receiver.add_argument("--host", default="127.0.0.1", help="the address to listen on")
    receiver.add_argument("--port", type=int, default=8080, help="the port to listen on")
    receiver.set_defaults(run=cmd_receiver)

    ops = sub.add_parser("ops", help="the ops web app: dashboard, dead-letter browser, JSON API")
    ops.add_argument("--host", default="127.0.0.1", help="the address to listen on")
    ops.add_argument("--port", type=int, default=8081, help="the port to listen on")
    ops.set_defaults(run=cmd_ops)

    ops_token = sub.add_parser(
        "ops-token", help="make an operator's token for the ops app, and the configuration line for it"
    )
    ops_token.add_argument("name", type=_operator_name, help="the operator's name, as the audit records it")
    ops_token.set_defaults(run=cmd_ops_token)

    topology = sub.add_parser("topology", help="RabbitMQ topology")
    topology_sub = topology.add_subparsers(dest="topology_command", required=True, metavar="ACTION")
    declare = topology_sub.add_parser("declare", help="declare every exchange and queue, idempotently")
    declare.set_defaults(run=cmd_topology)

    consumer = sub.add_parser("consumer", help="the record-payment consumer (health and metrics on --port)")
    consumer.add_argument("--host", default="127.0.0.1", help="where /healthz, /readyz and /metrics listen")
    consumer.add_argument("--port", type=int, default=None, help="default: PAYRELAY_METRICS_PORT (9102)")
    consumer.set_defaults(run=cmd_consumer)

    sandbox = sub.add_parser(
        "sandbox", help="a local Chargebee stand-in (invoices, errors, idempotency, faults)"
    )
    sandbox.add_argument("--host", default="127.0.0.1", help="the address to listen on")
    sandbox.add_argument("--port", type=int, default=8090, help="the port to listen on")
    sandbox.add_argument("--api-key", default="test_sandbox_key", help="the API key it accepts")
    sandbox.add_argument("--latency-ms", type=float, default=0.0, help="added to every answer")
    sandbox.add_argument("--rate-limit", type=int, default=0, help="requests per minute, 0 = unlimited")
    sandbox.add_argument(
        "--demo-book",
        action="store_true",
        help="also create cash application's demo payers (Globex, Initech, Umbrella, Hooli) and invoices",
    )
    sandbox.set_defaults(run=cmd_sandbox)

    dev = sub.add_parser("dev", help="everything at once against the sandbox and SQLite")
    dev.add_argument(
        "--host",
        default="127.0.0.1",
        type=_loopback,
        help="the loopback address everything listens on (dev's secrets and token are published)",
    )
    dev.add_argument(
        "--port",
        type=int,
        default=8080,
        help="the receiver's port; ops +1, sandbox +10, consumer +1022, receiver metrics +1023",
    )
    dev.add_argument(
        "--ledger",
        default="payrelay-dev.db",
        help="the SQLite ledger file; payrelay-dev.toml, for the CLI, is written beside it",
    )
    dev.set_defaults(run=cmd_dev)

    check = sub.add_parser(
        "check", help="validate configuration and reach the broker, the ledger and Chargebee"
    )
    check.set_defaults(run=cmd_check)

    from service.cli.dlq import add_parser as add_dlq_parser

    add_dlq_parser(sub)
    sub.choices["dlq"].set_defaults(run=cmd_dlq)

    from service.cli.review import add_parser as add_review_parser

    add_review_parser(sub)
    sub.choices["review"].set_defaults(run=cmd_review)

    from service.cli.bank_import import add_parser as add_import_parser

    add_import_parser(sub).set_defaults(run=cmd_import)

    from service.cli.send import add_parser as add_send_parser

    add_send_parser(sub).set_defaults(run=cmd_send)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level)
    run: Command = args.run
    try:
        return run(args, load_settings())
    except KeyboardInterrupt:
        return INTERRUPTED
    except Exception as exc:
        explained = explain(exc, args)
        if explained is None:
            raise
        if args.debug:
            traceback.print_exception(exc)
        message, code = explained
        print(f"payrelay: {message}", file=sys.stderr)
        return code


if __name__ == "__main__":
    sys.exit(main())
