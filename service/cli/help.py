"""What `payrelay --help` says: what payrelay is, its exit codes, and every option with its default."""

from __future__ import annotations

import argparse
from typing import Any

DESCRIPTION = """\
payrelay records money that arrives outside the card rails (bank deposits and scanned checks)
as payments on Chargebee invoices, exactly once. Banks post signed CloudEvents to the receiver;
the consumer records each with Chargebee; what cannot be recorded waits as a dead letter for
an operator (`payrelay dlq`, the ops app), and a payment that names no invoice payrelay can
match with confidence waits in review for a person (`payrelay review`, the ops app).

To try it: `payrelay dev` runs everything against a local Chargebee sandbox, and
`payrelay send` posts a signed test event to it."""

EPILOG = """\
configuration: the TOML file named by PAYRELAY_CONFIG (when it is not set: ./payrelay-dev.toml
if `payrelay dev` wrote one here), overridden by PAYRELAY_* variables; see README.md.

exit codes: 0 done; 1 it ran, and something failed (a request was not accepted, a check failed,
no such dead letter or review item, a review decision refused); 2 bad usage, configuration or
input (the line says which); 3 refused (no confirmation, no selector); 4 something payrelay
needs is unreachable or taken (the receiver, the broker, the ledger, Chargebee, a port);
130 interrupted.

`payrelay COMMAND --help` shows a command's options; `--debug` shows a failure's traceback."""


class Help(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Descriptions as written; every option's default after its help, unless there is none to say."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default in (None, False, [], argparse.SUPPRESS) or "%(default)" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
    """An ArgumentParser with `Help`; its subcommands' parsers are `Parser`s too (argparse's default)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", Help)
        super().__init__(*args, **kwargs)
