"""tune-ebs planning: validate the request, pick the target, price it, predict it, gate it.

Pure functions over what the user asked for and what the EC2 API reported; no AWS calls here.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from gpuhost.ebs import limits
from gpuhost.ebs.volume import Modification, Performance, Volume
from gpuhost.model import UsageError
from gpuhost.redact import redact_url
from gpuhost.units import GB, MIB, format_duration
from gpuhost.unpack import predict_unpack_seconds

# The image size predictions use when none is given: the seed report's 140 GB image.
REFERENCE_IMAGE_BYTES = 140 * GB

# fullmatch, never `$`: a trailing newline must not pass
_VOLUME_ID = re.compile(r"vol-[0-9a-f]{8}(?:[0-9a-f]{9})?")
_INSTANCE_ID = re.compile(r"i-[0-9a-f]{8}(?:[0-9a-f]{9})?")
_REGION = re.compile(r"[a-z]{2}(?:-[a-z]+)+-[0-9]{1,3}")
ENDPOINT_EXAMPLE = "Example: --endpoint-url https://ec2.us-east-1.amazonaws.com"


def check_volume_id(volume_id: str) -> None:
    if not _VOLUME_ID.fullmatch(volume_id):
        raise UsageError(
            f"{volume_id!r} is not an EBS volume id",
            "Volume ids look like vol-0123456789abcdef0 (aws ec2 describe-volumes lists them).",
        )


def check_instance_id(instance_id: str) -> None:
    if not _INSTANCE_ID.fullmatch(instance_id):
        raise UsageError(f"{instance_id!r} is not an EC2 instance id", "Instance ids look like i-0123456789abcdef0.")


def check_region(region: str) -> None:
    if not _REGION.fullmatch(region):
        raise UsageError(f"{region[:80]!r} is not an AWS region name", "Regions look like us-east-1 or eu-central-1.")


def check_endpoint_url(url: str, name: str = "--endpoint-url") -> None:
    """An http(s) URL with a host and, if any, a port from 1 to 65535; nothing around it. `name` is
    where it came from (the option, or the environment variable boto3 would read it from). Messages
    show it without its credentials."""
    shown = redact_url(url)[:200]
    example = ENDPOINT_EXAMPLE if name.startswith("--") else (
        f"Example: {name}=https://ec2.us-east-1.amazonaws.com, or unset {name} to use AWS's own endpoint.")
    if url != url.strip() or not url.isprintable() or any(c.isspace() for c in url):
        raise UsageError(f"{name} {shown!r} has spaces or control characters in it", example)
    try:
        parsed = urlsplit(url)
        port = parsed.port
    except ValueError as exc:
        raise UsageError(f"{name} {shown!r} is not a URL: {exc}", example) from None
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise UsageError(f"{name} {shown!r} is not an http:// or https:// URL with a host", example)
    if port == 0:
        raise UsageError(f"{name} {shown!r}: the port is not a number from 1 to 65535", example)


@dataclass
class Settings:
    """What the user asked for, before anything is known about the volume."""

    preset: str | None = None
    iops: int | None = None
    throughput_mibs: int | None = None
    image_bytes: int | None = None
    within_s: float | None = None
    to_gp3: bool = False

    @property
    def mode(self) -> str:
        if self.preset:
            return "preset"
        if self.within_s is not None:
            return "image"
        if self.iops is not None or self.throughput_mibs is not None:
            return "explicit"
        return "convert"


def _range_error(name: str, value: int, bounds: tuple[int, int], unit: str) -> str:
    return f"{name} {value:,} is outside gp3's range {bounds[0]:,}-{bounds[1]:,} {unit}"


def validate_settings(settings: Settings) -> None:
    """Reject what is wrong whatever the volume; raises UsageError with the remedy."""
    explicit = settings.iops is not None or settings.throughput_mibs is not None
    choices = [bool(settings.preset), explicit, settings.within_s is not None]
    if sum(choices) > 1:
        raise UsageError(
            "choose one way to set the target: --preset, --iops/--throughput, or --for-image-size with --within",
            "Example: gpuhost tune-ebs --preset pull, or --iops 6000 --throughput 500.",
        )
    if settings.preset is not None and settings.preset not in limits.PRESET_NAMES:
        raise UsageError(f"unknown preset {settings.preset!r}", f"Presets: {', '.join(limits.PRESET_NAMES)}.")
    if settings.within_s is not None and settings.image_bytes is None:
        raise UsageError("--within needs --for-image-size", "Example: --for-image-size 140GB --within 5m")
    if not any(choices) and not settings.to_gp3:
        raise UsageError(
            "nothing to change: no target given",
            "Give --preset baseline|pull|max, --iops/--throughput, or --for-image-size SIZE --within TIME "
            "(add --dry-run to see the plan only).",
        )
    iops_range = limits.GP3.iops or (3000, 80000)
    mibs_range = limits.GP3.throughput_mibs or (125, 2000)
    if settings.iops is not None and not iops_range[0] <= settings.iops <= iops_range[1]:
        raise UsageError(
            _range_error("--iops", settings.iops, iops_range, "IOPS"),
            f"Give --iops between {iops_range[0]} and {iops_range[1]} (source: {limits.LIMITS_SOURCE}).",
        )
    if settings.throughput_mibs is not None and not mibs_range[0] <= settings.throughput_mibs <= mibs_range[1]:
        raise UsageError(
            _range_error("--throughput", settings.throughput_mibs, mibs_range, "MiB/s"),
            f"Give --throughput between {mibs_range[0]} and {mibs_range[1]} MiB/s.",
        )
    if settings.iops is not None and settings.throughput_mibs is not None:
        _check_ratio(settings.iops, settings.throughput_mibs)
    if settings.image_bytes is not None and settings.within_s is not None:
        cheapest_gp3_for(settings.image_bytes, settings.within_s)  # beyond gp3 whatever the volume


def _check_ratio(iops: int, mibs: int) -> None:
    if mibs > limits.gp3_max_mibs(iops):
        needed = limits.gp3_min_iops_for(mibs)
        raise UsageError(
            f"{mibs:,} MiB/s needs at least {needed:,} IOPS on gp3 (at most {limits.GP3.max_mibs_per_iops} MiB/s "
            f"per provisioned IOPS); {iops:,} IOPS allow {limits.gp3_max_mibs(iops):,} MiB/s",
            f"Raise --iops to {needed} or lower --throughput to {limits.gp3_max_mibs(iops)}.",
        )


def required_mibs(image_bytes: int, within_s: float) -> int:
    """The lowest whole MiB/s at which the unpack model finishes `image_bytes` within `within_s`."""
    mibs = max(1, math.ceil(image_bytes / (within_s * MIB)))
    while predict_unpack_seconds(image_bytes, mibs) > within_s:
        mibs += 1
    return mibs


@dataclass
class GateVerdict:
    """Whether AWS's modification rule lets this volume change now."""

    allowed: bool
    reason: str = ""
    in_progress: Modification | None = None
    recent: int = 0
    next_change_at: dt.datetime | None = None
    rule: limits.ModificationRule = limits.MODIFICATION_RULE

    def to_dict(self) -> dict[str, Any]:
        return {
            "allowed": self.allowed,
            "reason": self.reason,
            "in_progress": self.in_progress.to_dict() if self.in_progress else None,
            "modifications_in_window": self.recent,
            "max_per_window": self.rule.max_per_window,
            "window_hours": self.rule.window_hours,
            "next_change_at": self.next_change_at.isoformat() if self.next_change_at else None,
            "rule_source": self.rule.source,
        }


