"""CDI specs: fresh or stale against the driver, duplicate, invalid or incomplete, their hooks, and who
writes them (one writer, its refresh units working)."""

from __future__ import annotations

import copy
from pathlib import Path

from gpuhost.facts.cdi import parse_spec
from gpuhost.hostfacts import HostFacts
from gpuhost.model import Severity
from gpuhost.rules import evaluate
from tests.support.paths import FIXTURES
from tests.support.recorded_facts import H100_SPEC, findings_with, found, h100_gpu_facts, one, only, seed_facts


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
    assert findings_with(fresh, "cdi.spec-stale") == []

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


def test_cdi_spec_incomplete_and_missing_hook(h100: HostFacts) -> None:
    text = H100_SPEC.read_text()
    spec = h100.cdi.specs[0]
    assert "/dev/nvidia-uvm" in (spec.device_nodes or []) and spec.hook_paths
    h100.cdi.specs = [parse_spec(spec.path, text.replace("path: /dev/nvidia-uvm\n", "path: /dev/nvidia-uvm-gone\n"))]
    assert "no /dev/nvidia-uvm" in only(h100, "cdi.spec-incomplete").message
    h100.cdi.specs = [spec]
    h100.gpu.gpus.append(copy.deepcopy(h100.gpu.gpus[0]))
    assert "1 GPU device(s) for the 2 NVML sees" in only(h100, "cdi.spec-incomplete").message
    h100.gpu.gpus.pop()
    spec.missing_hooks = spec.hook_paths[:1]
    assert "fork/exec" in only(h100, "cdi.hook-missing").message


def test_cdi_refresh_failed_and_path_inactive(drifted: HostFacts) -> None:
    finding = only(drifted, "cdi.refresh-failed")
    assert "start-limit-hit" in finding.message and "nvidia-cdi-refresh.path is enabled but inactive" in finding.message
    assert "reset-failed" in finding.remedy
    drifted.units.units["nvidia-cdi-refresh.service"].active_state = "inactive"
    drifted.units.units["nvidia-cdi-refresh.service"].result = "success"
    drifted.units.units["nvidia-cdi-refresh.path"].active_state = "active"
    assert found(drifted, "cdi.refresh-failed") == []
