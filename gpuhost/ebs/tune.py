"""tune-ebs from start to end: validate, find the volume, plan, modify (or not), follow.

The CLI (`gpuhost tune-ebs`) and the agent (`gpuhost-agent tune-ebs`) both call `run`.
Everything that can be checked without AWS is checked before the first AWS request.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Callable

from gpuhost.ebs import aws, imds
from gpuhost.ebs.plan import (
    Plan,
    Settings,
    check_endpoint_url,
    check_instance_id,
    check_region,
    check_volume_id,
    make_plan,
)
from gpuhost.ebs.plan import validate_settings as _validate_settings
from gpuhost.ebs.target import (
    TARGETS,
    LocalDisk,
    Selection,
    data_root_by_device,
    data_root_selection,
    docker_data_root,
    local_disk,
    root_volume,
)
from gpuhost.ebs.volume import Modification, Volume, latest
from gpuhost.ebs.wait import WAIT_UNTIL, Progress, WaitOutcome, wait_for_modification
from gpuhost.engine import (
    EngineBadAnswer,
    EngineClient,
    EngineError,
    EnginePermissionDenied,
    EngineUnavailable,
    docker_address,
    quote_ref,
)
from gpuhost.model import ExitCode, SourceError, UsageError, for_humans
from gpuhost.options import Command, Option, json_flag
from gpuhost.refs import check_image_reference
from gpuhost.units import parse_duration, parse_size, positive_number

SCHEMA = "gpuhost.tune-ebs/v1"
DEFAULT_TIMEOUT = "30m"
DEFAULT_POLL_INTERVAL = 15.0
MAX_POLL_INTERVAL = 3600.0


@dataclass
class TuneOptions:
    settings: Settings
    volume_id: str | None = None
    target: str = "root"
    instance_id: str | None = None
    data_root: str | None = None
    aws: aws.AwsOptions = field(default_factory=aws.AwsOptions)
    dry_run: bool = False
    wait: bool = False
    wait_until: str = "optimizing"
    timeout_s: float = 1800.0
    poll_s: float = 15.0
    when_image_present: str | None = None
    root: str = "/"
    docker_host: str | None = None

    @classmethod
    def parse(
        cls,
        *,
        volume_id: str | None = None,
        target: str = "root",
        instance_id: str | None = None,
        data_root: str | None = None,
        region: str | None = None,
        profile: str | None = None,
        endpoint_url: str | None = None,
        throughput: int | None = None,
        iops: int | None = None,
        preset: str | None = None,
        for_image_size: str | None = None,
        within: str | None = None,
        to_gp3: bool = False,
        dry_run: bool = False,
        wait: bool = False,
        wait_until: str | None = None,
        timeout: str = DEFAULT_TIMEOUT,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        when_image_present: str | None = None,
    ) -> TuneOptions:
        """The options as typed (CLI or agent), read and validated before any AWS call."""
        options = cls(
            settings=Settings(
                preset=preset,
                iops=iops,
                throughput_mibs=throughput,
                image_bytes=parse_size(for_image_size, "--for-image-size") if for_image_size is not None else None,
                within_s=parse_duration(within, "--within") if within is not None else None,
                to_gp3=to_gp3,
            ),
            volume_id=volume_id,
            target=target,
            instance_id=instance_id,
            data_root=data_root,
            aws=aws.AwsOptions(region=region, profile=profile, endpoint_url=endpoint_url),
            dry_run=dry_run,
            wait=wait or wait_until is not None,
            wait_until=wait_until or "optimizing",
            timeout_s=parse_duration(timeout, "--timeout"),
            poll_s=positive_number(poll_interval, "--poll-interval", maximum=MAX_POLL_INTERVAL),
            when_image_present=when_image_present,
        )
        validate(options)
        return options


TUNE_EBS = Command(
    cli="tune-ebs",
    agent="tune-ebs",
    summary="tune an EBS gp3 volume (needs boto3 on the host; see gpuhost tune-ebs)",
    options=(
        Option("--volume-id", "The EBS volume to tune. Default: this instance's volume chosen by --target.",
               metavar="VOLUME_ID", example="--volume-id vol-0123456789abcdef0"),
        Option("--target", "Without --volume-id, which volume of this instance: `root` (the root device, from IMDSv2 "
               "and describe-instances) or `data-root` (the volume under Docker's data-root, by its NVMe serial).",
               default="root", choices=TARGETS, example="--target data-root"),
        Option("--instance-id", "Find the root volume of this instance instead of the one the command runs on; with "
               "--volume-id, the volume must be attached to it (exit 2 otherwise).", metavar="INSTANCE_ID",
               example="--instance-id i-0123456789abcdef0 --region us-east-1"),
        Option("--data-root", "With --target data-root: the directory to look under instead of asking Docker.",
               kind="path", example="--data-root /var/lib/docker"),
        Option("--region", "The AWS region. Default: AWS_REGION, then AWS_DEFAULT_REGION, the profile's region, then "
               "the instance's own.", metavar="REGION", example="--region us-east-1"),
        Option("--profile", "A named profile from ~/.aws/config; the usual boto3 credential chain otherwise.",
               metavar="PROFILE", example="--profile gpu-admin"),
        Option("--endpoint-url", "Send EC2 API calls to this URL (a VPC endpoint, a test server). Each request gets "
               "20 s in all, each call 60 s with its retries, each answer at most 16 MiB.", metavar="URL",
               example="--endpoint-url https://vpce-0abc-1234.ec2.us-east-1.vpce.amazonaws.com"),
        Option("--throughput", "Target gp3 throughput, 125-2000 MiB/s, at most 0.25 MiB/s per provisioned IOPS.",
               kind="int", metavar="MiB/s", minimum=0, maximum=100_000, example="--throughput 1000"),
        Option("--iops", "Target gp3 IOPS, 3000-80000, at most 500 per GiB of volume size.", kind="int",
               metavar="IOPS", minimum=0, maximum=1_000_000, example="--iops 9000"),
        Option("--preset", "Named target: `baseline` 3000 IOPS / 125 MiB/s (gp3's free level), `pull` 9000 IOPS / "
               "1000 MiB/s (for a big image pull), `max` the most this volume's size allows.",
               metavar="baseline|pull|max", example="--preset pull"),
        Option("--for-image-size", "Image size for the unpack-time prediction (GB = 10^9, GiB = 2^30); with --within, "
               "choose the cheapest target that unpacks it in time.", metavar="SIZE",
               example="--for-image-size 140GB"),
        Option("--within", "With --for-image-size: the unpack time to meet (s, m, h). Values already higher are "
               "kept.", metavar="DURATION", example="--for-image-size 140GB --within 5m"),
        Option("--to-gp3", "Allow converting a gp2, io1, io2, st1 or sc1 volume to gp3 (live; it is one "
               "modification).", kind="flag", default=False, example="--to-gp3 --preset baseline"),
        Option("--dry-run", "Print the plan (current -> target, cost, unpack time, modification limit) and change "
               "nothing.", kind="flag", default=False, example="--preset pull --dry-run"),
        Option("--wait", "After requesting the change, follow it with a progress bar until AWS reports `optimizing` "
               "(the new performance is being applied).", kind="flag", default=False,
               example="--preset pull --wait"),
        Option("--wait-until", "Implies --wait; `completed` waits for the whole modification (also what AWS needs "
               "before the next one).", choices=WAIT_UNTIL, example="--wait-until completed"),
        Option("--timeout", "How long --wait follows the modification before giving up (exit 1; the modification goes "
               "on).", default=DEFAULT_TIMEOUT, metavar="DURATION", example="--wait --timeout 10m"),
        Option("--poll-interval", "Seconds between two describe-volumes-modifications calls while waiting.",
               kind="number", default=DEFAULT_POLL_INTERVAL, metavar="SECONDS", minimum=0,
               maximum=MAX_POLL_INTERVAL, example="--wait --poll-interval 5"),
        Option("--when-image-present", "Act only once Docker on this host has this image (a reference in Docker's "
               "grammar, else exit 2); until then change nothing and exit 1 (used by the scheduled revert).",
               metavar="IMAGE", example="--preset baseline --when-image-present comfyui:0.3.64"),
        json_flag("the result (schema gpuhost.tune-ebs/v1)"),
    ),
    parsers=(TuneOptions.parse,),
)


@dataclass
class TuneResult:
    # "modified", "none" (already at target), "planned" (--dry-run), "blocked", "waiting" (image not there yet)
    action: str
    exit_code: ExitCode
    message: str
    dry_run: bool = False
    plan: Plan | None = None
    selection: Selection | None = None
    modification: Modification | None = None
    wait: WaitOutcome | None = None

    @property
    def changed(self) -> bool:
        return self.action == "modified"

    @property
    def would_change(self) -> bool:
        return self.plan is not None and not self.plan.at_target

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "action": self.action,
            "changed": self.changed,
            "would_change": self.would_change,
            "dry_run": self.dry_run,
            "exit_code": int(self.exit_code),
            "message": for_humans(self.message),
            "selection": self.selection.to_dict() if self.selection else None,
            "plan": self.plan.to_dict() if self.plan else None,
            "modification": self.modification.to_dict() if self.modification else None,
            "wait": self.wait.to_dict() if self.wait else None,
        }


def validate(options: TuneOptions) -> None:
    """Everything that can be wrong without asking AWS; raises UsageError."""
    _validate_settings(options.settings)
    if options.volume_id is not None:
        check_volume_id(options.volume_id)
    if options.instance_id is not None:
        check_instance_id(options.instance_id)
    if options.aws.region is not None:
        check_region(options.aws.region)
    if options.target not in TARGETS:
        raise UsageError(f"unknown --target {options.target!r}", f"Targets: {', '.join(TARGETS)}.")
    if options.volume_id is not None and options.data_root is not None:
        raise UsageError("--data-root and --volume-id name the volume twice", "Give one of them.")
    if options.wait_until not in WAIT_UNTIL:
        raise UsageError(f"unknown --wait-until {options.wait_until!r}", f"Choose {' or '.join(WAIT_UNTIL)}.")
    if options.timeout_s <= 0 or options.poll_s <= 0:
        raise UsageError("--timeout and --poll-interval must be positive", "Example: --timeout 30m --poll-interval 15")
    if options.aws.endpoint_url is not None:
        check_endpoint_url(options.aws.endpoint_url)
    if options.when_image_present is not None:
        check_image_reference(options.when_image_present, "--when-image-present")
    if options.when_image_present is not None or (
        options.target == "data-root" and options.volume_id is None and options.data_root is None
    ):
        docker_address(options.docker_host)  # Docker will be asked: its address must be one (else a UsageError)
    aws.check_environment()


def _describe_change(plan: Plan) -> str:
    parts = []
    for name, change in plan.changes.items():
        before, after = change["from"], change["to"]
        if name == "volume_type":
            parts.append(f"type {before} -> {after}")
        elif name == "iops":
            parts.append(f"IOPS {before if before is None else format(before, ',')} -> {after:,}")
        else:
            parts.append(f"throughput {before if before is None else format(before, ',')} -> {after:,} MiB/s")
    return ", ".join(parts)


def _identity(options: TuneOptions, client: imds.ImdsClient | None, why: str) -> imds.InstanceIdentity:
    if not imds.looks_like_ec2(options.root) and client is None:
        raise UsageError(
            f"this host is not an EC2 instance (no Amazon EC2 firmware, no {imds.ENDPOINT_ENV}): cannot find {why}",
            "Give --volume-id vol-... and --region (or run it on the instance).",
        )
    try:
        return (client or imds.ImdsClient(timeout=2.0)).identity()
    except imds.ImdsUnavailable as exc:
        raise aws.AwsError(
            f"cannot find {why}: {exc}",
            "Give --volume-id and --region; in a container on EC2, IMDSv2 needs a hop limit of 2 "
            "(aws ec2 modify-instance-metadata-options --http-put-response-hop-limit 2).",
            ExitCode.SOURCE_UNREADABLE,
        ) from exc


def image_present(reference: str, docker_host: str | None = None) -> tuple[bool, str]:
    """Whether Docker has the image; (False, why) while it cannot say yet. An address that answers,
    but not as Docker does, is a SourceError (exit 3): waiting on it would never end."""
    try:
        EngineClient(docker_host, timeout=5.0).get(f"/images/{quote_ref(reference)}/json")
    except EngineBadAnswer as exc:
        raise SourceError("Docker", str(exc), "Point DOCKER_HOST at the Docker daemon's socket.") from exc
    except EngineError as exc:
        if exc.status == 404:
            return False, f"Docker does not have {reference} yet"
        return False, f"Docker could not say whether it has {reference}: {exc}"
    except (EngineUnavailable, EnginePermissionDenied, OSError, ValueError) as exc:
        return False, f"Docker is not reachable ({exc})"
    return True, f"Docker has {reference}"


def run(
    options: TuneOptions,
    now: Callable[[], dt.datetime] | None = None,
    on_progress: Progress | None = None,
    imds_client: imds.ImdsClient | None = None,
) -> TuneResult:
    """Raises UsageError (exit 2) or aws.AwsError (its own exit code); otherwise a result."""
    validate(options)
    clock = now or (lambda: dt.datetime.now(dt.timezone.utc))

    selection: Selection | None = None
    local: LocalDisk | None = None
    if options.volume_id:
        selection = Selection("volume-id", options.volume_id)
    elif options.target == "data-root":
        data_root = options.data_root or docker_data_root(options.docker_host)
        local = local_disk(data_root, options.root)
        selection = data_root_selection(local)
    else:
        local = local_disk("/", options.root)

    region = options.aws.region or aws.configured_region(options.aws.profile)
    instance_id = options.instance_id
    if (selection is None and not instance_id) or not region:
        why = "the AWS region" if selection is not None or instance_id else f"this instance's {options.target} volume"
        identity = _identity(options, imds_client, why)
        instance_id = instance_id or identity.instance_id
        region = region or identity.region
    if not region:
        raise aws.AwsError(
            "no AWS region: none given, configured or reported by the instance",
            "Give --region us-east-1 (or set AWS_REGION).",
            ExitCode.USAGE,
        )
    check_region(region)

    if options.when_image_present is not None:
        present, why_not = image_present(options.when_image_present, options.docker_host)
        if not present:
            return TuneResult("waiting", ExitCode.FAILING, f"{why_not}: nothing changed", options.dry_run)

    client = aws.ec2_client(dataclasses.replace(options.aws, region=region))
    if selection is None:
        devices = aws.instance_block_devices(client, instance_id or "")
        if options.target == "data-root" and local is not None:
            selection = data_root_by_device(devices, local)
        else:
            selection = root_volume(devices, local)

    volume = aws.describe_volume(client, selection.volume_id)
    if selection.by == "volume-id":
        selection.instance_id = _attached_instance(volume, options.instance_id)
    elif not selection.instance_id:  # found by its NVMe serial: the instance it is attached to
        selection.instance_id = _attached_instance(volume, instance_id)
    modifications = aws.describe_modifications(client, [volume.volume_id])
    plan = make_plan(options.settings, volume, modifications, region, clock())

    def follow() -> WaitOutcome:
        return wait_for_modification(
            lambda: latest(aws.describe_modifications(client, [volume.volume_id])),
            until=options.wait_until,
            timeout_s=options.timeout_s,
            poll_s=options.poll_s,
            on_update=on_progress,
        )

    if plan.at_target:
        result = TuneResult(
            "none",
            ExitCode.OK,
            f"{volume.volume_id} is already at {_performance_text(plan)}: nothing to change",
            options.dry_run,
            plan,
            selection,
        )
        running = plan.gate.in_progress
        if options.wait and not options.dry_run and running is not None:
            result.modification = running
            _finish_wait(result, follow())
        return result

    change = _describe_change(plan)
    if options.dry_run:
        if plan.gate.allowed:
            return TuneResult(
                "planned", ExitCode.OK, f"would change {volume.volume_id}: {change}", True, plan, selection
            )
        return TuneResult(
            "blocked",
            ExitCode.FAILING,
            f"would change {volume.volume_id} ({change}) but not now: {plan.gate.reason}",
            True,
            plan,
            selection,
        )
    if not plan.gate.allowed:
        return TuneResult(
            "blocked",
            ExitCode.FAILING,
            f"cannot change {volume.volume_id} now: {plan.gate.reason}",
            False,
            plan,
            selection,
        )

    modification = aws.modify_volume(client, volume, plan.target)
    result = TuneResult(
        "modified",
        ExitCode.OK,
        f"requested {change} on {volume.volume_id} (state {modification.state or 'modifying'})",
        False,
        plan,
        selection,
        modification,
    )
    if options.wait:
        _finish_wait(result, follow())
    return result


def _attached_instance(volume: Volume, instance_id: str | None) -> str:
    """The instance a volume named by id is attached to, as EC2 says; never assumed."""
    attached = [a["instance_id"] for a in volume.attachments if a.get("instance_id")]
    if instance_id and instance_id not in attached:
        where = f"attached to {', '.join(attached)}" if attached else "not attached to any instance"
        raise UsageError(
            f"{volume.volume_id} is not attached to {instance_id} ({where})",
            "Give --volume-id alone, or --instance-id alone to tune that instance's root volume.",
        )
    return instance_id or (attached[0] if len(attached) == 1 else "")


def _performance_text(plan: Plan) -> str:
    target = plan.target
    return f"{target.volume_type} {target.iops:,} IOPS {target.throughput_mibs:,} MiB/s"


def _finish_wait(result: TuneResult, outcome: WaitOutcome) -> None:
    result.wait = outcome
    if outcome.failed:
        result.exit_code = ExitCode.FAILING
        result.message += f"; the modification failed: {outcome.status_message or 'no reason given'}"
    elif outcome.timed_out:
        result.exit_code = ExitCode.FAILING
        result.message += (
            f"; still {outcome.state} after {outcome.waited_s:.0f} s (--timeout); it goes on in AWS, follow it with "
            "--dry-run"
        )
    else:
        result.message += f"; reached {outcome.state} after {outcome.waited_s:.0f} s"
