"""The nvidia_driver role never reboots the machine the play runs from.

Runs the role's `reboot` entry point against this machine over a local connection, in check
mode as a second guard: it must fail with the instructions, before its reboot task.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO

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


def run_reboot_entry_point(tmp_path: Path, allowed: bool) -> subprocess.CompletedProcess[str]:
    playbook = tmp_path / "reboot.yml"
    playbook.write_text(PLAYBOOK.format(allowed=str(allowed).lower()))
    env = dict(os.environ)
    env.update(
        ANSIBLE_CONFIG=str(REPO / "ansible.cfg"),
        ANSIBLE_ROLES_PATH=str(REPO / "roles"),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_LOCAL_TEMP=str(tmp_path / "ansible-local"),
    )
    return subprocess.run(
        [
            str(Path(sys.executable).with_name("ansible-playbook")),
            "--check",
            "-i",
            str(REPO / "inventories" / "local" / "hosts.yml"),
            str(playbook),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_refuses_to_reboot_the_controller_and_says_how_to_finish(tmp_path: Path) -> None:
    result = run_reboot_entry_point(tmp_path, allowed=True)
    output = " ".join((result.stdout + result.stderr).split())
    assert result.returncode == 2, output
    assert "is the machine this play runs from (connection local), so the role will not reboot it" in output
    assert "driver 570.86.15 is still loaded" in output
    assert "To finish: reboot this machine yourself (sudo systemctl reboot), then run the play again" in output
    assert "TASK [nvidia_driver : Reboot into the new driver]" not in output


def test_without_permission_it_only_says_a_reboot_is_needed(tmp_path: Path) -> None:
    result = run_reboot_entry_point(tmp_path, allowed=False)
    output = " ".join((result.stdout + result.stderr).split())
    assert result.returncode == 0, output
    assert "A reboot is needed to load the new NVIDIA driver (driver 570.86.15 is still loaded)" in output
    assert "nvidia_driver_reboot is false, so the host was not rebooted" in output
