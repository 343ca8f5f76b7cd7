"""Docker engine, nvidia runtime registration and CDI support."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gpuhost.facts.source import SourceStatus
from gpuhost.facts.toolkit import version_tuple
from gpuhost.model import Finding, Severity
from gpuhost.rules.bpf import LIVE_STATES, legacy_hook_containers

if TYPE_CHECKING:
    from gpuhost.hostfacts import HostFacts
    from gpuhost.rules.options import RuleOptions

CDI_MIN_DOCKER = (25, 0)


def engine(facts: HostFacts, options: RuleOptions) -> list[Finding]:
    docker = facts.docker
    evidence = {"host": docker.host, "daemon_json": docker.daemon_json_path}
    findings = []
    if docker.status is SourceStatus.ABSENT:
        findings.append(
            Finding(
                "docker.engine",
                "docker",
                Severity.FAIL,
                docker.error or "Docker is not running",
                "Install and start Docker (roles/docker), then `systemctl enable --now docker`.",
                evidence,
            )
        )
    elif docker.status is SourceStatus.UNREADABLE:
        findings.append(
            Finding(
                "docker.engine",
                "docker",
                Severity.FAIL,
                f"the Docker Engine API could not be read: {docker.error}",
                "Run gpuhost as root or as a member of the docker group.",
                evidence,
            )
        )
    else:
        evidence.update(
            {
                "version": docker.server_version,
                "runc": docker.runc_version,
                "data_root": docker.data_root,
                "storage_driver": docker.storage_driver,
                "cgroup_driver": docker.cgroup_driver,
            }
        )
        findings.append(
            Finding(
                "docker.engine",
                "docker",
                Severity.OK,
                f"Docker {docker.server_version} (API {docker.api_version}), runc {docker.runc_version}, "
                f"default runtime {docker.default_runtime}",
                "",
                evidence,
            )
        )
    if docker.daemon_json_error:
        findings.append(
            Finding(
                "docker.daemon-json",
                "docker",
                Severity.FAIL,
                f"dockerd will refuse to start with this configuration: {docker.daemon_json_error}",
                "Fix the JSON syntax by hand (gpuhost never rewrites a file it cannot parse), then restart docker.",
                {"path": docker.daemon_json_path},
            )
        )
    return findings


def nvidia_runtime(facts: HostFacts, options: RuleOptions) -> list[Finding]:
    docker = facts.docker
    if docker.status is not SourceStatus.OK:
        return []
    candidates = {
        name: path
        for name, path in docker.runtimes.items()
        if name == "nvidia" or "nvidia-container-runtime" in path
    }
    evidence = {"runtimes": docker.runtimes, "resolved": docker.runtime_binaries}
    if not candidates:
        return [
            Finding(
                "docker.nvidia-runtime",
                "docker",
                Severity.FAIL,
                "the nvidia runtime is not registered with Docker: the only GPU path left is --gpus, "
                "the legacy hook behind the BPF device-filter bug",
                "Install the NVIDIA Container Toolkit and register runtimes.nvidia in daemon.json "
                "(roles/nvidia_container_toolkit), then restart docker.",
                evidence,
            )
        ]
    findings = []
    for name, path in sorted(candidates.items()):
        if not docker.runtime_binaries.get(name):
            findings.append(
                Finding(
                    "docker.nvidia-runtime",
                    "docker",
                    Severity.FAIL,
                    f"runtime {name!r} points at {path}, which does not exist on this host: "
                    f"`docker run --runtime={name}` fails",
                    "Reinstall nvidia-container-toolkit-base or fix runtimes.nvidia.path in daemon.json.",
                    evidence,
                )
            )
        else:
            findings.append(
                Finding(
                    "docker.nvidia-runtime",
                    "docker",
                    Severity.OK,
                    f"runtime {name!r} -> {docker.runtime_binaries[name]}",
                    "",
                    evidence,
                )
            )
    return findings


def cdi_feature(facts: HostFacts, options: RuleOptions) -> list[Finding]:
    docker = facts.docker
    if docker.status is not SourceStatus.OK or not docker.server_version:
        return []
    evidence = {"version": docker.server_version, "cdi_enabled": docker.cdi_enabled, "spec_dirs": docker.cdi_spec_dirs}
    if version_tuple(docker.server_version)[:2] < CDI_MIN_DOCKER:
        return [
            Finding(
                "docker.cdi",
                "docker",
                Severity.OK,
                f"Docker {docker.server_version} predates CDI device requests (needs >= 25): "
                "GPU containers use --runtime=nvidia",
                "",
                evidence,
            )
        ]
    if not docker.cdi_enabled:
        return [
            Finding(
                "docker.cdi",
                "docker",
                Severity.WARN,
                f"Docker {docker.server_version} supports CDI but features.cdi is not enabled: "
                "`--device nvidia.com/gpu=all` is refused",
                'Set "features": {"cdi": true} in /etc/docker/daemon.json (roles/nvidia_container_toolkit '
                "merges it without dropping other features), then restart docker.",
                evidence,
            )
        ]
    return [Finding("docker.cdi", "docker", Severity.OK, "CDI is enabled in Docker", "", evidence)]


def cgroup_reload(facts: HostFacts, options: RuleOptions) -> list[Finding]:
    """With the systemd cgroup driver, `systemctl daemon-reload` re-applies each container scope's device
    rules from what systemd knows; GPUs a hook added behind its back are dropped unless /dev/char links
    let systemd resolve them (NVIDIA's troubleshooting guide)."""
    docker = facts.docker
    if docker.status is not SourceStatus.OK or docker.cgroup_driver != "systemd":
        return []
    hook_mode = facts.toolkit.mode == "legacy"
    legacy = {id(c) for c in legacy_hook_containers(facts)}
    exposed = []
    for container in docker.containers:
        if container.state not in LIVE_STATES or container.device_nodes:
            continue
        if id(container) in legacy:
            exposed.append(f"{container.name} (--gpus)")
        elif hook_mode and "nvidia-runtime" in container.gpu_paths:
            exposed.append(f"{container.name} (--runtime=nvidia in legacy mode)")
    if not exposed:
        return []
    platform = facts.platform
    if platform.nvidia_nodes and not platform.char_links_missing:
        return []  # systemd can resolve every node: the reload keeps them
    known = bool(platform.nvidia_nodes)
    links = (
        f"/dev/char links are missing for {', '.join(platform.char_links_missing)}" if known
        else "whether /dev/char links exist for /dev/nvidia* is unknown (no nodes seen)"
    )
    return [
        Finding(
            "docker.cgroup-reload",
            "docker",
            Severity.FAIL if known else Severity.WARN,
            f"Docker uses the systemd cgroup driver and containers {', '.join(exposed)} got their GPUs from the "
            f"legacy hook without the device nodes in HostConfig.Devices; {links}: after any `systemctl "
            "daemon-reload` (apt runs them) they fail with `Failed to initialize NVML: Unknown Error`",
            "Recreate them on the CDI path (--runtime=nvidia with mode = \"auto\", or --device nvidia.com/gpu=all; "
            "roles/comfyui does), or create the links: `nvidia-ctk system create-dev-char-symlinks --create-all`.",
            {
                "cgroup_driver": docker.cgroup_driver,
                "containers": exposed,
                "char_links_missing": platform.char_links_missing,
                "runtime_mode": facts.toolkit.mode,
            },
        )
    ]
