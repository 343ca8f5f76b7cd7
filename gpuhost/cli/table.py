"""The typer command of a command's table (gpuhost.options), as the agent builds its argparse subcommand
from the same table.

typer reads a command's options from its function's signature: the function built here has one keyword
parameter per row the CLI has (a typer.Option or typer.Argument with the row's names, help, metavar and
default), and hands what was typed, as text, to the table, whose values reach the command."""

from __future__ import annotations

import inspect
from typing import Any, Callable, Optional

import typer

from gpuhost.cli.common import errors_to_exit
from gpuhost.options import CLI, Command, Option, Values


def option_help(row: Option, reference: bool) -> str:
    """The row's help as typer shows it; a ReferenceCommand (gpuhost.cli.help) reads the type in front
    and the example after it."""
    text = f"({row.type_name}) {row.help}" if reference else row.help
    return f"{text} Example: {row.example}" if row.example else text


def _parameter(row: Option, reference: bool) -> tuple[Any, Any]:
    """(typer's parameter, the annotation typer reads its click type from) of one row."""
    help_text = option_help(row, reference)
    if row.positional:
        metavar = row.shown_metavar + ("..." if row.repeat else "")
        default = ... if row.required else row.default
        annotation: Any = list[str] if row.repeat else (str if row.required else Optional[str])
        return typer.Argument(default, metavar=metavar, help=help_text), annotation
    if row.kind == "flag":
        return typer.Option(bool(row.default), *row.flags, help=help_text), bool
    if row.repeat:
        return typer.Option(None, *row.flags, metavar=row.shown_metavar, help=help_text), Optional[list[str]]
    default = ... if row.required else row.default
    return (typer.Option(default, *row.flags, metavar=row.shown_metavar, help=help_text),
            str if row.required else Optional[str])


def typer_command(table: Command, run: Callable[[Values], None], reference: bool = False) -> Callable[..., None]:
    """The function typer makes `table.cli` of: its help is `run`'s docstring, its options the table's CLI
    rows; a value the table refuses stops it with the usual error (JSON under --json or --format json)."""

    def command(**typed: Any) -> None:
        with errors_to_exit(typed.get("json") is True or typed.get("format") == "json"):
            values = table.values(typed, CLI)
        run(values)

    parameters = []
    for row in table.rows(CLI):
        default, annotation = _parameter(row, reference)
        parameters.append(inspect.Parameter(row.key, inspect.Parameter.KEYWORD_ONLY, default=default,
                                            annotation=annotation))
    command.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    command.__name__ = run.__name__
    command.__qualname__ = run.__qualname__
    command.__doc__ = run.__doc__
    command.gpuhost_table = table  # type: ignore[attr-defined]
    return command