def modification_gate(
    modifications: list[Modification], now: dt.datetime, rule: limits.ModificationRule = limits.MODIFICATION_RULE
) -> GateVerdict:
    """Apply AWS's rule to the history describe_volumes_modifications returned."""
    window = dt.timedelta(hours=rule.window_hours)
    running = [m for m in modifications if m.in_progress]
    recent = sorted(
        m.start_time for m in modifications if m.state != "failed" and m.start_time and now - m.start_time < window
    )
    if running and rule.previous_must_complete:
        current = max(running, key=lambda m: m.start_time or now)
        started = current.start_time.strftime("%Y-%m-%d %H:%M UTC") if current.start_time else "earlier"
        progress = f", {current.progress}%" if current.progress is not None else ""
        return GateVerdict(
            allowed=False,
            reason=(
                f"a modification is in progress ({current.state}{progress}, started {started}); AWS accepts the next "
                "change once it is completed"
            ),
            in_progress=current,
            recent=len(recent),
            rule=rule,
        )
    if len(recent) >= rule.max_per_window:
        next_at = recent[len(recent) - rule.max_per_window] + window
        left = format_duration((next_at - now).total_seconds())
        return GateVerdict(
            allowed=False,
            reason=(
                f"{len(recent)} modifications in the last {rule.window_hours:g} hours (AWS allows "
                f"{rule.max_per_window}); the next change is possible at {next_at.strftime('%Y-%m-%d %H:%M UTC')} "
                f"(in {left})"
            ),
            recent=len(recent),
            next_change_at=next_at,
            rule=rule,
        )
    return GateVerdict(allowed=True, recent=len(recent), rule=rule)


