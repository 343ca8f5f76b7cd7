"""The gpuhost command line: parse, call, render. Logic lives in the modules it calls."""

from __future__ import annotations

import json
import sys
from typing import Any, NoReturn, Optional

import typer

from gpuhost import __version__
from gpuhost.model import ExitCode, SourceError, UsageError

EXIT_CODES_HELP = (
    "Exit codes: 0 no failing finding; 1 at least one failing finding (--strict: warnings too); "
    "2 bad usage or input; 3 a required source could not be read."
)

app = typer.Typer(
    name="gpuhost",
    help="Provision and verify GPU container hosts that serve ComfyUI. " + EXIT_CODES_HELP,
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
)


def emit_json(payload: Any) -> None:
    sys.stdout.write(json.dumps(payload, indent=2, sort_keys=False) + "\n")


def fail(code: ExitCode, message: str, remedy: str = "", as_json: bool = False) -> NoReturn:
    """Stop with one actionable message (and the same as JSON when asked)."""
    if as_json:
        emit_json({"error": message, "remedy": remedy, "exit_code": int(code)})
    else:
        typer.echo(f"gpuhost: error: {message}", err=True)
        if remedy:
            typer.echo(f"gpuhost: hint: {remedy}", err=True)
    raise typer.Exit(int(code))


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


@app.command(epilog=EXIT_CODES_HELP)
def check(
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON (schema gpuhost.check/v1)."),
    strict: bool = typer.Option(False, "--strict", help="Exit 1 on warnings too."),
    min_free_gb: float = typer.Option(
        20.0, "--min-free-gb", min=0, help="Fail when Docker's data-root has less free space than this (GiB)."
    ),
    run_as: Optional[str] = typer.Option(
        None,
        "--run-as",
        metavar="UID[:GID[,GID...]]",
        help="Also check that a container running as this identity can open /dev/nvidia*.",
    ),
    root: str = typer.Option("/", "--root", help="Read /proc, /sys and /etc under this directory (a captured tree)."),
    dev_root: str = typer.Option("/dev", "--dev-root", help="Where the /dev/nvidia* nodes are."),
    docker_host: Optional[str] = typer.Option(
        None, "--docker-host", help="Docker daemon address (default: $DOCKER_HOST or unix:///var/run/docker.sock)."
    ),
    daemon_json: str = typer.Option("/etc/docker/daemon.json", "--daemon-json", help="Docker's daemon.json."),
) -> None:
    """Check this host: GPU and driver, the BPF device-filter exposure, Docker and the nvidia runtime,
    CDI specs, device permissions and Docker's data-root.

    Examples:

      gpuhost check

      gpuhost check --json | jq '.findings[] | select(.severity=="fail")'

      gpuhost check --run-as 1000:1000 --min-free-gb 200
    """
    from gpuhost.check import run_check
    from gpuhost.facts import CollectOptions
    from gpuhost.rules import RuleOptions, RunAs

    try:
        identity = RunAs.parse(run_as) if run_as else None
    except ValueError as exc:
        fail(ExitCode.USAGE, str(exc), "Example: --run-as 1000:1000,44", as_json)
    try:
        report = run_check(
            CollectOptions(root=root, dev_root=dev_root, docker_host=docker_host, daemon_json=daemon_json),
            RuleOptions(min_free_gib=min_free_gb, run_as=identity),
            strict=strict,
        )
    except UsageError as exc:
        fail(ExitCode.USAGE, str(exc), exc.remedy, as_json)
    except SourceError as exc:
        fail(ExitCode.SOURCE_UNREADABLE, str(exc), exc.remedy, as_json)
    if as_json:
        emit_json(report.to_dict())
    else:
        from gpuhost.render import print_check

        print_check(report)
    raise typer.Exit(int(report.exit_code))


@app.command(epilog=EXIT_CODES_HELP)
def zipapp(
    output: str = typer.Option("dist/gpuhost-agent.pyz", "--output", "-o", help="Where to write the agent."),
    as_json: bool = typer.Option(False, "--json", help="Print path and sha256 as JSON."),
) -> None:
    """Build the gpuhost agent: one file that runs `check`, `facts` and the host-side commands on a
    managed host with its own python3 (>= 3.9), nothing installed. Reproducible: the same sources give
    the same bytes.

    Example:

      gpuhost zipapp -o /tmp/gpuhost-agent.pyz

      scp /tmp/gpuhost-agent.pyz host: && ssh host python3 gpuhost-agent.pyz check
    """
    from pathlib import Path

    from gpuhost.ship import build_zipapp

    try:
        path, digest = build_zipapp(Path(output))
    except (OSError, RuntimeError) as exc:
        fail(ExitCode.USAGE, str(exc), "Check that the output directory is writable.", as_json)
    if as_json:
        emit_json({"path": str(path), "sha256": digest, "size": path.stat().st_size})
    else:
        typer.echo(f"{path} ({path.stat().st_size} bytes, sha256 {digest})")


def _register_storage() -> None:
    from gpuhost.cli_storage import storage_app

    app.add_typer(storage_app, name="storage")


_register_storage()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
