"""The nvidia_driver role never reboots the machine the play runs from.

Runs the role's `reboot` entry point against this machine over a local connection, in check
mode as a second guard: it must fail with the instructions, before its reboot task.
"""

from __future__ import annotations

from pathlib import Path

from tests.support.ansible import LOCAL_INVENTORY, PlaybookRun, run_playbook

PLAYBOOK = """
- name: Finish a driver install on the controller
  hosts: gpu_hosts
  gather_facts: false
  tasks:
    - name: Reboot into the new driver
      ansible.builtin.include_role:
        name: nvidia_driver
        tasks_from: reboot
      vars:
        nvidia_driver_reboot: {allowed}
        nvidia_driver_reboot_reason: "driver 570.86.15 is still loaded"
"""


def run_reboot_entry_point(tmp_path: Path, allowed: bool) -> PlaybookRun:
    return run_playbook(tmp_path, PLAYBOOK.format(allowed=str(allowed).lower()), "--check", "-i", str(LOCAL_INVENTORY))


def test_refuses_to_reboot_the_controller_and_says_how_to_finish(tmp_path: Path) -> None:
    result = run_reboot_entry_point(tmp_path, allowed=True)
    output = result.flat
    assert result.returncode == 2, output
    assert "is the machine this play runs from (connection local), so the role will not reboot it" in output
    assert "driver 570.86.15 is still loaded" in output
    assert "To finish: reboot this machine yourself (sudo systemctl reboot), then run the play again" in output
    assert "TASK [nvidia_driver : Reboot into the new driver]" not in output


def test_without_permission_it_only_says_a_reboot_is_needed(tmp_path: Path) -> None:
    result = run_reboot_entry_point(tmp_path, allowed=False)
    output = result.flat
    assert result.returncode == 0, output
    assert "A reboot is needed to load the new NVIDIA driver (driver 570.86.15 is still loaded)" in output
    assert "nvidia_driver_reboot is false, so the host was not rebooted" in output