@dataclass
class CostDelta:
    region: str
    price_region: str
    current_month: float
    target_month: float

    @property
    def delta_month(self) -> float:
        return round(self.target_month - self.current_month, 2)

    @property
    def delta_day(self) -> float:
        return round((self.target_month - self.current_month) * 24 / limits.HOURS_PER_MONTH, 2)

    def to_dict(self) -> dict[str, Any]:
        return {
            "currency": "USD",
            "region": self.region,
            "price_region": self.price_region,
            "current_month": round(self.current_month, 2),
            "target_month": round(self.target_month, 2),
            "delta_month": self.delta_month,
            "delta_day": self.delta_day,
            "source": limits.PRICES_SOURCE,
            "as_of": limits.PRICES_AS_OF,
        }


def cost_of(region: str, performance: Performance) -> float:
    return limits.monthly_cost(
        region, performance.volume_type, performance.size_gib, performance.iops, performance.throughput_mibs
    )


def cost_delta(region: str, current: Performance, target: Performance) -> CostDelta:
    _price, price_region = limits.price_for(region, target.volume_type)
    return CostDelta(region, price_region, cost_of(region, current), cost_of(region, target))


@dataclass
class UnpackPrediction:
    image_bytes: int
    reference: bool  # True when no size was given and the seed's 140 GB stands in
    before_mibs: float
    after_mibs: float

    @property
    def before_s(self) -> float:
        return predict_unpack_seconds(self.image_bytes, self.before_mibs)

    @property
    def after_s(self) -> float:
        return predict_unpack_seconds(self.image_bytes, self.after_mibs)

    def to_dict(self) -> dict[str, Any]:
        return {
            "image_bytes": self.image_bytes,
            "image_gb": round(self.image_bytes / GB, 1),
            "reference_size": self.reference,
            "before_mibs": self.before_mibs,
            "after_mibs": self.after_mibs,
            "before_s": round(self.before_s, 1),
            "after_s": round(self.after_s, 1),
        }


def write_mibs_of(performance: Performance) -> float:
    return limits.write_mibs(
        performance.volume_type, performance.size_gib, performance.iops, performance.throughput_mibs
    )


def cheapest_gp3_for(image_bytes: int, within_s: float, size_gib: int | None = None) -> tuple[int, int]:
    """The cheapest gp3 (IOPS, MiB/s) whose predicted unpack of `image_bytes` takes at most `within_s`.

    Raises UsageError when gp3 cannot do it at all, or not at `size_gib` (500 IOPS per GiB).
    """
    top = (limits.GP3.throughput_mibs or (125, 2000))[1]
    baseline_mibs = limits.GP3.baseline_mibs or 125
    need = max(baseline_mibs, required_mibs(image_bytes, within_s))
    if need > top:
        fastest = predict_unpack_seconds(image_bytes, top)
        raise UsageError(
            f"{image_bytes / GB:.0f} GB within {format_duration(within_s)} needs {need:,} MiB/s; gp3 tops out at "
            f"{top:,} MiB/s (predicted {format_duration(fastest)} at the maximum)",
            "Allow more time with --within, or put Docker's data-root on instance-store NVMe (roles/docker_storage).",
        )
    iops = limits.gp3_min_iops_for(need)
    if size_gib is not None and iops > limits.gp3_max_iops(size_gib):
        size_needed = limits.gp3_min_size_for(iops)
        raise UsageError(
            f"{need:,} MiB/s needs {iops:,} IOPS, which gp3 allows from {size_needed} GiB (500 IOPS per GiB); "
            f"this volume has {size_gib} GiB",
            f"Grow the volume to {size_needed} GiB first (aws ec2 modify-volume --size {size_needed}) or allow "
            "more time with --within.",
        )
    return iops, need


