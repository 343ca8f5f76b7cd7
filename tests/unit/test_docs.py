"""The docs kept true to the code: the README fits one screen, every finding id the check can give has
its row in docs/check.md (the ids read from the rules' source, not from a list kept here), and
docs/architecture.md draws the layers of the import-linter contract as pyproject.toml declares them."""

from __future__ import annotations

import ast
import importlib
import pkgutil
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest

import gpuhost.fleet
from gpuhost.comfyui.workflow import workflow_findings
from gpuhost.rules import all_rules
from tests.support.paths import REPO

try:
    import tomllib
except ImportError:  # Python < 3.11
    import tomli as tomllib  # type: ignore[no-redef,import-not-found,unused-ignore]

README_MAX_LINES = 80
# the calls that give a finding its id, as their first argument
ID_GIVERS = {"Finding", "ConnectFailure", "host_failure"}


def test_the_readme_fits_one_screen() -> None:
    lines = (REPO / "README.md").read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, (
        f"README.md has {len(lines)} lines: keep it to {README_MAX_LINES}, move the detail to its page in docs/"
    )


def finding_modules() -> list[ModuleType]:
    """Where the check's findings come from: every rule of the registry, `--workflow`, the fleet."""
    modules = {sys.modules[rule.__module__] for rule in all_rules()}
    modules.add(sys.modules[workflow_findings.__module__])
    for info in pkgutil.iter_modules(gpuhost.fleet.__path__, "gpuhost.fleet."):
        modules.add(importlib.import_module(info.name))
    return sorted(modules, key=lambda m: m.__name__)


class _IdReader(ast.NodeVisitor):
    """The literal ids of the ID_GIVERS calls in a module; any other id argument that is not a parameter
    passed on (or a ConnectFailure's own id passed on) is `loose`: the test cannot see what it is."""

    def __init__(self, module: str) -> None:
        self.module = module
        self.ids: set[str] = set()
        self.loose: list[str] = []
        self._parameters: list[set[str]] = []

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        self._parameters.append({a.arg for a in [*node.args.args, *node.args.kwonlyargs]})
        self.generic_visit(node)
        self._parameters.pop()

    def visit_Call(self, node: ast.Call) -> None:
        name = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", "")
        given = node.args[0] if node.args else next((k.value for k in node.keywords if k.arg == "id"), None)
        if name in ID_GIVERS and given is not None:
            if isinstance(given, ast.Constant) and isinstance(given.value, str):
                self.ids.add(given.value)
            elif not (
                (isinstance(given, ast.Name) and self._parameters and given.id in self._parameters[-1])
                or (isinstance(given, ast.Attribute) and given.attr == "finding_id")
            ):
                self.loose.append(f"{self.module}:{node.lineno}: {ast.unparse(given)}")
        self.generic_visit(node)


def finding_ids() -> tuple[set[str], list[str]]:
    ids: set[str] = set()
    loose: list[str] = []
    for module in finding_modules():
        reader = _IdReader(module.__name__)
        reader.visit(ast.parse(Path(str(module.__file__)).read_text()))
        ids |= reader.ids
        loose += reader.loose
    return ids, loose


def documented_ids() -> set[str]:
    """The ids named in the first cell of a table row of docs/check.md."""
    ids: set[str] = set()
    for line in (REPO / "docs" / "check.md").read_text().splitlines():
        if line.startswith("| `"):
            ids.update(re.findall(r"`([a-z]+\.[a-z0-9-]+)`", line.split("|")[1]))
    return ids


def test_every_finding_id_has_its_row_in_the_check_page() -> None:
    ids, loose = finding_ids()
    assert loose == [], "finding ids the test cannot read; give them as literals"
    assert {"gpu.driver", "bpf.exposure", "comfyui.workflow", "fleet.unreachable"} <= ids
    missing = sorted(ids - documented_ids())
    assert missing == [], f"docs/check.md has no row for {missing}"


def test_every_row_of_the_check_page_names_a_finding_that_exists() -> None:
    ids, _ = finding_ids()
    assert sorted(documented_ids() - ids) == []


# --- docs/architecture.md -------------------------------------------------------------------------

def contract_layers() -> list[list[str]]:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    [layers] = [c for c in config["tool"]["importlinter"]["contracts"] if c["type"] == "layers"]
    return [[module.strip() for module in layer.split("|")] for layer in layers["layers"]]


def drawn_layers() -> list[str]:
    page = (REPO / "docs" / "architecture.md").read_text()
    section = page.split("## Layers", 1)[1]
    drawing = section.split("```text", 1)[1].split("```", 1)[0]
    return [line for line in drawing.splitlines() if "gpuhost." in line]


def test_the_architecture_page_draws_the_layers_of_the_contract() -> None:
    layers = contract_layers()
    assert len(layers) > 5
    drawn = drawn_layers()
    assert len(drawn) == len(layers), drawn
    for row, layer in zip(drawn, layers):
        assert set(re.findall(r"gpuhost\.[a-z_.]+", row)) == set(layer), (row, layer)


@pytest.mark.parametrize("module", sorted({m for layer in contract_layers() for m in layer}))
def test_every_layer_of_the_contract_exists(module: str) -> None:
    importlib.import_module(module)
