"""`gpuhost-agent facts --area`: what the roles read, one collector at a time."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gpuhost.agent import main


def test_gpu_area_reads_a_recorded_proc_driver_version(shared_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    recorded = shared_dir / "fixtures" / "gpu" / "proc-driver-nvidia-version-h100.txt"
    assert main(["facts", "--area", "gpu", "--proc-driver-version", str(recorded)]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert list(facts) == ["gpu"]
    assert facts["gpu"]["proc_driver"]["version"] == "580.159.04"
    assert facts["gpu"]["proc_driver"]["open_kernel_module"] is True


def test_missing_proc_file_means_no_loaded_module(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["facts", "--area", "gpu", "--proc-driver-version", str(tmp_path / "absent")]) == 0
    assert json.loads(capsys.readouterr().out)["gpu"]["proc_driver"] is None


def test_several_areas_in_one_call(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["facts", "--area", "toolkit", "--area", "cdi"]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert set(facts) == {"toolkit", "cdi"}
    assert [u["name"] for u in facts["toolkit"]["cdi_writer_units"]] == [
        "nvidia-cdi-refresh.path",
        "nvidia-cdi-refresh.service",
        "gpuhost-cdi-generate.service",
    ]
    assert facts["cdi"]["spec_dirs"] == ["/etc/cdi", "/var/run/cdi"]


def test_unknown_area_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["facts", "--area", "bogus"]) == 2
