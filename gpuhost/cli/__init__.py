"""The gpuhost command line (typer + rich): one module per command group, each parsing its options
through the feature's own constructor and rendering the result. Only this package imports typer or rich.

A command's module is imported when that command runs (or when help lists it), so `gpuhost check`
does not pay for the EBS, storage and ComfyUI commands' imports.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from typing import Any

import typer
from typer.core import TyperGroup

from gpuhost import __version__
from gpuhost.cli.common import EXIT_CODES_HELP, print_failure, usage_error_as_json, wants_json
from gpuhost.model import failure_of, for_humans

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


try:  # typer 0.28 carries its own copy of click
    from typer._click.exceptions import ClickException
except ImportError:  # pragma: no cover - typer versions that use click itself
    from click.exceptions import ClickException  # type: ignore[assignment,no-redef,unused-ignore]


class CommandsOnDemand(TyperGroup):
    # the context type is typer's (its own click, or click itself, depending on the version)
    def list_commands(self, ctx: Any) -> list[str]:
        return list(COMMANDS)

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **kwargs: Any,
    ) -> Any:
        """Under --json, typer's own usage errors (`--iops abc`) are the JSON error on stdout too. They
        echo what was typed (`unexpected extra argument (http://user:pw@host)`): shown without URL
        credentials or terminal controls, as every message is."""
        argv = list(sys.argv[1:] if args is None else args)
        if not standalone_mode:
            return super().main(argv, prog_name, complete_var, standalone_mode, windows_expand_args, **kwargs)
        try:
            code = super().main(argv, prog_name, complete_var, False, windows_expand_args, **kwargs)
        except ClickException as exc:
            if wants_json(argv):
                usage_error_as_json(exc)
            exc.message = for_humans(exc.message)
            exc.show()
            sys.exit(exc.exit_code)
        except typer.Abort:
            typer.echo("Aborted!", err=True)
            sys.exit(1)
        except Exception as exc:  # what no command turned into its own error: one line, never a traceback
            failure = failure_of(exc)
            print_failure(failure, wants_json(argv))
            sys.exit(failure.exit_code)
        sys.exit(code if isinstance(code, int) else 0)

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