def _preset_target(name: str, size_gib: int, notes: list[str]) -> tuple[int, int]:
    if name == "baseline":
        return limits.PRESETS.baseline
    if name == "max":
        iops = limits.gp3_max_iops(size_gib)
        return iops, limits.gp3_max_mibs(iops)
    iops, mibs = limits.PRESETS.pull
    allowed = limits.gp3_max_iops(size_gib)
    if iops > allowed:
        notes.append(f"preset pull: {iops:,} IOPS capped to {allowed:,} (500 IOPS per GiB of a {size_gib} GiB volume)")
        iops = allowed
    if mibs > limits.gp3_max_mibs(iops):
        notes.append(f"preset pull: {mibs:,} MiB/s capped to {limits.gp3_max_mibs(iops):,} by {iops:,} IOPS")
        mibs = limits.gp3_max_mibs(iops)
    return iops, mibs


def wrong_type_error(volume: Volume, region: str) -> UsageError:
    baseline = Performance("gp3", volume.size_gib, *limits.PRESETS.baseline)
    delta = cost_delta(region, volume.performance, baseline)
    return UsageError(
        f"{volume.volume_id} is {volume.volume_type}: tune-ebs sets IOPS and throughput on gp3 volumes only",
        f"Add --to-gp3 to convert it live (gp3 baseline: {delta.delta_month:+.2f} USD/month against "
        f"{volume.volume_type} at {volume.size_gib} GiB); the conversion counts as a modification.",
    )


def target_for(settings: Settings, volume: Volume, region: str) -> tuple[Performance, list[str]]:
    """The gp3 settings to ask for, given the request and the volume as it is."""
    notes: list[str] = []
    if volume.volume_type != limits.TUNABLE_TYPE and not settings.to_gp3:
        raise wrong_type_error(volume, region)
    size = volume.size_gib
    low, high = limits.GP3.size_gib
    if not low <= size <= high:
        raise UsageError(
            f"{volume.volume_id} has {size:,} GiB; gp3 volumes hold {low}-{high:,} GiB",
            "Choose another volume type for it; gp3 cannot hold this size.",
        )
    if volume.volume_type == "gp3":
        current_iops = volume.performance.iops or limits.PRESETS.baseline[0]
        current_mibs = volume.performance.throughput_mibs or limits.PRESETS.baseline[1]
    else:
        # AWS's default when a volume becomes gp3: the baseline
        current_iops, current_mibs = limits.PRESETS.baseline
        notes.append(f"converts {volume.volume_type} to gp3 (live; the volume stays usable)")
    mode = settings.mode
    if mode == "preset" and settings.preset:
        iops, mibs = _preset_target(settings.preset, size, notes)
    elif mode == "explicit":
        iops = settings.iops if settings.iops is not None else current_iops
        mibs = settings.throughput_mibs if settings.throughput_mibs is not None else current_mibs
    elif mode == "image" and settings.image_bytes and settings.within_s:
        need_iops, need_mibs = cheapest_gp3_for(settings.image_bytes, settings.within_s, size)
        iops, mibs = max(current_iops, need_iops), max(current_mibs, need_mibs)
        if (iops, mibs) != (need_iops, need_mibs):
            notes.append(
                f"the target needs {need_iops:,} IOPS and {need_mibs:,} MiB/s; values already above that are kept"
            )
    else:
        iops, mibs = current_iops, current_mibs
    target = Performance("gp3", size, iops, mibs)
    validate_target(target, volume.volume_id)
    return target, notes


