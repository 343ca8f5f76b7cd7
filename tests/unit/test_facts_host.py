"""Kernel, GPU, device-node, toolkit and CDI collectors on captured trees and on this machine."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import pytest

from gpuhost.facts.cdi import collect_cdi
from gpuhost.facts.devices import collect_devices
from gpuhost.facts.dpkg import parse_status
from gpuhost.facts.gpu import collect_gpu, parse_proc_driver_version
from gpuhost.facts.kernel import cgroup_mode_from_mountinfo, collect_kernel
from gpuhost.facts.packages import collect_packages
from gpuhost.facts.source import SourceStatus
from gpuhost.facts.storage import collect_block_devices, locate
from gpuhost.facts.toolkit import collect_toolkit
from tests.support.paths import FIXTURES, REPO, nvidia_gpu_present

CAPTURED = FIXTURES / "hosts" / "debian12-hybrid"
UNIFIED_MOUNTINFO = (
    "25 1 259:1 / / rw,noatime shared:1 - xfs /dev/nvme0n1p1 rw,attr2,inode64\n"
    "30 25 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate\n"
)


def test_kernel_collector_on_the_captured_tree() -> None:
    facts = collect_kernel(str(CAPTURED))
    assert facts.status is SourceStatus.OK
    assert facts.release == (CAPTURED / "proc/sys/kernel/osrelease").read_text().strip()
    assert facts.os_id == "debian"
    assert facts.os_version_id == "12"
    assert facts.cgroup_mode == "hybrid"
    assert facts.cgroup_version == 1
    assert facts.bpf_jit_harden == 0
    assert facts.jit_hardened is False


def test_kernel_collector_on_a_unified_hardened_tree(tmp_path: Path) -> None:
    root = tmp_path / "root"
    shutil.copytree(CAPTURED, root, symlinks=True)
    (root / "proc/self/mountinfo").write_text(UNIFIED_MOUNTINFO)
    (root / "proc/sys/net/core/bpf_jit_harden").write_text("2\n")
    (root / "proc/sys/net/core/bpf_jit_enable").write_text("1\n")
    facts = collect_kernel(str(root))
    assert (facts.cgroup_mode, facts.cgroup_version, facts.bpf_jit_harden) == ("unified", 2, 2)
    assert facts.jit_hardened is True


def test_cgroup_modes_from_mountinfo() -> None:
    assert cgroup_mode_from_mountinfo(UNIFIED_MOUNTINFO) == "unified"
    captured = (CAPTURED / "proc/self/mountinfo").read_text()
    assert cgroup_mode_from_mountinfo(captured) == "hybrid"
    legacy = "\n".join(line for line in captured.splitlines() if "cgroup2" not in line)
    assert cgroup_mode_from_mountinfo(legacy) == "legacy"


def test_missing_proc_is_unreadable_not_a_traceback(tmp_path: Path) -> None:
    facts = collect_kernel(str(tmp_path))
    assert facts.status is SourceStatus.UNREADABLE
    assert "osrelease" in facts.error


def test_storage_on_the_captured_tree() -> None:
    devices = {d.name: d for d in collect_block_devices(str(CAPTURED))}
    assert "vda" in devices
    location = locate("/var/lib/docker", str(CAPTURED))
    assert location.mountpoint == "/var/lib/docker"
    assert location.fstype == "ext4"
    assert location.device == "vda"
    assert location.on_root_disk is True


def test_proc_driver_version_of_the_h100(shared_dir: Path) -> None:
    text = (shared_dir / "fixtures/gpu/proc-driver-nvidia-version-h100.txt").read_text()
    parsed = parse_proc_driver_version(text)
    assert parsed.version == "580.159.04"
    assert parsed.open_kernel_module is True


@pytest.mark.skipif(nvidia_gpu_present(), reason="this machine has an NVIDIA driver")
def test_nvml_without_a_driver_is_absent() -> None:
    facts = collect_gpu("/")
    assert facts.status is SourceStatus.ABSENT
    assert "no NVIDIA driver" in facts.error
    assert facts.gpus == []


@pytest.mark.gpu
def test_nvml_on_a_real_gpu(shared_dir: Path) -> None:
    facts = collect_gpu("/")
    assert facts.status is SourceStatus.OK, facts.error
    assert facts.gpus, "NVML listed no GPU"
    assert facts.driver_version.count(".") >= 1
    assert facts.proc_driver is not None and facts.proc_driver.version == facts.driver_version
    for gpu in facts.gpus:
        assert gpu.uuid.startswith("GPU-")
        assert gpu.memory_total_bytes and gpu.memory_total_bytes > 0
        assert gpu.pci_bus_id.count(":") == 2
    nodes = collect_devices("/dev").nodes
    assert any(n.path == "/dev/nvidiactl" for n in nodes)


def test_device_nodes_and_their_permissions(tmp_path: Path) -> None:
    dev = tmp_path / "dev"
    dev.mkdir()
    os.mknod(dev / "nvidia0", 0o660 | stat.S_IFCHR, os.makedev(195, 0))
    os.chown(dev / "nvidia0", 0, 44)
    os.chmod(dev / "nvidia0", 0o660)
    os.mknod(dev / "nvidiactl", 0o666 | stat.S_IFCHR, os.makedev(195, 255))
    os.chmod(dev / "nvidiactl", 0o666)
    (dev / "null").touch()
    nodes = {Path(n.path).name: n for n in collect_devices(str(dev)).nodes}
    assert set(nodes) == {"nvidia0", "nvidiactl"}
    assert nodes["nvidia0"].gid == 44 and nodes["nvidia0"].mode == "0660" and nodes["nvidia0"].is_char_device
    assert not nodes["nvidia0"].allows(1000, [1000])
    assert nodes["nvidia0"].allows(1000, [1000, 44])
    assert nodes["nvidiactl"].allows(1000, [1000])


def test_toolkit_facts_from_a_tree(tmp_path: Path) -> None:
    (tmp_path / "etc/nvidia-container-runtime").mkdir(parents=True)
    (tmp_path / "etc/nvidia-container-runtime/config.toml").write_text(
        '#accept-nvidia-visible-devices-as-volume-mounts = false\n'
        '[nvidia-container-runtime]\nlog-level = "info"\nmode = "legacy"\nruntimes = ["runc", "crun"]\n'
    )
    (tmp_path / "var/lib/dpkg").mkdir(parents=True)
    (tmp_path / "var/lib/dpkg/status").write_text(
        "Package: nvidia-container-toolkit-base\nStatus: install ok installed\nVersion: 1.20.0-1\n\n"
        "Package: libnvidia-container-tools\nStatus: deinstall ok config-files\nVersion: 1.17.8-1\n"
    )
    (tmp_path / "etc/systemd/system/multi-user.target.wants").mkdir(parents=True)
    (tmp_path / "lib/systemd/system").mkdir(parents=True)
    (tmp_path / "lib/systemd/system/nvidia-cdi-refresh.path").write_text("[Path]\n")
    os.symlink(
        "/lib/systemd/system/nvidia-cdi-refresh.path",
        tmp_path / "etc/systemd/system/multi-user.target.wants/nvidia-cdi-refresh.path",
    )
    facts = collect_toolkit(str(tmp_path), path="/usr/bin")
    assert facts.version == "1.20.0"
    assert facts.packages == {"nvidia-container-toolkit-base": "1.20.0-1"}
    assert facts.mode == "legacy"
    assert facts.config["nvidia-container-runtime"]["runtimes"] == ["runc", "crun"]
    units = {u.name: u for u in facts.cdi_writer_units}
    assert units["nvidia-cdi-refresh.path"].installed and units["nvidia-cdi-refresh.path"].enabled
    assert not units["gpuhost-cdi-generate.service"].installed


def test_dpkg_status_ignores_removed_packages() -> None:
    text = "Package: nvidia-container-toolkit\nStatus: deinstall ok config-files\nVersion: 1.17.0-1\n"
    assert parse_status(text) == {}


def test_a_held_package_counts_as_installed_for_both_collectors(tmp_path: Path) -> None:
    (tmp_path / "var/lib/dpkg").mkdir(parents=True)
    (tmp_path / "var/lib/dpkg/status").write_text(
        "Package: nvidia-container-toolkit\nStatus: hold ok installed\nVersion: 1.20.0-1\n\n"
        "Package: nvidia-driver-580-open\nStatus: hold ok installed\nVersion: 580.126.09-1\n\n"
        "Package: nvidia-utils-580\nStatus: deinstall ok config-files\nVersion: 580.95.05-1\n"
    )
    assert collect_toolkit(str(tmp_path), path="/usr/bin").packages == {"nvidia-container-toolkit": "1.20.0-1"}
    packages = collect_packages(str(tmp_path))
    assert packages.driver_packages == {"nvidia-driver-580-open": "580.126.09-1"}
    assert packages.held == ["nvidia-driver-580-open"]


def test_cdi_specs_from_a_tree(tmp_path: Path) -> None:
    (tmp_path / "etc/cdi").mkdir(parents=True)
    (tmp_path / "var/run/cdi").mkdir(parents=True)
    shutil.copy(FIXTURES / "cdi/nvidia-h100-580.159.04.yaml", tmp_path / "etc/cdi/nvidia.yaml")
    shutil.copy(FIXTURES / "cdi/truncated.yaml", tmp_path / "var/run/cdi/broken.yaml")
    (tmp_path / "var/run/cdi/notes.txt").write_text("not a spec")
    facts = collect_cdi(str(tmp_path))
    assert [s.path for s in facts.specs] == ["/etc/cdi/nvidia.yaml", "/var/run/cdi/broken.yaml"]
    assert facts.specs[0].valid and facts.specs[0].driver_version == "580.159.04"
    assert not facts.specs[1].valid


def test_capture_script_reproduces_this_machine(tmp_path: Path) -> None:
    import subprocess

    subprocess.run([str(REPO / "scripts/capture-host-tree"), str(tmp_path / "tree")], check=True, capture_output=True)
    live = collect_kernel("/")
    captured = collect_kernel(str(tmp_path / "tree"))
    assert (captured.release, captured.cgroup_mode, captured.bpf_jit_harden) == (
        live.release,
        live.cgroup_mode,
        live.bpf_jit_harden,
    )


DRIFT = FIXTURES / "hosts" / "p5-nvswitch-drift"


def test_kmsg_collector_reads_xids_since_boot_from_the_tree() -> None:
    from gpuhost.facts.kmsg import collect_kmsg, parse_record

    facts = collect_kmsg(str(DRIFT))
    assert facts.status is SourceStatus.OK
    assert facts.records == 6  # continuation lines ( SUBSYSTEM=...) are not records
    assert [(x.code, x.pci) for x in facts.xids] == [(119, "0000:53:00"), (13, "0000:53:00"), (79, "0000:53:00")]
    assert facts.xids[0].at_s == pytest.approx(86400.123456)
    assert facts.xids[2].detail.endswith("GPU has fallen off the bus.")
    assert parse_record("a dmesg line without a prefix") == (None, "a dmesg line without a prefix")
    assert collect_kmsg(str(CAPTURED)).status is SourceStatus.ABSENT


def test_kmsg_collector_on_this_machine_reads_to_the_end_without_blocking() -> None:
    from gpuhost.facts.kmsg import collect_kmsg

    facts = collect_kmsg("/")
    assert facts.status in (SourceStatus.OK, SourceStatus.ABSENT, SourceStatus.UNREADABLE)
    if facts.status is SourceStatus.OK:
        assert facts.records > 0


def test_unit_states_from_a_captured_systemctl_show() -> None:
    from gpuhost.facts.systemd import collect_units

    facts = collect_units(str(DRIFT))
    assert facts.status is SourceStatus.OK
    refresh = facts.get("nvidia-cdi-refresh.service")
    assert refresh is not None and refresh.failed and refresh.result == "start-limit-hit"
    fabric = facts.get("nvidia-fabricmanager.service")
    assert fabric is not None and not fabric.active and fabric.exists
    path = facts.get("nvidia-cdi-refresh.path")
    assert path is not None and path.unit_file_state == "enabled" and not path.active and not path.failed
    assert collect_units(str(CAPTURED)).status is SourceStatus.ABSENT


def test_next_kernel_and_its_modules_from_boot_and_lib_modules(tmp_path: Path) -> None:
    from gpuhost.facts.boot import collect_boot

    facts = collect_boot(str(DRIFT), "6.8.0-1029-aws")
    # 6.5.0-1022-aws left a modules directory but no kernel image: not installed
    assert facts.installed == ["6.8.0-1029-aws", "6.8.0-1031-aws"]
    assert (facts.next, facts.next_source) == ("6.8.0-1031-aws", "/boot/vmlinuz")
    assert facts.next_nvidia_modules == []
    running = collect_boot(str(DRIFT), "6.8.0-1029-aws")
    assert running.secure_boot is None
    tree = tmp_path / "tree"
    shutil.copytree(DRIFT / "lib", tree / "lib", symlinks=True)
    shutil.copytree(DRIFT / "boot", tree / "boot", symlinks=True)
    (tree / "boot" / "vmlinuz").unlink()  # no link: the newest installed kernel boots
    dkms = tree / "lib/modules/6.8.0-1031-aws/updates/dkms"
    dkms.mkdir(parents=True)
    (dkms / "nvidia.ko").write_bytes(b"\x7fELF unsigned")
    built = collect_boot(str(tree), "6.8.0-1029-aws")
    assert (built.next, built.next_source) == ("6.8.0-1031-aws", "newest installed kernel")
    assert built.next_nvidia_modules == ["updates/dkms/nvidia.ko"]
    assert built.next_unsigned_modules == ["updates/dkms/nvidia.ko"]
    assert collect_boot(str(DRIFT), "6.8.0-1029-aws").next_unsigned_modules == []


def test_packages_holds_unattended_upgrades_and_the_nvml_library() -> None:
    from gpuhost.facts.packages import collect_packages, parse_apt_conf

    facts = collect_packages(str(DRIFT))
    assert facts.dpkg and facts.unattended_upgrades_enabled
    assert facts.held == ["nvidia-driver-580-open"]
    # removed packages (config-files) and the container toolkit are not the driver's
    assert "nvidia-utils-580" not in facts.driver_packages
    assert "nvidia-container-toolkit-base" not in facts.driver_packages
    assert facts.unattended_blacklist == ["libc6$"]  # the commented-out "linux-" is not an entry
    assert facts.nvml_library_versions == ["580.159.04"]
    assert facts.module_version == "580.126.09"
    assert (facts.fabricmanager_package, facts.fabricmanager_version) == ("nvidia-fabricmanager-580", "580.126.09-1")
    assert "nvidia-driver-580-open" in facts.reboot_required_pkgs
    periodic, blacklist = parse_apt_conf(
        ['APT::Periodic::Unattended-Upgrade "1";', 'APT::Periodic::Unattended-Upgrade "0";\n'
         'Unattended-Upgrade::Package-Blacklist {\n "nvidia-";\n "libnvidia-";\n};']
    )
    assert periodic == "0" and blacklist == ["nvidia-", "libnvidia-"]


def test_platform_pci_classes_dmi_and_dev_char_links(tmp_path: Path) -> None:
    from gpuhost.facts.platform import char_links, collect_platform

    facts = collect_platform(str(DRIFT), str(DRIFT / "dev"))
    assert facts.product_name == "p5.48xlarge"
    assert [f.address for f in facts.nvswitches] == ["0000:07:00.0"]
    assert [f.address for f in facts.nvidia_gpus] == ["0000:53:00.0"]
    # character devices stand in for /dev/nvidia*: links to /dev/null keep the test free of mknod
    dev = tmp_path / "dev"
    dev.mkdir()
    (dev / "nvidia0").symlink_to("/dev/null")
    (dev / "nvidiactl").symlink_to("/dev/zero")
    (dev / "nvidia-caps").mkdir()
    null = os.stat("/dev/null").st_rdev
    (dev / "char").mkdir()
    (dev / "char" / f"{os.major(null)}:{os.minor(null)}").symlink_to("../nvidia0")
    assert char_links(str(dev)) == (["/dev/nvidia0", "/dev/nvidiactl"], ["/dev/nvidiactl"])


def test_driver_params_and_gsp_firmware_from_proc() -> None:
    from gpuhost.facts.gpu import read_gpu_firmware, read_proc_driver_params

    assert read_proc_driver_params(str(DRIFT))["EnableGpuFirmware"] == "18"
    assert read_gpu_firmware(str(DRIFT)) == {"0000:53:00.0": "580.126.09"}
    assert read_proc_driver_params(str(CAPTURED)) == {}
