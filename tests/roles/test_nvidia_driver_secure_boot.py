"""Under Secure Boot the nvidia_driver role refuses to build a module the firmware would not load.

The role's Secure Boot step runs against this machine (local connection, check mode) with the
firmware's SecureBoot EFI variable planted in its real format: 4 attribute bytes, then the state.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.ansible import LOCAL_INVENTORY, run_playbook

PLAYBOOK = """
- name: Check Secure Boot before installing
  hosts: gpu_hosts
  gather_facts: false
  tasks:
    - name: Check Secure Boot
      ansible.builtin.include_role:
        name: nvidia_driver
        tasks_from: secure-boot
      vars:
        __nvidia_driver_family: {family}
        nvidia_driver_source: distribution
        nvidia_driver_secure_boot_efivar: {efivar}
"""


def run_secure_boot_step(tmp_path: Path, state: int, family: str) -> tuple[int, str]:
    efivar = tmp_path / "SecureBoot-8be4df61-93ca-11d2-aa0d-e098032b8c4b"
    efivar.write_bytes(bytes([0x06, 0x00, 0x00, 0x00, state]))  # NV+BS+RT attributes, then the state
    playbook = PLAYBOOK.format(family=family, efivar=efivar)
    run = run_playbook(tmp_path, playbook, "--check", "-i", str(LOCAL_INVENTORY))
    return run.returncode, run.flat


def test_secure_boot_with_a_dkms_module_stops_before_installing(tmp_path: Path) -> None:
    rc, output = run_secure_boot_step(tmp_path, state=1, family="debian")
    assert rc == 2, output
    assert "Secure Boot is on, and this install would build the NVIDIA kernel module with DKMS" in output
    assert "Nothing was installed." in output
    assert "nvidia_driver_secure_boot_key_enrolled: true" in output


@pytest.mark.parametrize(
    ("state", "family"),
    [(0, "debian"), (1, "ubuntu")],  # Secure Boot off; Ubuntu's prebuilt modules are signed by Canonical
)
def test_secure_boot_off_or_signed_modules_go_on(tmp_path: Path, state: int, family: str) -> None:
    rc, output = run_secure_boot_step(tmp_path, state=state, family=family)
    assert rc == 0, output
    assert "Refuse to build a module the firmware would not load" in output
