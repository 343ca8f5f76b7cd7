"""The gpuhost command line (typer + rich): one module per command group, each parsing its options
through the feature's own constructor and rendering the result. Only this package imports typer or rich.

A command's module is imported when that command runs (or when help lists it), so `gpuhost check`
does not pay for the EBS, storage and ComfyUI commands' imports.
"""

from __future__ import annotations

import importlib
from typing import Any

import typer
from typer.core import TyperGroup

from gpuhost import __version__
from gpuhost.cli.common import EXIT_CODES_HELP

# command name -> the module whose register(app) defines it, in the order help lists them
COMMANDS = {
    "check": "gpuhost.cli.check",
    "tune-ebs": "gpuhost.cli.ebs",
    "wait-ready": "gpuhost.cli.comfyui",
    "layers": "gpuhost.cli.comfyui",
    "models": "gpuhost.cli.models",
    "storage": "gpuhost.cli.storage",
    "zipapp": "gpuhost.cli.zipapp",
}


class CommandsOnDemand(TyperGroup):
    # the context type is typer's (its own click, or click itself, depending on the version)
    def list_commands(self, ctx: Any) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name not in COMMANDS:
            return None
        group = typer.Typer(rich_markup_mode=None)
        importlib.import_module(COMMANDS[cmd_name]).register(group)
        return typer.main.get_group(group).get_command(ctx, cmd_name)


app = typer.Typer(
    name="gpuhost",
    cls=CommandsOnDemand,
    help="Provision and verify GPU container hosts that serve ComfyUI. " + EXIT_CODES_HELP,
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
)


def version_callback(value: bool) -> None:
    if value:
        typer.echo(f"gpuhost {__version__}")
        raise typer.Exit(0)


@app.callback()
def main_callback(
    version: bool = typer.Option(
        False, "--version", callback=version_callback, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """gpuhost: BPF-safe GPU containers, fast storage, ComfyUI that is really ready."""


def main() -> None:
    app()


if __name__ == "__main__":
    main()
