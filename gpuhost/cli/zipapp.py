"""`gpuhost zipapp`: build the agent that roles and fleet checks run on managed hosts."""

from __future__ import annotations

import typer

from gpuhost.cli.common import EXIT_CODES_HELP, docs_epilog, emit_json, errors_to_exit
from gpuhost.cli.table import typer_command
from gpuhost.model import UsageError
from gpuhost.options import Values
from gpuhost.ship import ZIPAPP, build_zipapp


def zipapp(values: Values) -> None:
    """Build the gpuhost agent: one file that runs `check`, `facts` and the host-side commands on a
    managed host with its own python3 (>= 3.9), nothing installed. Reproducible: the same sources give
    the same bytes.

    Example:

      gpuhost zipapp -o /tmp/gpuhost-agent.pyz

      scp /tmp/gpuhost-agent.pyz host: && ssh host python3 gpuhost-agent.pyz check
    """
    as_json = values.json
    with errors_to_exit(as_json):
        try:
            path, digest = build_zipapp(values.output)
        except RuntimeError as exc:  # a module the agent carries is not importable here
            raise UsageError(str(exc), "Install gpuhost with its dependencies.") from exc
    if as_json:
        emit_json({"path": str(path), "sha256": digest, "size": path.stat().st_size})
    else:
        typer.echo(f"{path} ({path.stat().st_size} bytes, sha256 {digest})")


def register(app: typer.Typer) -> None:
    app.command("zipapp", epilog=docs_epilog("zipapp", EXIT_CODES_HELP))(typer_command(ZIPAPP, zipapp))
