"""EC2 and EBS facts: which instance this is, its EBS volumes as the EC2 API sees them, and the
local images whose pull time depends on them.

Only on EC2: the firmware says `Amazon EC2` (/sys/class/dmi/id) or an instance metadata endpoint
is configured (AWS_EC2_METADATA_SERVICE_ENDPOINT). Elsewhere, and on captured trees, nothing is
asked and the facts say why. IMDS gets a few hundred milliseconds; boto3 is imported only here,
on EC2, and where it is missing (the agent on a bare host) the facts say so.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gpuhost.ebs import aws, imds
from gpuhost.ebs.volume import latest
from gpuhost.facts.docker import ImageSize
from gpuhost.facts.source import SourceStatus
from gpuhost.facts.storage import BlockDevice, PathLocation

IMDS_TIMEOUT_S = 0.3
MAX_IMAGES = 20


@dataclass
class EbsVolumeFacts:
    volume_id: str
    volume_type: str = ""
    size_gib: int = 0
    iops: int | None = None
    throughput_mibs: int | None = None
    state: str = ""
    device: str = ""  # as EC2 names the attachment, e.g. /dev/sda1
    local_disk: str = ""  # as this kernel names it, e.g. nvme0n1 (from the NVMe serial)
    data_root: bool = False
    modification_state: str = ""
    modification_progress: int | None = None
    modification_started: str = ""
    modification_target_iops: int | None = None
    modification_target_throughput: int | None = None


@dataclass
class AwsFacts:
    # ABSENT: not on EC2 (or a captured tree); UNREADABLE: on EC2, but IMDS or the API did not answer
    status: SourceStatus = SourceStatus.ABSENT
    on_ec2: bool = False
    detail: str = ""
    remedy: str = ""
    instance_id: str = ""
    region: str = ""
    availability_zone: str = ""
    instance_type: str = ""
    boto3_available: bool | None = None
    volumes: list[EbsVolumeFacts] = field(default_factory=list)
    images: list[ImageSize] = field(default_factory=list)

    @property
    def data_root_volume(self) -> EbsVolumeFacts | None:
        return next((v for v in self.volumes if v.data_root), None)


def local_ebs_disks(block_devices: list[BlockDevice]) -> dict[str, str]:
    """volume id -> kernel disk name, from the NVMe serials of EBS disks."""
    return {d.ebs_volume_id: d.name for d in block_devices if d.device_class == "ebs" and d.ebs_volume_id}


def collect_aws(
    root: str = "/",
    block_devices: list[BlockDevice] | None = None,
    data_root_location: PathLocation | None = None,
    images: list[ImageSize] | None = None,
    endpoint_url: str | None = None,
) -> AwsFacts:
    facts = AwsFacts()
    if root != "/":
        facts.detail = "a captured tree: instance metadata and the EC2 API are not asked"
        return facts
    if not imds.looks_like_ec2(root):
        facts.detail = "not an EC2 instance (the firmware does not say Amazon EC2)"
        return facts
    facts.on_ec2 = True
    try:
        identity = imds.ImdsClient(timeout=IMDS_TIMEOUT_S).identity()
    except imds.ImdsUnavailable as exc:
        facts.status = SourceStatus.UNREADABLE
        facts.detail = str(exc)
        facts.remedy = (
            "Allow IMDSv2 for this caller; inside a container, raise the hop limit to 2 "
            "(aws ec2 modify-instance-metadata-options --http-put-response-hop-limit 2)."
        )
        return facts
    facts.instance_id, facts.region = identity.instance_id, identity.region
    facts.availability_zone, facts.instance_type = identity.availability_zone, identity.instance_type
    local = local_ebs_disks(block_devices or [])
    data_root_id = data_root_location.ebs_volume_id if data_root_location is not None else ""
    facts.images = (images or [])[:MAX_IMAGES]
    _collect_volumes(facts, local, data_root_id, endpoint_url)
    return facts


def _collect_volumes(facts: AwsFacts, local: dict[str, str], data_root_id: str, endpoint_url: str | None) -> None:
    try:
        import boto3  # noqa: F401
    except ImportError:
        facts.boto3_available = False
        facts.status = SourceStatus.OK
        facts.detail = "boto3 is not installed for this Python: EBS volume facts skipped"
        facts.remedy = "Install python3-boto3 (apt-get or dnf) to see the volumes' type, IOPS and throughput."
        return
    facts.boto3_available = True
    options = aws.AwsOptions(
        region=facts.region,
        endpoint_url=endpoint_url,
        connect_timeout=1.0,
        read_timeout=3.0,
        call_timeout=8.0,
        max_attempts=2,
    )
    try:
        client = aws.ec2_client(options)
        devices = aws.instance_block_devices(client, facts.instance_id)
        device_of = {volume_id: name for name, volume_id in devices.volumes.items()}
        ids = sorted(set(devices.volumes.values()) | set(local))
        volumes = aws.describe_volumes(client, ids)
        history = aws.describe_modifications(client, ids)
    except aws.AwsError as exc:
        facts.status = SourceStatus.UNREADABLE
        facts.detail = str(exc)
        facts.remedy = exc.remedy
        return
    facts.status = SourceStatus.OK
    for volume in volumes:
        entry = EbsVolumeFacts(
            volume_id=volume.volume_id,
            volume_type=volume.volume_type,
            size_gib=volume.size_gib,
            iops=volume.performance.iops,
            throughput_mibs=volume.performance.throughput_mibs,
            state=volume.state,
            device=device_of.get(volume.volume_id, ""),
            local_disk=local.get(volume.volume_id, ""),
            data_root=volume.volume_id == data_root_id,
        )
        modification = latest([m for m in history if m.volume_id == volume.volume_id])
        if modification is not None:
            entry.modification_state = modification.state
            entry.modification_progress = modification.progress
            entry.modification_started = modification.start_time.isoformat() if modification.start_time else ""
            entry.modification_target_iops = modification.target_iops
            entry.modification_target_throughput = modification.target_throughput
        facts.volumes.append(entry)
