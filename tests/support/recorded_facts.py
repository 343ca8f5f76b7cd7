"""Host facts for the rule tests, and the helpers that pick findings by id.

The seed host (tests/fixtures/facts/seed-al2023-exposed.json), the recorded H100 readings
(../shared/fixtures/gpu) and the constructed p5 tree (tests/fixtures/hosts/p5-nvswitch-drift). The
fixtures `h100` and `drifted` are registered for every test (tests/conftest.py); each test changes
them the smallest way that shows its finding.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from gpuhost.facts.boot import collect_boot
from gpuhost.facts.cdi import parse_spec
from gpuhost.facts.gpu import GpuDevice, GpuFacts, parse_proc_driver_version
from gpuhost.facts.kmsg import collect_kmsg
from gpuhost.facts.packages import collect_packages
from gpuhost.facts.platform import collect_platform
from gpuhost.facts.systemd import collect_units
from gpuhost.hostfacts import HostFacts
from gpuhost.model import Finding, from_jsonable
from gpuhost.rules import RuleOptions, evaluate
from tests.support.paths import FIXTURES

SEED = FIXTURES / "facts" / "seed-al2023-exposed.json"
H100_SPEC = FIXTURES / "cdi" / "nvidia-h100-580.159.04.yaml"
DRIFT = FIXTURES / "hosts" / "p5-nvswitch-drift"


def seed_facts() -> HostFacts:
    return from_jsonable(HostFacts, json.loads(SEED.read_text()))


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


def safe_container(runtime: str = "nvidia", **host_config: Any) -> dict[str, Any]:
    """The Engine API's inspect body of a ComfyUI container on a BPF-safe GPU path."""
    return {
        "Id": "a" * 64,
        "Name": "/comfyui",
        "State": {"Status": "running"},
        "Config": {"Image": "comfyui", "Env": ["NVIDIA_VISIBLE_DEVICES=all"], "User": "1000:1000"},
        "HostConfig": {"Runtime": runtime, "GroupAdd": ["0"], **host_config},
    }


@pytest.fixture
def h100(shared_dir: Path) -> HostFacts:
    """The seed host with the recorded H100 readings and a fresh CDI spec."""
    facts = seed_facts()
    facts.gpu = h100_gpu_facts(shared_dir)
    facts.cdi.specs = [parse_spec("/var/run/cdi/nvidia.yaml", H100_SPEC.read_text())]
    return facts


@pytest.fixture
def drifted(h100: HostFacts) -> HostFacts:
    """The same host with the p5 tree's kernel log, units, packages, boot files and PCI functions."""
    h100.kmsg = collect_kmsg(str(DRIFT))
    h100.units = collect_units(str(DRIFT))
    h100.packages = collect_packages(str(DRIFT))
    h100.boot = collect_boot(str(DRIFT), "6.8.0-1029-aws")
    h100.platform = collect_platform(str(DRIFT), str(DRIFT / "dev"))
    assert h100.gpu.proc_driver is not None
    h100.gpu.proc_driver.version = h100.gpu.driver_version = "580.126.09"
    return h100


def findings_with(findings: list[Finding], finding_id: str) -> list[Finding]:
    return [f for f in findings if f.id == finding_id]


def one(findings: list[Finding], finding_id: str) -> Finding:
    """The one finding with this id (the test fails, listing them all, when there is none or several)."""
    matches = findings_with(findings, finding_id)
    assert len(matches) == 1, [f.to_dict() for f in findings]
    return matches[0]


def found(facts: HostFacts, finding_id: str) -> list[Finding]:
    """The findings with this id that the rules give for these facts, with the default options."""
    return findings_with(evaluate(facts, RuleOptions()), finding_id)


def only(facts: HostFacts, finding_id: str) -> Finding:
    """The one finding with this id that the rules give for these facts, with the default options."""
    return one(evaluate(facts, RuleOptions()), finding_id)
