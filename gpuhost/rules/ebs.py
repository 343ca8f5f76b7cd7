"""EBS volumes of an EC2 host: what they are provisioned for, and what that means for image pulls."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gpuhost.ebs.limits import write_mibs
from gpuhost.facts.source import SourceStatus
from gpuhost.model import Finding, Severity
from gpuhost.units import GB, format_duration
from gpuhost.unpack import predict_unpack_seconds

if TYPE_CHECKING:
    from gpuhost.ebs.facts import EbsVolumeFacts
    from gpuhost.hostfacts import HostFacts
    from gpuhost.rules.options import RuleOptions

# a pull slower than this onto an EBS data-root is worth a warning (the seed's pain: 18 min)
PULL_WARN_S = 600.0


def _write_mibs(volume: EbsVolumeFacts) -> float:
    return write_mibs(volume.volume_type, volume.size_gib, volume.iops, volume.throughput_mibs)


def _describe(volume: EbsVolumeFacts) -> str:
    parts = [volume.volume_type, f"{volume.size_gib:,} GiB"]
    if volume.iops is not None:
        parts.append(f"{volume.iops:,} IOPS")
    if volume.throughput_mibs is not None:
        parts.append(f"{volume.throughput_mibs:,} MiB/s")
    where = ", ".join(x for x in (volume.device, volume.local_disk) if x)
    text = f"{volume.volume_id} ({', '.join(parts)})"
    return f"{text} at {where}" if where else text


def volumes(facts: HostFacts, options: RuleOptions) -> list[Finding]:
    aws = facts.aws
    if not aws.on_ec2:
        return []
    evidence = {"instance_id": aws.instance_id, "region": aws.region, "instance_type": aws.instance_type}
    if aws.status is SourceStatus.UNREADABLE:
        return [
            Finding(
                "ebs.facts",
                "ebs",
                Severity.WARN,
                f"EBS volume facts unavailable: {aws.detail}",
                aws.remedy,
                evidence,
            )
        ]
    if aws.boto3_available is False:
        return [Finding("ebs.facts", "ebs", Severity.OK, aws.detail, aws.remedy, evidence)]
    findings = []
    for volume in aws.volumes:
        severity = Severity.OK
        message = _describe(volume) + (" [Docker data-root]" if volume.data_root else "")
        remedy = ""
        if volume.modification_state in ("modifying", "optimizing"):
            severity = Severity.WARN
            progress = f" {volume.modification_progress}%" if volume.modification_progress is not None else ""
            message += (
                f"; modification {volume.modification_state}{progress} (to {volume.modification_target_iops} IOPS, "
                f"{volume.modification_target_throughput} MiB/s) since {volume.modification_started}"
            )
            remedy = "Performance is between the old and new settings until it completes; follow it with " + (
                f"gpuhost tune-ebs --volume-id {volume.volume_id} --dry-run."
            )
        elif volume.modification_state == "failed":
            severity = Severity.WARN
            message += "; its last modification failed"
            remedy = f"See aws ec2 describe-volumes-modifications --volume-ids {volume.volume_id}."
        findings.append(
            Finding("ebs.volume", "ebs", severity, message, remedy, {**evidence, "volume_id": volume.volume_id})
        )
    return findings


def pull_time(facts: HostFacts, options: RuleOptions) -> list[Finding]:
    aws = facts.aws
    volume = aws.data_root_volume if aws.on_ec2 else None
    if volume is None:
        return []
    mibs = _write_mibs(volume)
    evidence = {
        "volume_id": volume.volume_id,
        "write_mibs": mibs,
        "images": [
            {
                "reference": image.reference,
                "size_bytes": image.size_bytes,
                "predicted_s": round(predict_unpack_seconds(image.size_bytes, mibs), 1),
            }
            for image in aws.images
        ],
    }
    if not aws.images:
        reference = 140 * GB
        return [
            Finding(
                "ebs.pull-time",
                "ebs",
                Severity.OK,
                f"no images yet on data-root volume {volume.volume_id} ({mibs:,.0f} MiB/s): a 140 GB image would "
                f"take about {format_duration(predict_unpack_seconds(reference, mibs))} to unpack",
                "",
                evidence,
            )
        ]
    largest = aws.images[0]
    seconds = predict_unpack_seconds(largest.size_bytes, mibs)
    total = predict_unpack_seconds(sum(i.size_bytes for i in aws.images), mibs)
    message = (
        f"pulling {largest.reference} ({largest.size_bytes / GB:.1f} GB) onto {volume.volume_id} at {mibs:,.0f} MiB/s "
        f"takes about {format_duration(seconds)} to unpack; all {len(aws.images)} local images "
        f"{format_duration(total)}"
    )
    if seconds > PULL_WARN_S:
        size_gb = max(1, round(largest.size_bytes / GB))
        return [
            Finding(
                "ebs.pull-time",
                "ebs",
                Severity.WARN,
                message,
                f"Before the next pull: gpuhost tune-ebs --target data-root --for-image-size {size_gb}GB --within 5m "
                "(or move data-root to instance-store NVMe).",
                evidence,
            )
        ]
    return [Finding("ebs.pull-time", "ebs", Severity.OK, message, "", evidence)]
