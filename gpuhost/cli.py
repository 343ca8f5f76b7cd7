"""The gpuhost command line: parse, call, render. Logic lives in the modules it calls."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any, NoReturn, Optional

import typer

from gpuhost import __version__
from gpuhost.clihelp import ReferenceCommand
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
    workflow: Optional[str] = typer.Option(
        None,
        "--workflow",
        metavar="FILE",
        help="Also validate this API-format workflow against the ComfyUI server's /object_info (nothing is "
        "queued): unknown nodes, model files the server lacks, bad values, missing inputs, broken links.",
    ),
    comfyui_url: Optional[str] = typer.Option(
        None,
        "--comfyui-url",
        metavar="URL",
        help="With --workflow: the ComfyUI server (default: the ready ComfyUI container check finds).",
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

      gpuhost check --workflow sd15-txt2img.api.json
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
    if (hosts or inventory) and (workflow or comfyui_url):
        fail(ExitCode.USAGE, "--workflow checks against this host's ComfyUI: not with --host/--inventory", "", as_json)
    if comfyui_url and not workflow:
        fail(ExitCode.USAGE, "--comfyui-url goes with --workflow FILE", "", as_json)
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
    workflow_report = None
    try:
        if workflow:
            from gpuhost.workflow import load_workflow

            load_workflow(workflow)  # bad input fails before anything is collected
        report = run_check(collect, rules, strict=strict)
        if workflow:
            from gpuhost.check import add_findings
            from gpuhost.cli_comfyui import ready_comfyui_url
            from gpuhost.workflow import check_workflow, workflow_findings

            workflow_report = check_workflow(workflow, comfyui_url or ready_comfyui_url(report))
            add_findings(report, workflow_findings(workflow_report), strict)
    except UsageError as exc:
        fail(ExitCode.USAGE, str(exc), exc.remedy, as_json)
    except SourceError as exc:
        fail(ExitCode.SOURCE_UNREADABLE, str(exc), exc.remedy, as_json)
    if as_json:
        payload = report.to_dict()
        if workflow_report is not None:
            payload["workflow"] = workflow_report.to_dict()
        emit_json(payload)
    else:
        from gpuhost.render import print_check

        print_check(report)
        if workflow_report is not None:
            from gpuhost.comfyui.render import print_workflow

            print_workflow(workflow_report)
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


TUNE_EBS_EXIT_CODES = (
    "Exit codes: 0 the volume is at the target (changed now, already there, or --dry-run planned it); "
    "1 the change cannot be made now (a modification is running, AWS's modification limit, throttling, "
    "--wait timed out or the modification failed, --when-image-present not yet true); "
    "2 bad usage or input, nothing was changed (invalid value, wrong volume type, unknown volume, no region); "
    "3 AWS could not be reached or refused access (credentials missing or expired, UnauthorizedOperation, "
    "endpoint or instance metadata unreachable)."
)


@app.command("tune-ebs", epilog=TUNE_EBS_EXIT_CODES, cls=ReferenceCommand)
def tune_ebs(
    volume_id: Optional[str] = typer.Option(
        None,
        "--volume-id",
        metavar="VOLUME_ID",
        help="(string) The EBS volume to tune. Default: this instance's volume chosen by --target. "
        "Example: --volume-id vol-0123456789abcdef0",
    ),
    target: str = typer.Option(
        "root",
        "--target",
        metavar="root|data-root",
        help="(string) Without --volume-id, which volume of this instance: `root` (the root device, from IMDSv2 "
        "and describe-instances) or `data-root` (the volume under Docker's data-root, by its NVMe serial). "
        "Example: --target data-root",
    ),
    instance_id: Optional[str] = typer.Option(
        None,
        "--instance-id",
        metavar="INSTANCE_ID",
        help="(string) Find the root volume of this instance instead of the one the command runs on. "
        "Example: --instance-id i-0123456789abcdef0 --region us-east-1",
    ),
    data_root: Optional[str] = typer.Option(
        None,
        "--data-root",
        metavar="PATH",
        help="(path) With --target data-root: the directory to look under instead of asking Docker. "
        "Example: --data-root /var/lib/docker",
    ),
    region: Optional[str] = typer.Option(
        None,
        "--region",
        metavar="REGION",
        help="(string) The AWS region. Default: AWS_REGION, the profile's region, then the instance's own. "
        "Example: --region us-east-1",
    ),
    profile: Optional[str] = typer.Option(
        None,
        "--profile",
        metavar="PROFILE",
        help="(string) A named profile from ~/.aws/config; the usual boto3 credential chain otherwise. "
        "Example: --profile gpu-admin",
    ),
    endpoint_url: Optional[str] = typer.Option(
        None,
        "--endpoint-url",
        metavar="URL",
        help="(string) Send EC2 API calls to this URL (a VPC endpoint, a test server). "
        "Example: --endpoint-url https://vpce-0abc-1234.ec2.us-east-1.vpce.amazonaws.com",
    ),
    throughput: Optional[int] = typer.Option(
        None,
        "--throughput",
        metavar="MiB/s",
        help="(integer) Target gp3 throughput, 125-2000 MiB/s, at most 0.25 MiB/s per provisioned IOPS. "
        "Example: --throughput 1000",
    ),
    iops: Optional[int] = typer.Option(
        None,
        "--iops",
        metavar="IOPS",
        help="(integer) Target gp3 IOPS, 3000-80000, at most 500 per GiB of volume size. Example: --iops 9000",
    ),
    preset: Optional[str] = typer.Option(
        None,
        "--preset",
        metavar="baseline|pull|max",
        help="(string) Named target: `baseline` 3000 IOPS / 125 MiB/s (gp3's free level), `pull` 9000 IOPS / "
        "1000 MiB/s (for a big image pull), `max` the most this volume's size allows. Example: --preset pull",
    ),
    for_image_size: Optional[str] = typer.Option(
        None,
        "--for-image-size",
        metavar="SIZE",
        help="(string) Image size for the unpack-time prediction (GB = 10^9, GiB = 2^30); with --within, "
        "choose the cheapest target that unpacks it in time. Example: --for-image-size 140GB",
    ),
    within: Optional[str] = typer.Option(
        None,
        "--within",
        metavar="DURATION",
        help="(string) With --for-image-size: the unpack time to meet (s, m, h). Values already higher are kept. "
        "Example: --for-image-size 140GB --within 5m",
    ),
    to_gp3: bool = typer.Option(
        False,
        "--to-gp3",
        help="(boolean) Allow converting a gp2, io1, io2, st1 or sc1 volume to gp3 (live; it is one "
        "modification). Example: --to-gp3 --preset baseline",
    ),
    dry_run: bool = typer.Option(
        False,
        "--dry-run",
        help="(boolean) Print the plan (current -> target, cost, unpack time, modification limit) and change "
        "nothing. Example: --preset pull --dry-run",
    ),
    wait: bool = typer.Option(
        False,
        "--wait",
        help="(boolean) After requesting the change, follow it with a progress bar until AWS reports "
        "`optimizing` (the new performance is being applied). Example: --preset pull --wait",
    ),
    wait_until: Optional[str] = typer.Option(
        None,
        "--wait-until",
        metavar="optimizing|completed",
        help="(string) Implies --wait; `completed` waits for the whole modification (also what AWS needs before "
        "the next one). Example: --wait-until completed",
    ),
    timeout: str = typer.Option(
        "30m",
        "--timeout",
        metavar="DURATION",
        help="(string) How long --wait follows the modification before giving up (exit 1; the modification goes "
        "on). Example: --wait --timeout 10m",
    ),
    poll_interval: float = typer.Option(
        15.0,
        "--poll-interval",
        metavar="SECONDS",
        help="(number) Seconds between two describe-volumes-modifications calls while waiting. "
        "Example: --wait --poll-interval 5",
    ),
    when_image_present: Optional[str] = typer.Option(
        None,
        "--when-image-present",
        metavar="IMAGE",
        help="(string) Act only once Docker on this host has this image; until then change nothing and exit 1 "
        "(used by the scheduled revert). Example: --preset baseline --when-image-present comfyui:0.3.64",
    ),
    as_json: bool = typer.Option(
        False,
        "--json",
        help="(boolean) Print the result as JSON (schema gpuhost.tune-ebs/v1). Example: --preset pull --json",
    ),
) -> None:
    """Raise (or lower) an EBS gp3 volume's IOPS and throughput live, priced and predicted, within AWS's limits.

    Without --volume-id it tunes the instance's own root volume (or, with --target data-root, the volume
    under Docker's data-root), found through IMDSv2 and describe-instances. Everything that can be checked
    without AWS is checked before the first call, and no ModifyVolume call is made when the volume is already
    at the target.

    The plan shows current -> target, the monthly cost delta (per-region list prices), the predicted unpack
    time of an image before and after (140 GB unless --for-image-size says otherwise), and where the volume
    stands with AWS's modification rule.

    Limits (botocore 1.44.8 EC2 model): gp3 1-65,536 GiB, 3,000-80,000 IOPS and 125-2,000 MiB/s, with at most
    0.25 MiB/s per provisioned IOPS and 500 IOPS per GiB.

    Modification rule: AWS accepts the next modification of a volume once the previous one is completed, and
    at most four in any 24 hours (earlier AWS rules asked for six hours between two; that is the "six-hour
    cooldown"). Reverting to baseline after a pull is one more modification: plan for it.

    Examples:
    To see what raising this instance's root volume for a pull costs and gains, changing nothing:
      gpuhost tune-ebs --preset pull --dry-run

    To raise it and follow the modification until the new performance is being applied:
      gpuhost tune-ebs --preset pull --wait

    To set explicit values on a named volume:
      gpuhost tune-ebs --volume-id vol-0123456789abcdef0 --region us-east-1 --iops 6000 --throughput 500

    To buy just enough throughput to unpack a 140 GB image in 5 minutes, as JSON:
      gpuhost tune-ebs --target data-root --for-image-size 140GB --within 5m --json

    To convert a gp2 volume to gp3 at the baseline:
      gpuhost tune-ebs --volume-id vol-0123456789abcdef0 --to-gp3 --preset baseline

    To go back to the baseline once Docker has the image (exit 1 until then):
      gpuhost tune-ebs --preset baseline --when-image-present comfyui:0.3.64

    Output:
    With --json, one object (schema gpuhost.tune-ebs/v1):
      action          modified | none (already at target) | planned (--dry-run) | blocked | waiting
      changed         true only when a modification was requested now
      would_change    true when the target differs from the volume's current settings
      selection       how the volume was found (volume-id, root, data-root) and its instance
      plan            current and target (volume_type, size_gib, iops, throughput_mibs), changes,
                      cost (current_month, target_month, delta_month, delta_day, price_region, source),
                      unpack (image_bytes, before_s, after_s), modification_gate (allowed, reason,
                      modifications_in_window, next_change_at), revert, notes
      modification    the modification AWS started (state, progress, start_time)
      wait            with --wait: state reached, waited_s, timed_out, failed
      exit_code       as below; errors print {"error", "remedy", "exit_code"} instead
    """
    from gpuhost.ebs import aws
    from gpuhost.ebs.plan import Settings, parse_duration, parse_size
    from gpuhost.ebs.tune import TuneOptions, run

    try:
        settings = Settings(
            preset=preset,
            iops=iops,
            throughput_mibs=throughput,
            image_bytes=parse_size(for_image_size) if for_image_size is not None else None,
            within_s=parse_duration(within) if within is not None else None,
            to_gp3=to_gp3,
        )
        options = TuneOptions(
            settings=settings,
            volume_id=volume_id,
            target=target,
            instance_id=instance_id,
            data_root=data_root,
            aws=aws.AwsOptions(region=region, profile=profile, endpoint_url=endpoint_url),
            dry_run=dry_run,
            wait=wait or wait_until is not None,
            wait_until=wait_until or "optimizing",
            timeout_s=parse_duration(timeout),
            poll_s=poll_interval,
            when_image_present=when_image_present,
        )
        if options.wait and not as_json:
            from gpuhost.ebs.render import WaitProgress

            with WaitProgress() as progress:
                result = run(options, on_progress=progress.update)
        else:
            result = run(options)
    except UsageError as exc:
        fail(ExitCode.USAGE, str(exc), exc.remedy, as_json)
    except aws.AwsError as exc:
        fail(exc.exit_code, str(exc), exc.remedy, as_json)
    if as_json:
        emit_json(result.to_dict())
    else:
        from gpuhost.ebs.render import print_result

        print_result(result)
    raise typer.Exit(int(result.exit_code))

def _register_storage() -> None:
    from gpuhost.cli_storage import storage_app

    app.add_typer(storage_app, name="storage")


_register_storage()


def _register_comfyui() -> None:
    from gpuhost.cli_comfyui import register

    register(app)


_register_comfyui()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
