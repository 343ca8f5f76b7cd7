"""Docker facts through the Engine API: versions, runtimes, CDI, data-root and GPU containers.

A container's facts are an allowlist: what the rules read, nothing else. Its environment, command
line and other labels hold tokens and keys (HF_TOKEN, AWS_SECRET_ACCESS_KEY, an API key in the
extra command line) and never leave the host: of the environment only NVIDIA_VISIBLE_DEVICES is
kept, of the labels only CONTAINER_LABELS, of the port bindings only HostIp and HostPort.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from gpuhost import userfile
from gpuhost.engine import EngineClient, EngineError, EnginePermissionDenied, EngineUnavailable
from gpuhost.facts.source import SourceStatus
from gpuhost.facts.storage import PathLocation, locate
from gpuhost.options import Option
from gpuhost.redact import redact_all

DAEMON_JSON = "/etc/docker/daemon.json"
DAEMON_JSON_OPTION = Option("--daemon-json", "Docker's daemon.json.", kind="path", default=DAEMON_JSON)
# the labels the rules read: roles/comfyui marks its containers with `gpuhost.comfyui`, and each
# instance of a multi-instance deployment with its number and the GPU it was given
CONTAINER_LABELS = ("gpuhost.comfyui", "gpuhost.comfyui.instance", "gpuhost.comfyui.gpu", "gpuhost.comfyui.gpu-uuid")
# the environment variables the rules read
CONTAINER_ENV = ("NVIDIA_VISIBLE_DEVICES",)


@dataclass
class ImageSize:
    reference: str
    size_bytes: int


def image_sizes(client: EngineClient | None) -> list[ImageSize]:
    """The local images, largest first, through the Engine API; none when it cannot be read
    (the docker collector reports an unreachable engine)."""
    if client is None:
        return []
    try:
        listed = client.get("/images/json") or []
    except (EngineUnavailable, EnginePermissionDenied, EngineError, OSError, ValueError):
        return []
    images = []
    for image in listed:
        if not isinstance(image, dict):
            continue
        tags = [t for t in image.get("RepoTags") or [] if t and t != "<none>:<none>"]
        reference = tags[0] if tags else str(image.get("Id", ""))[:19]
        images.append(ImageSize(reference, int(image.get("Size") or 0)))
    images.sort(key=lambda i: i.size_bytes, reverse=True)
    return images


@dataclass
class ContainerGpuAccess:
    id: str
    name: str
    image: str
    state: str  # created, running, restarting, exited, ...
    runtime: str
    # how the container gets GPUs: "device-requests" (--gpus, the legacy hook),
    # "nvidia-runtime" (--runtime=nvidia with NVIDIA_VISIBLE_DEVICES) and/or "cdi"
    gpu_paths: list[str] = field(default_factory=list)
    device_requests: list[dict[str, Any]] = field(default_factory=list)
    cdi_devices: list[str] = field(default_factory=list)
    nvidia_visible_devices: str | None = None
    user: str = ""
    group_add: list[str] = field(default_factory=list)
    restart_count: int = 0
    exit_code: int | None = None
    # only CONTAINER_LABELS
    labels: dict[str, str] = field(default_factory=dict)
    # container port -> [{"HostIp", "HostPort"}] (HostConfig.PortBindings)
    ports: dict[str, list[dict[str, str]]] = field(default_factory=dict)
    network_mode: str = ""
    # /dev/nvidia* nodes given with --device (HostConfig.Devices): they survive a systemd daemon-reload
    device_nodes: list[str] = field(default_factory=list)

    @property
    def uses_gpu(self) -> bool:
        return bool(self.gpu_paths)

    @property
    def uses_legacy_hook(self) -> bool:
        return "device-requests" in self.gpu_paths


@dataclass
class DockerFacts:
    status: SourceStatus = SourceStatus.OK
    error: str = ""
    host: str = ""
    server_version: str = ""
    api_version: str = ""
    runc_version: str = ""
    containerd_version: str = ""
    runtimes: dict[str, str] = field(default_factory=dict)
    # each runtime's binary resolved on this host ("" when it does not exist)
    runtime_binaries: dict[str, str] = field(default_factory=dict)
    default_runtime: str = ""
    cgroup_driver: str = ""
    cgroup_version: str = ""
    storage_driver: str = ""
    cdi_enabled: bool | None = None
    cdi_spec_dirs: list[str] = field(default_factory=list)
    data_root: str = ""
    data_root_location: PathLocation | None = None
    daemon_json_path: str = DAEMON_JSON
    daemon_json: dict[str, Any] | None = None
    daemon_json_error: str = ""
    containers: list[ContainerGpuAccess] = field(default_factory=list)
    # /info DriverStatus, e.g. {"driver-type": "io.containerd.snapshotter.v1"} with the containerd image store
    driver_status: dict[str, str] = field(default_factory=dict)
    rootless: bool = False


def _component_version(version: dict[str, Any], name: str) -> str:
    for component in version.get("Components") or []:
        if str(component.get("Name", "")).lower() == name:
            return str(component.get("Version", ""))
    return ""


def resolve_binary(path: str, root: str = "/") -> str:
    """Where a runtime's binary is on this host, as dockerd would find it ("" if nowhere)."""
    if path.startswith("io.containerd."):
        return path  # a containerd shim name, not a file
    if os.path.isabs(path):
        candidate = os.path.join(root, path.lstrip("/"))
        return path if os.path.isfile(candidate) and os.access(candidate, os.X_OK) else ""
    search = os.environ.get("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    for directory in search.split(os.pathsep):
        candidate = os.path.join(root, directory.lstrip("/"), path)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return os.path.join(directory, path)
    return ""


def read_daemon_json(path: str) -> tuple[dict[str, Any] | None, str]:
    """daemon.json's object ({} when empty), or None and why it cannot be used ("" when absent)."""
    try:
        text = userfile.read_text(path, "", userfile.DAEMON_JSON_MAX)
        if not text.strip():
            return {}, ""
        value = userfile.parse_json(text, path)
    except userfile.UserFileError as exc:
        return None, "" if exc.missing else str(exc)
    if not isinstance(value, dict):
        return None, f"{path}: top level is not an object"
    return value, ""


def gpu_paths_of(inspect: dict[str, Any], runtimes: dict[str, str]) -> ContainerGpuAccess:
    """Classify how one container (an Engine API inspect body) is given GPUs."""
    config = inspect.get("Config") or {}
    host_config = inspect.get("HostConfig") or {}
    state = inspect.get("State") or {}
    env: dict[str, str] = {}
    for item in config.get("Env") or []:
        key, _, value = str(item).partition("=")
        if key in CONTAINER_ENV:
            env[key] = value
    labels: dict[str, Any] = config["Labels"] if isinstance(config.get("Labels"), dict) else {}
    runtime = str(host_config.get("Runtime") or "")
    access = ContainerGpuAccess(
        id=str(inspect.get("Id", ""))[:12],
        name=str(inspect.get("Name", "")).lstrip("/"),
        image=str(config.get("Image", "")),
        state=str(state.get("Status", "")),
        runtime=runtime,
        nvidia_visible_devices=env.get("NVIDIA_VISIBLE_DEVICES"),
        user=str(config.get("User") or ""),
        group_add=[str(g) for g in host_config.get("GroupAdd") or []],
        restart_count=int(inspect.get("RestartCount") or 0),
        exit_code=state.get("ExitCode") if state.get("Status") == "exited" else None,
        labels={key: str(labels[key]) for key in CONTAINER_LABELS if key in labels},
        ports={
            str(k): [{"HostIp": str(b.get("HostIp") or ""), "HostPort": str(b.get("HostPort") or "")}
                     for b in (v or []) if isinstance(b, dict)]
            for k, v in (host_config.get("PortBindings") or {}).items()
        },
        network_mode=str(host_config.get("NetworkMode") or ""),
    )
    for request in host_config.get("DeviceRequests") or []:
        driver = str(request.get("Driver") or "")
        if driver == "cdi":
            access.cdi_devices.extend(str(d) for d in request.get("DeviceIDs") or [])
        else:
            access.device_requests.append(
                {
                    "Driver": driver,
                    "Count": request.get("Count"),
                    "DeviceIDs": request.get("DeviceIDs"),
                    "Capabilities": request.get("Capabilities"),
                }
            )
    for device in host_config.get("Devices") or []:
        host_path = str(device.get("PathOnHost", ""))
        if "=" in host_path and "/" in host_path.split("=")[0]:
            access.cdi_devices.append(host_path)  # a CDI name passed through --device
        elif host_path.startswith("/dev/nvidia"):
            access.device_nodes.append(host_path)
    if access.device_requests:
        access.gpu_paths.append("device-requests")
    nvidia_runtime = runtime == "nvidia" or "nvidia-container-runtime" in runtimes.get(runtime, "")
    visible = access.nvidia_visible_devices
    if nvidia_runtime and visible not in (None, "", "void", "none"):
        access.gpu_paths.append("nvidia-runtime")
    if access.cdi_devices:
        access.gpu_paths.append("cdi")
    return access


def collect_docker(
    client: EngineClient | None = None,
    daemon_json_path: str = DAEMON_JSON,
    root: str = "/",
) -> DockerFacts:
    facts = DockerFacts(daemon_json_path=daemon_json_path)
    daemon_json, facts.daemon_json_error = read_daemon_json(daemon_json_path)
    # proxies and registry mirrors may be URLs with credentials in them
    facts.daemon_json = redact_all(daemon_json)
    try:
        client = client or EngineClient(timeout=5.0)
    except ValueError as exc:
        facts.status, facts.error = SourceStatus.UNREADABLE, str(exc)
        return facts
    facts.host = client.host
    try:
        version = client.get("/version")
        info = client.get("/info")
    except EngineUnavailable as exc:
        facts.status, facts.error = SourceStatus.ABSENT, f"Docker is not running: {exc}"
        return facts
    except EnginePermissionDenied as exc:
        facts.status, facts.error = SourceStatus.UNREADABLE, str(exc)
        return facts
    except (EngineError, OSError, ValueError) as exc:
        facts.status, facts.error = SourceStatus.UNREADABLE, f"Docker Engine API: {exc}"
        return facts

    facts.server_version = str(version.get("Version", ""))
    facts.api_version = str(version.get("ApiVersion", ""))
    facts.runc_version = _component_version(version, "runc") or str(
        (info.get("RuncCommit") or {}).get("ID", "")
    )
    facts.containerd_version = _component_version(version, "containerd")
    facts.runtimes = {
        name: str(spec.get("path") or spec.get("runtimeType") or name)
        for name, spec in (info.get("Runtimes") or {}).items()
    }
    facts.runtime_binaries = {name: resolve_binary(path, root) for name, path in facts.runtimes.items()}
    facts.default_runtime = str(info.get("DefaultRuntime", ""))
    facts.cgroup_driver = str(info.get("CgroupDriver", ""))
    facts.cgroup_version = str(info.get("CgroupVersion", ""))
    facts.storage_driver = str(info.get("Driver", ""))
    facts.driver_status = {
        str(pair[0]): str(pair[1])
        for pair in info.get("DriverStatus") or []
        if isinstance(pair, list) and len(pair) == 2
    }
    facts.rootless = any("name=rootless" in str(option) for option in info.get("SecurityOptions") or [])
    facts.cdi_spec_dirs = [str(d) for d in info.get("CDISpecDirs") or []]
    features = (facts.daemon_json or {}).get("features") or {}
    if "CDISpecDirs" in info:
        facts.cdi_enabled = bool(facts.cdi_spec_dirs)
    elif isinstance(features, dict) and "cdi" in features:
        facts.cdi_enabled = bool(features.get("cdi"))
    facts.data_root = str(info.get("DockerRootDir", ""))
    if facts.data_root and os.path.isabs(facts.data_root):
        facts.data_root_location = locate(facts.data_root, root)

    try:
        listed = client.get("/containers/json", params={"all": True})
        for summary in listed or []:
            if summary.get("State") in ("removing", "dead"):
                continue
            inspect = client.get(f"/containers/{summary['Id']}/json")
            facts.containers.append(gpu_paths_of(inspect, facts.runtimes))
    except (EngineError, EngineUnavailable, OSError, ValueError) as exc:
        facts.error = f"could not list containers: {exc}"
    return facts
