"""What every agent command shares: strict JSON on stdout, and the argparse subcommand built from the
command's table (gpuhost.options), as the CLI builds its typer command from the same table."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from typing import Any, Callable, Optional

from gpuhost.model import GpuhostError
from gpuhost.options import AGENT, Command, Option, Values
from gpuhost.redact import redact_all

Refused = Callable[[Mapping[str, Any], GpuhostError], int]


class AgentCommand:
    """One subcommand: its table, what runs it with the values the table made of the arguments, and what
    answers a value the table refused when the command has more to say than the usual error."""

    def __init__(self, table: Command, run: Callable[[Values], int], refused: Optional[Refused] = None) -> None:
        self.table = table
        self.run = run
        self.refused = refused

    def __call__(self, args: argparse.Namespace) -> int:
        typed = vars(args)
        try:
            values = self.table.values(typed, AGENT)
        except GpuhostError as exc:
            if self.refused is None:
                raise
            return self.refused(typed, exc)
        return self.run(values)


Handlers = dict[str, AgentCommand]


def print_json(payload: Any) -> None:
    """Strict JSON on stdout; no URL in it carries its credentials (gpuhost.redact)."""
    sys.stdout.write(json.dumps(redact_all(payload), indent=2, allow_nan=False) + "\n")


def _help(row: Option) -> str:
    text = row.help
    if row.kind != "flag" and row.default not in (None, "", False):
        text += f" Default: {row.default}."
    if row.example:
        text += f" Example: {row.example}"
    return text.replace("%", "%%")  # argparse formats help with %


def add_command(
    sub: Any, table: Command, run: Callable[[Values], int], handlers: Handlers, refused: Optional[Refused] = None
) -> None:
    """The subcommand `table.agent`: every row the agent has, in the table's order. Values reach argparse as
    typed (no `type=`, no `choices=`): the table converts and refuses them, in the CLI's words."""
    parser = sub.add_parser(table.agent, help=table.summary, description=table.summary, allow_abbrev=False)
    for row in table.rows(AGENT):
        if row.positional:
            parser.add_argument(row.key, metavar=row.shown_metavar, nargs="+" if row.repeat else None,
                                help=_help(row))
        elif row.kind == "flag":
            parser.add_argument(*row.flags, dest=row.key, action="store_true", help=_help(row))
        else:
            parser.add_argument(*row.flags, dest=row.key, default=row.default, metavar=row.shown_metavar,
                                action="append" if row.repeat else "store", required=row.required, help=_help(row))
    handlers[table.agent] = AgentCommand(table, run, refused)
