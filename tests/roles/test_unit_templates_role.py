"""Every unit template through Ansible's own template module, after loading gpuhost_agent the way the roles
do (its systemd_* filters come with it): the files are exactly what tests/unit/test_unit_templates.py
renders and checks with hostile values, and a value a unit cannot carry fails the task, names the value and
writes nothing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.support.ansible import local_play, run_playbook
from tests.support.role_templates import ROLES, render, unit_templates
from tests.unit.test_unit_templates import CASES, corpus_values

PLAYBOOK = """---
- name: Write every unit template
  hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: Load gpuhost_agent, as the roles do before they write a unit
      ansible.builtin.include_role:
        name: gpuhost_agent
        public: true
      vars:
        # only its checks and filters: nothing to install here
        gpuhost_agent_installed: true

    - name: Write the units
      ansible.builtin.template:
        src: "{{ item.template }}"
        dest: "{{ item.dest }}"
        mode: "0644"
      loop: "{{ units }}"
      loop_control:
        label: "{{ item.dest | basename }}"
"""


def play(tmp_path: Path, text: str, time_span: str | None = None) -> tuple[Any, dict[Path, tuple[str, dict[str, Any]]]]:
    """Run the play with `text` in every variable (and `time_span` in the timer's interval when given);
    (the run, {file to write: (template, variables)})."""
    variables: dict[str, Any] = {}
    units, per_file = [], {}
    for case in CASES:
        values = corpus_values(case, text)
        # the agent's path passes gpuhost_agent's own check; its hostile forms are tested in tests/unit
        values = {**values, **({"agent": "/opt/gpuhost-é/bin/agent"} if "agent" in values else {}),
                  **({"interval": time_span} if "interval" in values and time_span else {})}
        case_variables = case.variables(values)
        for name, value in case_variables.items():
            if isinstance(value, dict) and isinstance(variables.get(name), dict):
                variables[name] = {**variables[name], **value}
            else:
                variables[name] = value
        dest = tmp_path / "units" / case.file_name(values)
        units.append({"template": str(ROLES / case.template), "dest": str(dest)})
        per_file[dest] = (case.template, case_variables)
    (tmp_path / "units").mkdir()
    (tmp_path / "vars.json").write_text(json.dumps({**variables, "units": units}))
    return run_playbook(tmp_path, PLAYBOOK, "-i", "localhost,", "-e", f"@{tmp_path / 'vars.json'}"), per_file


@pytest.mark.parametrize("text", ["two words 100% $HOME ;", "-@+!:é☃ 'single' \"double\" back\\slash"], ids=ascii)
def test_the_template_module_writes_what_the_tests_check(tmp_path: Path, text: str) -> None:
    run, files = play(tmp_path, text, time_span="1h 30min")
    assert run.returncode == 0, run.output
    assert len(files) == len(unit_templates())
    for dest, (template, variables) in files.items():
        assert dest.read_text(encoding="utf-8") == render(template, **variables), dest.name


def test_a_value_a_unit_cannot_carry_fails_the_task_and_writes_nothing(tmp_path: Path) -> None:
    run, _ = play(tmp_path, "x\nExecStartPost=/bin/rm -rf /")
    assert run.returncode == 2, run.output
    assert "cannot write" in run.output and "control character" in run.output
    assert not list((tmp_path / "units").iterdir()), "a unit was written"





@pytest.mark.parametrize(
    ("role", "variables", "words"),
    [
        ("docker_storage", {"docker_storage_mount_path": "/mnt/docker\n[Service]"}, "no control characters"),
        ("docker_storage", {"docker_storage_devices": ["/dev/nvme1n1\r"]}, "no control characters"),
        ("docker_storage", {"docker_storage_fallback_data_root": "/var/lib/docker\x1b"}, "no control characters"),
        ("gpuhost_agent", {"gpuhost_agent_bin": "/usr/local/bin/gpuhost agent"}, "absolute paths without spaces"),
        ("gpuhost_agent", {"gpuhost_agent_bin": "-/usr/local/bin/gpuhost-agent"}, "absolute paths without spaces"),
        ("gpuhost_agent", {"gpuhost_agent_python": "/usr/bin/python3 -c 'import os'"}, "absolute paths without"),
        ("gpuhost_agent", {"gpuhost_agent_path": "/usr/local/lib/../gpuhost.pyz"}, "absolute paths without"),
        ("gpuhost_agent", {"gpuhost_agent_bin": "/usr/local/bin/$HOME"}, "absolute paths without"),
    ],
    ids=lambda v: ascii(v)[:50],
)
def test_a_role_refuses_what_its_units_cannot_carry_before_it_changes_anything(
    tmp_path: Path, role: str, variables: dict[str, Any], words: str
) -> None:
    (tmp_path / "vars.json").write_text(json.dumps(variables))
    play = local_play("Run one role", role)
    run = run_playbook(tmp_path, play, "-i", "localhost,", "-e", f"@{tmp_path / 'vars.json'}")
    assert run.returncode == 2, run.output
    assert words in run.flat
    assert run.recap()["changed"] == 0
