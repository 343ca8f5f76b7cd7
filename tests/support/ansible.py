"""Run a playbook on this machine the way a person runs one from the checkout."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from tests.support.paths import REPO, VENV_BIN

LOCAL_INVENTORY = REPO / "inventories" / "local" / "hosts.yml"
_RECAP = re.compile(r"localhost\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)")


@dataclass
class PlaybookRun:
    returncode: int
    output: str  # stdout, then stderr

    @property
    def flat(self) -> str:
        """The output with every run of white space folded to one space (messages wrap)."""
        return " ".join(self.output.split())

    def recap(self) -> dict[str, int]:
        """localhost's ok/changed/unreachable/failed counts; empty when the play never got that far."""
        found = _RECAP.search(self.output)
        if not found:
            return {}
        return dict(zip(("ok", "changed", "unreachable", "failed"), map(int, found.groups())))


def local_play(name: str, *roles: str) -> str:
    """A playbook of one play on localhost (no facts gathered) that runs these roles, in this order."""
    listed = "".join(f"    - role: {role}\n" for role in roles)
    return f"---\n- name: {name}\n  hosts: localhost\n  connection: local\n  gather_facts: false\n  roles:\n{listed}"


def run_playbook(tmp_path: Path, playbook: str, *args: str, env: Mapping[str, str] | None = None) -> PlaybookRun:
    """Write `playbook` under tmp_path and run it with the project's ansible.cfg and roles."""
    path = tmp_path / "play.yml"
    path.write_text(playbook)
    result = subprocess.run(
        [str(VENV_BIN / "ansible-playbook"), *args, str(path)],
        cwd=REPO,
        env={
            **os.environ,
            **(env or {}),
            "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
            "ANSIBLE_ROLES_PATH": str(REPO / "roles"),
            "ANSIBLE_LOCAL_TEMP": str(tmp_path / "ansible-tmp"),
            "ANSIBLE_PYTHON_INTERPRETER": sys.executable,
            "ANSIBLE_NOCOLOR": "1",
        },
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    return PlaybookRun(result.returncode, result.stdout + result.stderr)
