"""One name for the task files a role keeps per operating system: `tasks/setup-<Name>.yml`, Name as
Ansible's facts spell it (`os_family` where the family decides: Debian, RedHat; `distribution` where
Debian and Ubuntu differ: Debian, Ubuntu, Amazon), included as `setup-{{ ansible_facts[...] }}.yml`."""

from __future__ import annotations

import re

import pytest
import yaml

from tests.support.paths import REPO

ROLES = REPO / "roles"
# what Ansible's os_family and distribution facts say on the platforms the roles support
OS_NAMES = ("Debian", "Ubuntu", "RedHat", "Amazon")
PER_OS = re.compile("|".join(OS_NAMES), re.IGNORECASE)
SETUP = re.compile(rf"setup-({'|'.join(OS_NAMES)})\.yml")
SETUP_INCLUDE = re.compile(r"setup-\{\{ ansible_facts\['(os_family|distribution)'\] \}\}\.yml")


def task_files() -> list[str]:
    return sorted(str(p.relative_to(ROLES)) for p in ROLES.glob("*/tasks/*.yml"))


def includes(role: str) -> list[str]:
    """Every task file name the role's tasks include or import, as written."""
    found = []
    for path in (ROLES / role / "tasks").glob("*.yml"):
        stack = list(yaml.safe_load(path.read_text()) or [])
        while stack:
            task = stack.pop()
            if not isinstance(task, dict):
                continue
            for key in ("block", "rescue", "always"):
                stack.extend(task.get(key) or [])
            for key in ("ansible.builtin.include_tasks", "ansible.builtin.import_tasks"):
                if isinstance(task.get(key), str):
                    found.append(task[key])
    return found


@pytest.mark.parametrize("path", task_files())
def test_a_task_file_per_operating_system_is_named_setup_name(path: str) -> None:
    name = path.rsplit("/", 1)[-1]
    if PER_OS.search(name):
        assert SETUP.fullmatch(name), f"roles/{path}: name it setup-<{'|'.join(OS_NAMES)}>.yml"


def roles_with_setup_files() -> list[str]:
    return sorted({path.split("/")[0] for path in task_files() if SETUP.fullmatch(path.rsplit("/", 1)[-1])})


@pytest.mark.parametrize("role", roles_with_setup_files())
def test_the_setup_files_are_included_by_the_fact_that_names_them(role: str) -> None:
    chosen = [name for name in includes(role) if name.startswith("setup-")]
    assert len(chosen) == 1 and SETUP_INCLUDE.fullmatch(chosen[0]), chosen
    fact = SETUP_INCLUDE.fullmatch(chosen[0]).group(1)  # type: ignore[union-attr]
    names = {p.name for p in (ROLES / role / "tasks").glob("setup-*.yml")}
    # os_family groups Ubuntu under Debian and Amazon Linux under RedHat
    expected = {"Debian", "RedHat"} if fact == "os_family" else {"Debian", "Ubuntu", "Amazon"}
    assert names == {f"setup-{name}.yml" for name in expected}


def test_some_roles_keep_tasks_per_operating_system() -> None:
    assert roles_with_setup_files() == ["docker", "nvidia_container_toolkit", "nvidia_driver"]
