"""The gpuhost command line: parse, call, render. Logic lives in the modules it calls."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any, NoReturn, Optional

import typer

from gpuhost import __version__
from gpuhost.model import ExitCode, SourceError, UsageError

if TYPE_CHECKING:
    from gpuhost.fleet import FleetOptions

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
    hosts: Optional[list[str]] = typer.Option(
        None,
        "--host",
        "-H",
        metavar="[USER@]HOST[:PORT]",
        help="Check this host over SSH instead of this machine (repeat for a fleet).",
    ),
    inventory: Optional[str] = typer.Option(
        None, "--inventory", "-i", help="Check every host of this Ansible inventory (file, directory, aws_ec2)."
    ),
    limit: Optional[str] = typer.Option(
        None, "--limit", "-l", metavar="PATTERN", help="Only the inventory hosts matching this Ansible pattern."
    ),
    forks: int = typer.Option(5, "--forks", "-f", min=1, max=1000, help="Hosts checked at the same time."),
    connect_timeout: float = typer.Option(
        10.0, "--connect-timeout", min=0.1, help="Seconds to wait for a host's SSH connection."
    ),
    timeout: float = typer.Option(60.0, "--timeout", min=0.1, help="Seconds one host may take in all."),
    ssh_config: Optional[str] = typer.Option(
        None, "--ssh-config", "-F", help="Read this ssh config instead of ~/.ssh/config and /etc/ssh/ssh_config."
    ),
    accept_new_host_keys: bool = typer.Option(
        False,
        "--accept-new-host-keys",
        help="Trust and record the key of a host not yet in known_hosts (a changed key is always refused).",
    ),
    become: bool = typer.Option(
        False, "--become", "-b", help="With --host/--inventory: run the agent as root with `sudo -n`."
    ),
) -> None:
    """Check this host: GPU and driver, the BPF device-filter exposure, Docker and the nvidia runtime,
    CDI specs, device permissions and Docker's data-root. With --host or --inventory, check those hosts
    over SSH instead (nothing installed there: the agent is copied for the run and removed; --root,
    --dev-root, --docker-host and --daemon-json then apply on each host); a host that cannot be reached
    or checked is a `fleet.*` finding of that host; exit 1 when any host fails.

    Examples:

      gpuhost check

      gpuhost check --json | jq '.findings[] | select(.severity=="fail")'

      gpuhost check --run-as 1000:1000 --min-free-gb 200

      gpuhost check --host ubuntu@gpu-01 --host gpu-02:2222 --become

      gpuhost check -i inventories/prod --limit 'gpu_hosts:!gpu-07' --forks 20 --json
    """
    from gpuhost.check import run_check
    from gpuhost.facts import CollectOptions
    from gpuhost.rules import RuleOptions, RunAs

    try:
        identity = RunAs.parse(run_as) if run_as else None
    except ValueError as exc:
        fail(ExitCode.USAGE, str(exc), "Example: --run-as 1000:1000,44", as_json)
    collect = CollectOptions(root=root, dev_root=dev_root, docker_host=docker_host, daemon_json=daemon_json)
    rules = RuleOptions(min_free_gib=min_free_gb, run_as=identity)
    if hosts or inventory or limit:
        from gpuhost.fleet import FleetOptions

        fleet_options = FleetOptions(
            forks=forks,
            connect_timeout=connect_timeout,
            timeout=timeout,
            accept_new_host_keys=accept_new_host_keys,
            become=become,
            ssh_config=ssh_config,
            collect=collect,
            rules=rules,
            strict=strict,
        )
        check_fleet(hosts or [], inventory, limit, fleet_options, as_json)
    try:
        report = run_check(collect, rules, strict=strict)
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


def check_fleet(
    hosts: list[str], inventory: Optional[str], limit: Optional[str], options: FleetOptions, as_json: bool
) -> None:
    """`gpuhost check --host/--inventory`: every target is parsed and read before any host is contacted."""
    from gpuhost.fleet import parse_host_spec, run_fleet
    from gpuhost.fleet.inventory import load_inventory

    if limit and not inventory:
        fail(ExitCode.USAGE, "--limit selects hosts of an inventory: pass --inventory too", "", as_json)
    try:
        targets = [parse_host_spec(spec) for spec in hosts]
        if inventory:
            targets += load_inventory(inventory, limit)
        report = run_fleet(targets, options)
    except UsageError as exc:
        fail(ExitCode.USAGE, str(exc), exc.remedy, as_json)
    if as_json:
        emit_json(report.to_dict())
    else:
        from gpuhost.render import print_fleet

        print_fleet(report)
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


def main() -> None:
    app()


if __name__ == "__main__":
    main()
