"""HostFacts: every collector's facts for one host, and collect_host_facts that fills them in order."""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field

from gpuhost.comfyui.facts import ComfyUIFacts, collect_comfyui
from gpuhost.comfyui.models.facts import ModelsFacts, collect_models
from gpuhost.ebs.facts import AwsFacts, collect_aws
from gpuhost.engine import EngineClient
from gpuhost.facts.boot import BootFacts, collect_boot
from gpuhost.facts.cdi import CdiFacts, collect_cdi
from gpuhost.facts.containerd import ContainerdFacts, collect_containerd
from gpuhost.facts.devices import DeviceFacts, collect_devices
from gpuhost.facts.docker import DAEMON_JSON, DockerFacts, collect_docker, image_sizes
from gpuhost.facts.gpu import GpuFacts, collect_gpu
from gpuhost.facts.kernel import KernelFacts, collect_kernel
from gpuhost.facts.kmsg import KmsgFacts, collect_kmsg
from gpuhost.facts.nginx import NginxFacts, collect_nginx
from gpuhost.facts.packages import PackageFacts, collect_packages
from gpuhost.facts.platform import PlatformFacts, collect_platform
from gpuhost.facts.source import SourceStatus
from gpuhost.facts.storage import (
    StorageFacts,
    collect_block_devices,
    collect_docker_storage,
    read_mounts,
    read_recorded_probe,
)
from gpuhost.facts.systemd import UnitFacts, collect_units
from gpuhost.facts.toolkit import ToolkitFacts, collect_toolkit

SCHEMA_VERSION = 1


@dataclass
class CollectOptions:
    root: str = "/"
    dev_root: str = "/dev"
    docker_host: str | None = None
    daemon_json: str = DAEMON_JSON


@dataclass
class HostFacts:
    hostname: str = ""
    collected_at: float = 0.0
    kernel: KernelFacts = field(default_factory=KernelFacts)
    gpu: GpuFacts = field(default_factory=GpuFacts)
    devices: DeviceFacts = field(default_factory=DeviceFacts)
    docker: DockerFacts = field(default_factory=DockerFacts)
    toolkit: ToolkitFacts = field(default_factory=ToolkitFacts)
    cdi: CdiFacts = field(default_factory=CdiFacts)
    storage: StorageFacts = field(default_factory=StorageFacts)
    aws: AwsFacts = field(default_factory=AwsFacts)
    comfyui: ComfyUIFacts = field(default_factory=ComfyUIFacts)
    models: ModelsFacts = field(default_factory=ModelsFacts)
    boot: BootFacts = field(default_factory=BootFacts)
    kmsg: KmsgFacts = field(default_factory=KmsgFacts)
    units: UnitFacts = field(default_factory=UnitFacts)
    packages: PackageFacts = field(default_factory=PackageFacts)
    platform: PlatformFacts = field(default_factory=PlatformFacts)
    containerd: ContainerdFacts = field(default_factory=ContainerdFacts)
    nginx: NginxFacts = field(default_factory=NginxFacts)
    timings_ms: dict[str, float] = field(default_factory=dict)


def collect_host_facts(options: CollectOptions | None = None) -> HostFacts:
    options = options or CollectOptions()
    facts = HostFacts(hostname=socket.gethostname(), collected_at=time.time())

    def timed(name: str, start: float) -> None:
        facts.timings_ms[name] = round((time.perf_counter() - start) * 1000, 2)

    start = time.perf_counter()
    facts.kernel = collect_kernel(options.root)
    timed("kernel", start)

    start = time.perf_counter()
    facts.gpu = collect_gpu(options.root)
    timed("gpu", start)

    start = time.perf_counter()
    facts.boot = collect_boot(options.root, facts.kernel.release)
    facts.kmsg = collect_kmsg(options.root)
    facts.units = collect_units(options.root)
    facts.packages = collect_packages(options.root)
    facts.platform = collect_platform(options.root, options.dev_root)
    timed("host", start)

    start = time.perf_counter()
    facts.devices = collect_devices(options.dev_root)
    timed("devices", start)

    start = time.perf_counter()
    try:
        client = EngineClient(options.docker_host, timeout=5.0)
    except ValueError:
        client = None
    facts.docker = collect_docker(client, options.daemon_json, options.root)
    facts.containerd = collect_containerd(options.root)
    timed("docker", start)

    start = time.perf_counter()
    facts.toolkit = collect_toolkit(options.root)
    facts.cdi = collect_cdi(options.root)
    timed("toolkit_cdi", start)

    start = time.perf_counter()
    mounts = read_mounts(options.root)
    facts.storage = StorageFacts(
        block_devices=collect_block_devices(options.root, mounts, read_signatures=True),
        docker_storage=collect_docker_storage(options.root),
        probe=read_recorded_probe(options.root),
    )
    images = image_sizes(client) if facts.docker.status is SourceStatus.OK else []
    if images:
        facts.storage.largest_image, facts.storage.largest_image_bytes = images[0].reference, images[0].size_bytes
    timed("storage", start)

    start = time.perf_counter()
    facts.aws = collect_aws(options.root, facts.storage.block_devices, facts.docker.data_root_location, images)
    timed("aws", start)

    start = time.perf_counter()
    facts.comfyui = collect_comfyui(client, facts.docker)
    timed("comfyui", start)

    start = time.perf_counter()
    facts.models = collect_models(options.root)
    timed("models", start)

    start = time.perf_counter()
    facts.nginx = collect_nginx(options.root)
    timed("nginx", start)
    return facts
