"""The roles' templates rendered as the template module renders them, without ansible-playbook: Jinja2
with Ansible's own filters and tests and gpuhost_agent's systemd_* filters (the plugin file itself).
Fast enough for property tests; tests/roles renders a few through the template module to show the two agree."""

from __future__ import annotations

import importlib.util
import os
import re
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import jinja2
from ansible.plugins.filter.core import FilterModule as CoreFilters
from ansible.plugins.test.core import TestModule as CoreTests

from tests.support.paths import REPO

ROLES = REPO / "roles"
SYSTEMD_FILTERS = ROLES / "gpuhost_agent" / "filter_plugins" / "systemd_unit.py"
UNIT_SUFFIXES = (".service.j2", ".mount.j2", ".timer.j2", ".socket.j2", ".path.j2", ".target.j2")
# a unit's drop-in (NAME.service.d/*.conf) opens with one of its sections; other .conf files (nginx's) do not
DROP_IN_SECTION = re.compile(r"^\[(Unit|Service|Install|Mount|Timer|Socket|Path)\]$", re.MULTILINE)
# Ansible's versions of these wrap Jinja's for its lazy templating; Jinja's own behave the same on plain data
JINJA_BUILTINS_KEPT = ("map", "select", "reject", "selectattr", "rejectattr", "default", "d", "groupby")


def unit_templates() -> list[Path]:
    """Every systemd unit template of every role."""
    return sorted(p for p in ROLES.glob("*/templates/*") if p.name.endswith(UNIT_SUFFIXES) or (
        p.name.endswith(".conf.j2") and DROP_IN_SECTION.search(p.read_text(encoding="utf-8"))))


@cache
def systemd_filters() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gpuhost_systemd_unit_filters", SYSTEMD_FILTERS)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@cache
def environment() -> jinja2.Environment:
    # the template module's defaults: trim_blocks on, lstrip_blocks off, the trailing newline kept
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(ROLES)), trim_blocks=True, keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters.update({k: v for k, v in CoreFilters().filters().items() if k not in JINJA_BUILTINS_KEPT})
    env.filters.update(systemd_filters().FilterModule().filters())
    env.tests.update(CoreTests().tests())
    return env


def render(template: Path | str, **variables: Any) -> str:
    """Render roles/<role>/templates/<name> (a path, or that path relative to roles/)."""
    name = Path(template).relative_to(ROLES) if Path(template).is_absolute() else Path(template)
    rendered = environment().get_template(name.as_posix()).render(ansible_managed="Ansible managed", **variables)
    # as Ansible's templar does: the source's trailing newlines come back where trim_blocks took one (a
    # template that ends with a block tag)
    wanted = _trailing_newlines((ROLES / name).read_text(encoding="utf-8"))
    return rendered + "\n" * max(0, wanted - _trailing_newlines(rendered))


def _trailing_newlines(text: str) -> int:
    return len(text) - len(text.rstrip("\n"))


def comfyui_extra_paths(config: dict[str, Any]) -> dict[str, list[str]]:
    """What ComfyUI 0.3.64 makes of an extra_model_paths.yaml (utils/extra_config.py): each section's
    base_path joined to each non-empty line of each folder's value (relative paths and `~`/`$` expansion
    aside: the roles write absolute paths)."""
    found: dict[str, list[str]] = {}
    for section in config.values():
        if section is None:
            continue
        section = dict(section)
        base = section.pop("base_path", "")
        section.pop("is_default", None)
        for folder, value in section.items():
            for line in str(value).split("\n"):
                if line:
                    found.setdefault(folder, []).append(os.path.join(base, line))
    return found
