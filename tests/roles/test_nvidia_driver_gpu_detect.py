"""The nvidia_driver role stands aside on a host without an NVIDIA GPU, and stops before apt when the
running kernel has no headers.

The PCI scan reads a planted sysfs tree in the real layout (<root>/bus/pci/devices/<address>/vendor,
class); the headers check asks this machine's apt, whose lists are Debian's (its kernel is not).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.support.ansible import LOCAL_INVENTORY, run_playbook

# (address, vendor, class) as the kernel writes them
H100_3D = ("0000:c1:00.0", "0x10de", "0x030200")
A10G_VGA = ("0000:00:1e.0", "0x10de", "0x030000")
NVIDIA_AUDIO = ("0000:00:1f.1", "0x10de", "0x040300")
VIRTIO_NET = ("0000:00:05.0", "0x1af4", "0x020000")
INTEL_VGA = ("0000:00:02.0", "0x8086", "0x030000")

SCAN_PLAYBOOK = """
- name: Look for NVIDIA GPUs
  hosts: gpu_hosts
  gather_facts: false
  tasks:
    - name: Scan the PCI bus
      ansible.builtin.include_role:
        name: nvidia_driver
        tasks_from: pci
      vars:
        nvidia_driver_sysfs_root: {root}
    - name: Print what was found
      ansible.builtin.debug:
        msg: "GPUS=[{{{{ nvidia_driver_pci_gpus | join(',') }}}}]"
"""

MAIN_PLAYBOOK = """
- name: NVIDIA driver
  hosts: gpu_hosts
  gather_facts: true
  roles:
    - role: nvidia_driver
      vars:
        nvidia_driver_sysfs_root: {root}
        nvidia_driver_proc_version_path: {root}/no-driver-version
"""

HEADERS_PLAYBOOK = """
- name: Check for the kernel's headers
  hosts: gpu_hosts
  gather_facts: true
  tasks:
    - name: Check the headers
      ansible.builtin.include_role:
        name: nvidia_driver
        tasks_from: headers
      vars:
        __nvidia_driver_family: debian
        nvidia_driver_headers_package: {package}
"""


def plant_sysfs(root: Path, devices: list[tuple[str, str, str]]) -> Path:
    for address, vendor, klass in devices:
        device = root / "bus" / "pci" / "devices" / address
        device.mkdir(parents=True)
        (device / "vendor").write_text(vendor + "\n")
        (device / "class").write_text(klass + "\n")
    return root


@pytest.mark.parametrize(
    ("devices", "gpus"),
    [
        ([VIRTIO_NET, H100_3D, NVIDIA_AUDIO], ["0000:c1:00.0"]),
        ([A10G_VGA, INTEL_VGA], ["0000:00:1e.0"]),
        ([VIRTIO_NET, NVIDIA_AUDIO, INTEL_VGA], []),
        ([], []),
    ],
)
def test_pci_scan_finds_nvidia_display_devices_only(
    tmp_path: Path, devices: list[tuple[str, str, str]], gpus: list[str]
) -> None:
    root = plant_sysfs(tmp_path / "sys", devices)
    run = run_playbook(tmp_path, SCAN_PLAYBOOK.format(root=root), "--check", "-i", str(LOCAL_INVENTORY))
    assert run.returncode == 0, run.output
    assert f"GPUS=[{','.join(gpus)}]" in run.flat


def test_host_without_a_gpu_is_left_alone_with_one_line(tmp_path: Path) -> None:
    root = plant_sysfs(tmp_path / "sys", [VIRTIO_NET, NVIDIA_AUDIO])
    run = run_playbook(tmp_path, MAIN_PLAYBOOK.format(root=root), "--check", "-i", str(LOCAL_INVENTORY))
    assert run.returncode == 0, run.output
    assert "No NVIDIA GPU on this host" in run.flat
    assert "nvidia_driver_install_without_gpu: true" in run.flat
    assert re.search(r"Install the packages for \S+ from \S+\] \**\s*skipping: \[localhost\]", run.flat), run.output
    assert run.recap()["failed"] == 0, run.output


def test_kernel_without_headers_stops_before_installing(tmp_path: Path) -> None:
    package = "linux-headers-6.18.44-custom-build"
    run = run_playbook(tmp_path, HEADERS_PLAYBOOK.format(package=package), "--check", "-i", str(LOCAL_INVENTORY))
    assert run.returncode == 2, run.output
    assert f"({package} not found)" in run.flat
    assert "has no headers in this host's package repositories" in run.flat
    assert "Boot a kernel the distribution ships" in run.flat


def test_kernel_with_headers_goes_on(tmp_path: Path) -> None:
    # the headers meta-package of Debian's own kernel: apt has a candidate for it
    run = run_playbook(
        tmp_path, HEADERS_PLAYBOOK.format(package="linux-headers-amd64"), "--check", "-i", str(LOCAL_INVENTORY)
    )
    assert run.returncode == 0, run.output
    assert "Stop when the running kernel has no headers" in run.output
