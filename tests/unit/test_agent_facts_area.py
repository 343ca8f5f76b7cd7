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


def test_boot_area_names_the_next_kernel_and_its_nvidia_modules(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """What nvidia_driver's next-kernel step reads: a newer kernel installed, built for or not."""
    (tmp_path / "proc/sys/kernel").mkdir(parents=True)
    (tmp_path / "proc/sys/kernel/osrelease").write_text("6.1.0-37-cloud-amd64\n")
    (tmp_path / "boot").mkdir()
    for release in ("6.1.0-37-cloud-amd64", "6.1.0-40-cloud-amd64"):
        (tmp_path / "lib/modules" / release).mkdir(parents=True)
        (tmp_path / "boot" / f"vmlinuz-{release}").write_bytes(b"")
    assert main(["facts", "--root", str(tmp_path), "--area", "boot"]) == 0
    boot = json.loads(capsys.readouterr().out)["boot"]
    assert (boot["running"], boot["next"]) == ("6.1.0-37-cloud-amd64", "6.1.0-40-cloud-amd64")
    assert boot["next_nvidia_modules"] == []

    updates = tmp_path / "lib/modules/6.1.0-40-cloud-amd64/updates/dkms"
    updates.mkdir(parents=True)
    (updates / "nvidia.ko.xz").write_bytes(b"\x00")
    assert main(["facts", "--root", str(tmp_path), "--area", "boot"]) == 0
    assert json.loads(capsys.readouterr().out)["boot"]["next_nvidia_modules"] == ["updates/dkms/nvidia.ko.xz"]
