"""Rules on recorded facts: the seed's failing host, its safe variants, the H100 readings."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from gpuhost.check import report_for
from gpuhost.facts.cdi import parse_spec
from gpuhost.facts.devices import DeviceNode
from gpuhost.facts.docker import gpu_paths_of
from gpuhost.facts.gpu import GpuDevice, GpuFacts, parse_proc_driver_version
from gpuhost.facts.source import SourceStatus
from gpuhost.hostfacts import HostFacts
from gpuhost.model import ExitCode, Finding, Severity, from_jsonable, to_jsonable
from gpuhost.rules import RuleOptions, RunAs, evaluate
from tests.support.paths import FIXTURES

SEED = FIXTURES / "facts" / "seed-al2023-exposed.json"
H100_SPEC = FIXTURES / "cdi" / "nvidia-h100-580.159.04.yaml"


def seed_facts() -> HostFacts:
    return from_jsonable(HostFacts, json.loads(SEED.read_text()))


def by_id(findings: list[Finding], finding_id: str) -> list[Finding]:
    return [f for f in findings if f.id == finding_id]


def one(findings: list[Finding], finding_id: str) -> Finding:
    matches = by_id(findings, finding_id)
    assert len(matches) == 1, [f.to_dict() for f in findings]
    return matches[0]


def safe_container(runtime: str = "nvidia", **host_config: Any) -> dict[str, Any]:
    return {
        "Id": "a" * 64,
        "Name": "/comfyui",
        "State": {"Status": "running"},
        "Config": {"Image": "comfyui", "Env": ["NVIDIA_VISIBLE_DEVICES=all"], "User": "1000:1000"},
        "HostConfig": {"Runtime": runtime, "GroupAdd": ["0"], **host_config},
    }


def test_seed_host_is_exposed_with_the_remedy() -> None:
    facts = seed_facts()
    report = report_for(facts, RuleOptions())
    exposure = one(report.findings, "bpf.exposure")
    assert exposure.severity is Severity.FAIL
    assert "EXPOSED" in exposure.message
    assert "container comfyui (created) uses --gpus" in exposure.message
    assert "--runtime=nvidia" in exposure.remedy
    assert "nvidia.com/gpu=all" in exposure.remedy
    assert exposure.evidence["bpf_jit_harden"] == 2
    assert exposure.evidence["cgroup_version"] == 2
    assert exposure.evidence["runc"] == "1.3.4"
    assert exposure.evidence["toolkit"] == "1.18.1"
    container = one(report.findings, "bpf.gpus-container")
    assert container.severity is Severity.FAIL
    assert container.evidence["container"] == "comfyui"
    assert "--runtime=nvidia" in container.remedy
    assert report.exit_code is ExitCode.FAILING
    assert {"bpf.exposure", "bpf.gpus-container"} <= set(report.to_dict()["failing"])


def test_seed_facts_round_trip_through_json() -> None:
    facts = seed_facts()
    assert to_jsonable(from_jsonable(HostFacts, to_jsonable(facts))) == to_jsonable(facts)
    assert facts.docker.containers[0].uses_legacy_hook


@pytest.mark.parametrize(
    "inspect, path",
    [
        (safe_container(), "nvidia-runtime"),
        (safe_container("runc", DeviceRequests=[{"Driver": "cdi", "DeviceIDs": ["nvidia.com/gpu=all"]}]), "cdi"),
    ],
    ids=["runtime-nvidia", "cdi-device"],
)
def test_seed_host_recreated_on_a_safe_path_is_not_exposed(inspect: dict[str, Any], path: str) -> None:
    facts = seed_facts()
    facts.docker.containers = [gpu_paths_of(inspect, facts.docker.runtimes)]
    assert facts.docker.containers[0].gpu_paths == [path]
    findings = evaluate(facts)
    exposure = one(findings, "bpf.exposure")
    assert exposure.severity is Severity.OK
    assert "kernel conditions are present" in exposure.message
    assert by_id(findings, "bpf.gpus-container") == []


def test_gpus_container_without_hardened_jit_is_a_warning_only() -> None:
    facts = seed_facts()
    facts.kernel.bpf_jit_harden = 0
    findings = evaluate(facts)
    assert one(findings, "bpf.exposure").severity is Severity.OK
    assert "not hardened" in one(findings, "bpf.exposure").message
    warning = one(findings, "bpf.gpus-container")
    assert warning.severity is Severity.WARN


def test_hybrid_cgroup_host_is_not_exposed() -> None:
    facts = seed_facts()
    facts.kernel.cgroup_mode, facts.kernel.cgroup_version = "hybrid", 1
    exposure = one(evaluate(facts), "bpf.exposure")
    assert exposure.severity is Severity.OK
    assert "v1 devices controller" in exposure.message


def test_legacy_mode_alone_exposes_a_hardened_host() -> None:
    facts = seed_facts()
    facts.docker.containers = []
    facts.toolkit.mode = "legacy"
    findings = evaluate(facts)
    assert one(findings, "bpf.exposure").severity is Severity.FAIL
    assert 'mode = "legacy"' in one(findings, "bpf.exposure").message
    assert one(findings, "toolkit.mode").severity is Severity.FAIL


def test_unknown_kernel_facts_give_a_warning_not_a_verdict() -> None:
    facts = seed_facts()
    facts.kernel.status = SourceStatus.UNREADABLE
    facts.kernel.error = "cannot read /proc/sys/kernel/osrelease"
    assert one(evaluate(facts), "bpf.exposure").severity is Severity.WARN


def test_old_toolkit_and_cdi_mode_warn() -> None:
    facts = seed_facts()
    facts.toolkit.version = "1.17.8"
    facts.toolkit.mode = "cdi"
    findings = evaluate(facts)
    assert one(findings, "toolkit.installed").severity is Severity.WARN
    assert "1.18" in one(findings, "toolkit.installed").message
    assert one(findings, "toolkit.mode").severity is Severity.WARN
    assert "#1246" in one(findings, "toolkit.mode").message


def test_missing_nvidia_runtime_and_missing_binary_fail() -> None:
    facts = seed_facts()
    facts.docker.runtimes.pop("nvidia")
    assert one(evaluate(facts), "docker.nvidia-runtime").severity is Severity.FAIL
    facts = seed_facts()
    facts.docker.runtime_binaries["nvidia"] = ""
    finding = one(evaluate(facts), "docker.nvidia-runtime")
    assert finding.severity is Severity.FAIL
    assert "does not exist" in finding.message


def test_docker_25_without_cdi_feature_warns() -> None:
    facts = seed_facts()
    assert one(evaluate(facts), "docker.cdi").severity is Severity.WARN
    facts.docker.cdi_enabled = True
    assert one(evaluate(facts), "docker.cdi").severity is Severity.OK


def test_data_root_on_root_ebs_and_low_free_space() -> None:
    facts = seed_facts()
    findings = evaluate(facts, RuleOptions(min_free_gib=200))
    assert one(findings, "storage.data-root-ebs").severity is Severity.WARN
    assert "vol-0a1b2c3d4e5f60718" in one(findings, "storage.data-root-ebs").message
    free = one(findings, "storage.data-root-free")
    assert free.severity is Severity.FAIL
    assert "180.0 GiB free" in free.message
    assert by_id(evaluate(facts, RuleOptions(min_free_gib=100)), "storage.data-root-free") == []


def h100_gpu_facts(shared_dir: Path) -> GpuFacts:
    """The recorded NVML readings of the H100 machine, as the collector would report them."""
    reading = json.loads((shared_dir / "fixtures" / "gpu" / "nvml-h100-580.159.04.json").read_text())
    proc = (shared_dir / "fixtures" / "gpu" / "proc-driver-nvidia-version-h100.txt").read_text()
    gpus = []
    for index, gpu in enumerate(reading["gpus"]):
        rows = gpu["remapped_rows"]
        gpus.append(
            GpuDevice(
                index=index,
                name=gpu["name"],
                uuid=gpu["uuid"],
                pci_bus_id=gpu["pci"],
                memory_total_bytes=gpu["mem_total"],
                memory_used_bytes=gpu["mem_used"],
                persistence_mode=bool(gpu["persistence"]),
                ecc_enabled=bool(gpu["ecc_current"][0]),
                ecc_pending=bool(gpu["ecc_current"][1]),
                remapped_rows_correctable=rows[0],
                remapped_rows_uncorrectable=rows[1],
                remapped_rows_pending=bool(rows[2]),
                remapped_rows_failure=bool(rows[3]),
                temperature_c=gpu["temp"],
                compute_capability=f"{gpu['cc'][0]}.{gpu['cc'][1]}",
                mig_enabled=bool(gpu["mig"][0]),
            )
        )
    cuda = reading["cuda"]
    return GpuFacts(
        driver_version=reading["driver"],
        cuda_driver_version=f"{cuda // 1000}.{(cuda % 1000) // 10}",
        nvml_version=reading["nvml"],
        gpus=gpus,
        proc_driver=parse_proc_driver_version(proc),
    )


def test_h100_readings_are_healthy(shared_dir: Path) -> None:
    facts = seed_facts()
    facts.gpu = h100_gpu_facts(shared_dir)
    assert facts.gpu.proc_driver is not None
    assert facts.gpu.proc_driver.version == "580.159.04"
    assert facts.gpu.proc_driver.open_kernel_module is True
    findings = evaluate(facts)
    driver = one(findings, "gpu.driver")
    assert driver.severity is Severity.OK
    assert driver.message == "driver 580.159.04 (CUDA 13.0), 1 GPU(s): NVIDIA H100 80GB HBM3"
    assert [f for f in findings if f.area == "gpu" and f.severity is not Severity.OK] == []


def test_h100_with_a_failed_remap_and_persistence_off(shared_dir: Path) -> None:
    facts = seed_facts()
    facts.gpu = h100_gpu_facts(shared_dir)
    facts.gpu.gpus[0].remapped_rows_failure = True
    facts.gpu.gpus[0].persistence_mode = False
    findings = evaluate(facts)
    assert one(findings, "gpu.remapped-rows").severity is Severity.FAIL
    assert one(findings, "gpu.persistence").severity is Severity.WARN


def test_driver_library_mismatch_fails(shared_dir: Path) -> None:
    facts = seed_facts()
    facts.gpu = h100_gpu_facts(shared_dir)
    assert facts.gpu.proc_driver is not None
    facts.gpu.proc_driver.version = "580.126.09"
    finding = one(evaluate(facts), "gpu.driver")
    assert finding.severity is Severity.FAIL
    assert "mismatch" in finding.message


def test_h100_cdi_spec_is_fresh_then_stale_after_a_driver_upgrade(shared_dir: Path) -> None:
    facts = seed_facts()
    facts.gpu = h100_gpu_facts(shared_dir)
    spec = parse_spec("/var/run/cdi/nvidia.yaml", H100_SPEC.read_text())
    assert spec.valid, spec.error
    assert spec.devices == ["0", "GPU-60779f43-f7f2-8149-8c59-933b6717452f", "all"]
    assert spec.driver_version == "580.159.04"
    facts.cdi.specs = [spec]
    fresh = evaluate(facts)
    assert one(fresh, "cdi.spec").severity is Severity.OK
    assert by_id(fresh, "cdi.spec-stale") == []

    facts.gpu.driver_version = "580.172.08"
    assert facts.gpu.proc_driver is not None
    facts.gpu.proc_driver.version = "580.172.08"
    stale = one(evaluate(facts), "cdi.spec-stale")
    assert stale.severity is Severity.FAIL
    assert stale.evidence == {
        "path": "/var/run/cdi/nvidia.yaml",
        "spec_driver": "580.159.04",
        "running_driver": "580.172.08",
    }


def test_duplicate_and_invalid_specs_fail() -> None:
    facts = seed_facts()
    text = H100_SPEC.read_text()
    facts.cdi.specs = [parse_spec("/etc/cdi/nvidia.yaml", text), parse_spec("/var/run/cdi/nvidia.yaml", text)]
    duplicate = one(evaluate(facts), "cdi.spec-duplicate")
    assert duplicate.severity is Severity.FAIL
    files = ["/etc/cdi/nvidia.yaml", "/var/run/cdi/nvidia.yaml"]
    assert duplicate.evidence["duplicates"]["nvidia.com/gpu=all"] == files

    broken = parse_spec("/etc/cdi/broken.yaml", (FIXTURES / "cdi" / "truncated.yaml").read_text())
    assert not broken.valid
    assert broken.error.startswith("invalid YAML")
    facts.cdi.specs = [broken]
    invalid = one(evaluate(facts), "cdi.spec-invalid")
    assert invalid.severity is Severity.FAIL
    assert one(evaluate(facts), "cdi.spec-missing").severity is Severity.FAIL


def test_two_cdi_writers_fail() -> None:
    facts = seed_facts()
    facts.toolkit.cdi_writer_units[2].installed = True
    facts.toolkit.cdi_writer_units[2].enabled = True
    finding = one(evaluate(facts), "cdi.writers")
    assert finding.severity is Severity.FAIL
    assert "gpuhost-cdi-generate.service" in finding.message


def restricted_nodes() -> list[DeviceNode]:
    return [
        DeviceNode(path=p, uid=0, gid=27, group="video", mode="0660", is_char_device=True)
        for p in ("/dev/nvidia0", "/dev/nvidiactl", "/dev/nvidia-uvm")
    ]


def test_container_without_the_device_group_cannot_open_the_nodes() -> None:
    facts = seed_facts()
    facts.devices.nodes = restricted_nodes()
    inspect = safe_container()
    inspect["HostConfig"]["GroupAdd"] = []
    facts.docker.containers = [gpu_paths_of(inspect, facts.docker.runtimes)]
    finding = one(evaluate(facts), "devices.permissions")
    assert finding.severity is Severity.FAIL
    assert "Insufficient Permissions" in finding.message
    assert "--group-add 27" in finding.remedy

    inspect["HostConfig"]["GroupAdd"] = ["27"]
    facts.docker.containers = [gpu_paths_of(inspect, facts.docker.runtimes)]
    ok = one(evaluate(facts), "devices.permissions")
    assert ok.severity is Severity.OK
    assert "gid 27 (video) mode 0660" in ok.message


def test_run_as_identity_is_checked() -> None:
    facts = seed_facts()
    facts.docker.containers = []
    facts.devices.nodes = restricted_nodes()
    denied = one(evaluate(facts, RuleOptions(run_as=RunAs.parse("1000:1000"))), "devices.permissions")
    assert denied.severity is Severity.FAIL
    allowed = one(evaluate(facts, RuleOptions(run_as=RunAs.parse("1000:1000,27"))), "devices.permissions")
    assert allowed.severity is Severity.OK
    with pytest.raises(ValueError, match="UID"):
        RunAs.parse("comfy:video")


def test_named_container_user_is_a_warning() -> None:
    facts = seed_facts()
    facts.devices.nodes = restricted_nodes()
    inspect = copy.deepcopy(safe_container())
    inspect["Config"]["User"] = "comfy"
    facts.docker.containers = [gpu_paths_of(inspect, facts.docker.runtimes)]
    assert one(evaluate(facts), "devices.permissions").severity is Severity.WARN


def test_nodes_missing_while_nvml_sees_gpus(shared_dir: Path) -> None:
    facts = seed_facts()
    facts.gpu = h100_gpu_facts(shared_dir)
    facts.devices.nodes = []
    assert one(evaluate(facts), "devices.nodes").severity is Severity.FAIL


def test_strict_turns_warnings_into_exit_1() -> None:
    facts = seed_facts()
    facts.docker.containers = []
    facts.docker.cdi_enabled = False
    report = report_for(facts, RuleOptions(), strict=False)
    assert report.verdict is Severity.WARN
    assert report.exit_code is ExitCode.OK
    assert report_for(facts, RuleOptions(), strict=True).exit_code is ExitCode.FAILING
