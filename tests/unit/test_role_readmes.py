"""Static checks of the documentation.

Each role's README variables table agrees with the role's meta/argument_specs.yml (the source of
truth): the same variable names and the same defaults. Every relative link in README.md, docs/*.md
and roles/*/README.md resolves, and every docs page is linked from README.md. PyYAML and the
standard library only; no Ansible, Docker or network.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
ROLES = sorted(p.parent.parent for p in (ROOT / "roles").glob("*/meta/argument_specs.yml"))
NAME = re.compile(r"^[a-z_][a-z0-9_]*$")
CODE_SPAN = re.compile(r"`([^`]*)`")
NO_DEFAULT = object()


# --- argument_specs --------------------------------------------------------------------------


def spec_options(role: Path) -> dict[str, dict[str, Any]]:
    """Every option of every entry point, with the entry points that declare it (main first)."""
    specs = yaml.safe_load((role / "meta" / "argument_specs.yml").read_text(encoding="utf-8"))
    entry_points = (specs or {}).get("argument_specs") or {}
    assert "main" in entry_points, f"{role.name}: meta/argument_specs.yml has no `main` entry point"
    options: dict[str, dict[str, Any]] = {}
    for name in ["main", *sorted(set(entry_points) - {"main"})]:
        for var, spec in ((entry_points[name] or {}).get("options") or {}).items():
            options.setdefault(var, {"spec": spec or {}, "entry_points": []})["entry_points"].append(name)
    return options


# --- the README's variables table ------------------------------------------------------------


def split_row(line: str) -> list[str]:
    """The cells of a markdown table row; `\\|` and pipes inside code spans stay in their cell."""
    body = line.strip()
    body = body[1:] if body.startswith("|") else body
    body = body[:-1] if body.endswith("|") and not body.endswith("\\|") else body
    cells, current, in_code, i = [], "", False, 0
    while i < len(body):
        char = body[i]
        if char == "\\" and i + 1 < len(body) and body[i + 1] == "|":
            current += "|"
            i += 2
            continue
        if char == "`":
            in_code = not in_code
        if char == "|" and not in_code:
            cells.append(current.strip())
            current = ""
        else:
            current += char
        i += 1
    cells.append(current.strip())
    return cells


def variable_rows(readme: Path) -> list[tuple[int, list[str]]]:
    """(line number, cells) of every body row of every table whose first header cell is `variable`."""
    rows: list[tuple[int, list[str]]] = []
    lines = readme.read_text(encoding="utf-8").splitlines()
    in_table = False
    for number, line in enumerate(lines, 1):
        if not line.lstrip().startswith("|"):
            in_table = False
            continue
        cells = split_row(line)
        if not in_table:
            following = lines[number] if number < len(lines) else ""
            in_table = cells[0].lower() == "variable" and set(following.replace("|", "").strip()) <= set("-: ")
            continue
        if set("".join(cells)) <= set("-: "):
            continue  # the separator line
        rows.append((number, cells))
    return rows


def readme_variables(readme: Path) -> tuple[dict[str, tuple[int, Any, str]], list[str]]:
    """name -> (line, documented default or NO_DEFAULT for free text, the default cell); and problems."""
    found: dict[str, tuple[int, Any, str]] = {}
    problems: list[str] = []
    for number, cells in variable_rows(readme):
        where = f"{readme.relative_to(ROOT)}:{number}"
        names = CODE_SPAN.findall(cells[0])
        if not names or any(not NAME.match(n) for n in names) or CODE_SPAN.sub("", cells[0]).strip(" ,"):
            problems.append(f"{where}: the first cell must be variable names in backticks: {cells[0]!r}")
            continue
        cell = cells[1] if len(cells) > 1 else ""
        spans = CODE_SPAN.findall(cell)
        if len(names) == 1:
            if not cell:
                values: list[Any] = [""]
            elif len(spans) == 1 and cell == f"`{spans[0]}`":
                values = spans
            else:
                values = [NO_DEFAULT]  # free text: only for an option without a default
        elif len(spans) == len(names) and not CODE_SPAN.sub("", cell).replace(",", "").strip():
            values = spans
        else:
            problems.append(f"{where}: {len(names)} variables need {len(names)} backticked defaults: {cell!r}")
            continue
        for name, value in zip(names, values):
            if name in found:
                problems.append(f"{where}: `{name}` is documented twice (also line {found[name][0]})")
            found[name] = (number, value, cell)
    return found, problems


# --- comparing defaults ----------------------------------------------------------------------


def canonical(value: Any) -> str:
    """One spelling for a value, loose on YAML formatting: `""` and an empty cell, `"580"` and 580,
    15 and 15.0, `[a, b]` and `["a", "b"]`, `true` and `True` are the same."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (list, dict)):
        return json.dumps(value, sort_keys=True, default=str)
    return str(value).strip()