def validate_target(target: Performance, volume_id: str = "the volume") -> None:
    """Every gp3 limit against the volume's size; raises UsageError naming the limit."""
    iops = target.iops or 0
    mibs = target.throughput_mibs or 0
    iops_range = limits.GP3.iops or (3000, 80000)
    mibs_range = limits.GP3.throughput_mibs or (125, 2000)
    if not iops_range[0] <= iops <= iops_range[1]:
        raise UsageError(_range_error("IOPS", iops, iops_range, "IOPS"), "Choose IOPS within gp3's range.")
    if not mibs_range[0] <= mibs <= mibs_range[1]:
        raise UsageError(_range_error("throughput", mibs, mibs_range, "MiB/s"), "Choose throughput within gp3's range.")
    _check_ratio(iops, mibs)
    allowed = limits.gp3_max_iops(target.size_gib)
    if iops > allowed:
        size_needed = limits.gp3_min_size_for(iops)
        raise UsageError(
            f"{iops:,} IOPS exceed gp3's 500 IOPS per GiB for {volume_id} ({target.size_gib} GiB allows {allowed:,})",
            f"Lower --iops to {allowed} or grow the volume to {size_needed} GiB first.",
        )


@dataclass
class Plan:
    volume: Volume
    region: str
    settings: Settings
    target: Performance
    cost: CostDelta
    unpack: UnpackPrediction
    gate: GateVerdict
    notes: list[str] = field(default_factory=list)

    @property
    def current(self) -> Performance:
        return self.volume.performance

    @property
    def at_target(self) -> bool:
        return self.current.same_as(self.target)

    @property
    def changes(self) -> dict[str, dict[str, Any]]:
        pairs = {
            "volume_type": (self.current.volume_type, self.target.volume_type),
            "iops": (self.current.iops, self.target.iops),
            "throughput_mibs": (self.current.throughput_mibs, self.target.throughput_mibs),
        }
        return {k: {"from": a, "to": b} for k, (a, b) in pairs.items() if a != b}

    def revert_note(self) -> str:
        rule = self.gate.rule
        left = rule.max_per_window - self.gate.recent - 1
        undo = "Going back up" if self.cost.delta_month < 0 else "Reverting"
        return (
            f"{undo} is another modification: AWS accepts it once this one is completed, and allows "
            f"{rule.max_per_window} modifications per volume in any {rule.window_hours:g} hours ({max(0, left)} left "
            f"after this one). Earlier AWS rules asked for {limits.LEGACY_COOLDOWN_HOURS:g} hours between two "
            "modifications. Each day at the target costs about "
            f"{self.cost.delta_day:+.2f} USD."
        )

    def to_dict(self) -> dict[str, Any]:
        def perf(p: Performance) -> dict[str, Any]:
            return {
                "volume_type": p.volume_type,
                "size_gib": p.size_gib,
                "iops": p.iops,
                "throughput_mibs": p.throughput_mibs,
            }

        return {
            "volume_id": self.volume.volume_id,
            "region": self.region,
            "availability_zone": self.volume.availability_zone,
            "attachments": self.volume.attachments,
            "current": perf(self.current),
            "target": perf(self.target),
            "changes": self.changes,
            "at_target": self.at_target,
            "cost": self.cost.to_dict(),
            "unpack": self.unpack.to_dict(),
            "modification_gate": self.gate.to_dict(),
            "revert": self.revert_note(),
            "notes": self.notes,
        }


def make_plan(
    settings: Settings,
    volume: Volume,
    modifications: list[Modification],
    region: str,
    now: dt.datetime,
) -> Plan:
    target, notes = target_for(settings, volume, region)
    image_bytes = settings.image_bytes or REFERENCE_IMAGE_BYTES
    return Plan(
        volume=volume,
        region=region,
        settings=settings,
        target=target,
        cost=cost_delta(region, volume.performance, target),
        unpack=UnpackPrediction(
            image_bytes=image_bytes,
            reference=settings.image_bytes is None,
            before_mibs=write_mibs_of(volume.performance),
            after_mibs=write_mibs_of(target),
        ),
        gate=modification_gate(modifications, now),
        notes=notes,
    )
