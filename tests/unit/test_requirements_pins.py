"""requirements.yml lists every collection the project uses, at the versions the `ansible` release
that scripts/install pins bundles."""

from __future__ import annotations

import json
import re
from importlib import metadata
from pathlib import Path

import pytest
import yaml

from tests.support.paths import REPO

ANSIBLE_TREES = ("roles", "playbooks", "inventories", "molecule", "site.yml")
FQCN = re.compile(r"\b([a-z][a-z0-9_]*\.[a-z][a-z0-9_]*)\.[a-z][a-z0-9_]*\b")
BUILTIN = {"ansible.builtin", "ansible.legacy"}


def pinned() -> dict[str, str]:
    document = yaml.safe_load((REPO / "requirements.yml").read_text())
    return {entry["name"]: str(entry["version"]) for entry in document["collections"]}


def collections_used() -> dict[str, str]:
    """collection -> one file that uses it (module names, plugin: lines)."""
    used: dict[str, str] = {}
    for tree in ANSIBLE_TREES:
        root = REPO / tree
        files = [root] if root.is_file() else sorted(root.rglob("*.yml"))
        for path in files:
            for line in path.read_text().splitlines():
                stripped = line.split("#", 1)[0]
                for found in FQCN.finditer(stripped):
                    name = found.group(1)
                    # module names are keys (`community.docker.docker_container:`) or plugin values
                    if name in BUILTIN or not re.search(rf"(^\s*-?\s*{re.escape(found.group(0))}:|plugin:)", stripped):
                        continue
                    used.setdefault(name, str(path.relative_to(REPO)))
    return used


def ansible_pin() -> str:
    found = re.search(r'^ANSIBLE_PACKAGE="ansible==([0-9.]+)"$', (REPO / "scripts" / "install").read_text(), re.M)
    assert found, "scripts/install pins no ansible release"
    return found.group(1)


def test_every_collection_used_is_pinned() -> None:
    used = collections_used()
    assert {"community.docker", "amazon.aws"} <= set(used), used
    missing = {name: where for name, where in used.items() if name not in pinned()}
    assert not missing, f"requirements.yml misses {missing}"


def test_pins_match_the_ansible_release_scripts_install_pins() -> None:
    release = ansible_pin()
    if metadata.version("ansible") != release:
        pytest.skip(f"this venv has ansible {metadata.version('ansible')}, scripts/install pins {release}")
    collections = Path(str(metadata.distribution("ansible").locate_file("ansible_collections")))
    for name, version in pinned().items():
        manifest = collections / name.replace(".", "/") / "MANIFEST.json"
        assert json.loads(manifest.read_text())["collection_info"]["version"] == version, name