def documented_value(text: str) -> Any:
    """The README's default read as YAML where it parses as a scalar or collection; its text otherwise
    (templates such as `{{ ansible_playbook_python }}` stay strings)."""
    if "{{" in text:
        return text.strip()
    try:
        return yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        return text.strip()


def test_roles_are_found() -> None:
    assert len(ROLES) >= 8, [r.name for r in ROLES]


@pytest.mark.parametrize("role", ROLES, ids=[r.name for r in ROLES])
def test_readme_variables_match_argument_specs(role: Path) -> None:
    readme = role / "README.md"
    assert readme.is_file(), f"{role.name} has no README.md"
    options = spec_options(role)
    documented, problems = readme_variables(readme)
    assert documented, f"{readme.relative_to(ROOT)}: no table whose first column is `variable`"
    for name in sorted(set(options) - set(documented)):
        where = ", ".join(options[name]["entry_points"])
        problems.append(f"`{name}` ({where} entry point) is in meta/argument_specs.yml but not in the README's table")
    for name in sorted(set(documented) - set(options)):
        problems.append(f"README line {documented[name][0]}: `{name}` is not an option in meta/argument_specs.yml")
    for name in sorted(set(options) & set(documented)):
        spec = options[name]["spec"]
        line, value, cell = documented[name]
        if "default" not in spec:
            if spec.get("required") and "required" not in cell.lower():
                problems.append(f"README line {line}: `{name}` is required (no default); say so: {cell!r}")
            continue
        if value is NO_DEFAULT:
            problems.append(f"README line {line}: `{name}` needs its default in backticks, not {cell!r}")
            continue
        expected = canonical(spec["default"])
        if canonical(documented_value(value)) != expected:
            problems.append(f"README line {line}: `{name}` default `{value}`; argument_specs says `{expected}`")
    assert not problems, f"{role.name}:\n" + "\n".join(problems)


# --- links -----------------------------------------------------------------------------------

LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)
DOCUMENTS = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md"), *(ROOT / "roles").glob("*/README.md")])


def anchors(markdown: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens, -1, -2 for repeats."""
    seen: dict[str, int] = {}
    result = set()
    for line in FENCE.sub("", markdown.read_text(encoding="utf-8")).splitlines():
        match = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not match:
            continue
        slug = re.sub(r"[^\w\- ]", "", match.group(1).lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        result.add(slug if count == 0 else f"{slug}-{count}")
    return result


def relative_links(markdown: Path) -> list[str]:
    text = FENCE.sub("", markdown.read_text(encoding="utf-8"))
    text = re.sub(r"`[^`\n]*`", "", text)
    return [t for t in LINK.findall(text) if not re.match(r"^[a-z][a-z0-9+.-]*:", t)]


@pytest.mark.parametrize("markdown", DOCUMENTS, ids=[str(d.relative_to(ROOT)) for d in DOCUMENTS])
def test_relative_links_resolve(markdown: Path) -> None:
    broken = []
    for target in relative_links(markdown):
        path, _, fragment = target.partition("#")
        resolved = (markdown.parent / path).resolve() if path else markdown
        if not resolved.exists():
            broken.append(f"{target}: no such file")
        elif fragment and resolved.suffix == ".md" and fragment not in anchors(resolved):
            broken.append(f"{target}: no heading with that anchor in {resolved.relative_to(ROOT)}")
    assert not broken, f"{markdown.relative_to(ROOT)}:\n" + "\n".join(broken)


def test_every_docs_page_is_linked_from_the_readme() -> None:
    linked = {(ROOT / t.partition("#")[0]).resolve() for t in relative_links(ROOT / "README.md")}
    pages = sorted((ROOT / "docs").glob("*.md"))
    assert pages, "docs/ has no pages"
    missing = [p.name for p in pages if p.resolve() not in linked]
    assert not missing, f"docs pages not linked from README.md: {missing}"
