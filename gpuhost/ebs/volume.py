"""What the EC2 API says about a volume and its modifications, as plain dataclasses."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

IN_PROGRESS_STATES = ("modifying", "optimizing")


@dataclass
class Performance:
    """A volume's type, size and provisioned performance (current or target)."""

    volume_type: str
    size_gib: int
    iops: int | None = None
    throughput_mibs: int | None = None

    def same_as(self, other: Performance) -> bool:
        return (self.volume_type, self.iops, self.throughput_mibs) == (
            other.volume_type,
            other.iops,
            other.throughput_mibs,
        )


@dataclass
class Volume:
    volume_id: str
    performance: Performance
    state: str = ""
    availability_zone: str = ""
    attachments: list[dict[str, str]] = field(default_factory=list)

    @property
    def volume_type(self) -> str:
        return self.performance.volume_type

    @property
    def size_gib(self) -> int:
        return self.performance.size_gib


@dataclass
class Modification:
    """One entry of describe_volumes_modifications."""

    volume_id: str
    state: str
    progress: int | None = None
    start_time: dt.datetime | None = None
    end_time: dt.datetime | None = None
    status_message: str = ""
    target_iops: int | None = None
    target_throughput: int | None = None
    target_volume_type: str | None = None
    original_iops: int | None = None
    original_throughput: int | None = None
    original_volume_type: str | None = None

    @property
    def in_progress(self) -> bool:
        return self.state in IN_PROGRESS_STATES

    def to_dict(self) -> dict[str, Any]:
        return {
            "volume_id": self.volume_id,
            "state": self.state,
            "progress": self.progress,
            "start_time": _iso(self.start_time),
            "end_time": _iso(self.end_time),
            "status_message": self.status_message,
            "target": {
                "volume_type": self.target_volume_type,
                "iops": self.target_iops,
                "throughput_mibs": self.target_throughput,
            },
        }


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _aware(value: Any) -> dt.datetime | None:
    if not isinstance(value, dt.datetime):
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.timezone.utc)


def _int(value: Any) -> int | None:
    return int(value) if isinstance(value, (int, float)) else None


# what a gp3 volume has when nothing more is provisioned (AWS reports both; some servers omit them)
GP3_BASELINE = (3000, 125)


def volume_from_api(data: dict[str, Any]) -> Volume:
    """A Volume from one element of describe_volumes()['Volumes']."""
    volume_type = str(data.get("VolumeType", ""))
    iops, throughput = _int(data.get("Iops")), _int(data.get("Throughput"))
    if volume_type == "gp3":
        iops = iops or GP3_BASELINE[0]
        throughput = throughput or GP3_BASELINE[1]
    return Volume(
        volume_id=str(data.get("VolumeId", "")),
        performance=Performance(
            volume_type=volume_type,
            size_gib=int(data.get("Size") or 0),
            iops=iops,
            throughput_mibs=throughput,
        ),
        state=str(data.get("State", "")),
        availability_zone=str(data.get("AvailabilityZone", "")),
        attachments=[
            {"instance_id": str(a.get("InstanceId", "")), "device": str(a.get("Device", ""))}
            for a in data.get("Attachments") or []
        ],
    )


def modification_from_api(data: dict[str, Any]) -> Modification:
    """A Modification from one element of describe_volumes_modifications()['VolumesModifications']."""
    return Modification(
        volume_id=str(data.get("VolumeId", "")),
        state=str(data.get("ModificationState", "")),
        progress=_int(data.get("Progress")),
        start_time=_aware(data.get("StartTime")),
        end_time=_aware(data.get("EndTime")),
        status_message=str(data.get("StatusMessage") or ""),
        target_iops=_int(data.get("TargetIops")),
        target_throughput=_int(data.get("TargetThroughput")),
        target_volume_type=data.get("TargetVolumeType"),
        original_iops=_int(data.get("OriginalIops")),
        original_throughput=_int(data.get("OriginalThroughput")),
        original_volume_type=data.get("OriginalVolumeType"),
    )


def latest(modifications: list[Modification]) -> Modification | None:
    dated = [m for m in modifications if m.start_time is not None]
    if dated:
        return max(dated, key=lambda m: m.start_time or dt.datetime.min.replace(tzinfo=dt.timezone.utc))
    return modifications[-1] if modifications else None
