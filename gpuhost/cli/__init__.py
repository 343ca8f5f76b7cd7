"""The gpuhost command line (typer + rich): one module per command group, each parsing its options
through the feature's own constructor and rendering the result. Only this package imports typer or rich."""

from __future__ import annotations

import typer

from gpuhost import __version__
from gpuhost.cli import check, comfyui, ebs, storage
from gpuhost.cli.common import EXIT_CODES_HELP

app = typer.Typer(
    name="gpuhost",
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


for group in (check, ebs, comfyui, storage):
    group.register(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
