"""extra_model_paths.yaml is rendered from data (to_nice_yaml): whatever the names and paths, the file
loads back as the sections given, one YAML value each, and ComfyUI reads the folders and paths given.
(The comfyui role refuses control characters up front: ComfyUI reads a newline as the start of another
path, so a value with one loads back whole but means two paths. tests/roles/test_comfyui_role.py runs
that refusal.)"""

from __future__ import annotations

import os
from typing import Any

import yaml
from hypothesis import example, given
from hypothesis import strategies as st

from tests.support.role_templates import ROLES, comfyui_extra_paths, render

TEMPLATE = ROLES / "comfyui" / "templates" / "extra_model_paths.yaml.j2"
HOSTILE = "\n\r\t\x00\x85\u2028 \"'\\%$;#:-?[]{}&*!|>@`,é☃aZ09/"


def config_of(text: st.SearchStrategy[str]) -> st.SearchStrategy[dict[str, Any]]:
    folder_name = text.filter(lambda name: name not in ("base_path", "is_default"))
    paths = st.one_of(text, st.lists(text, min_size=1, max_size=3))
    section = st.fixed_dictionaries(
        {"base_path": text, "folders": st.dictionaries(folder_name, paths, max_size=3)},
        optional={"is_default": st.booleans()},
    )
    return st.dictionaries(text, section, min_size=1, max_size=3)


hostile = config_of(st.one_of(st.text(alphabet=HOSTILE, min_size=1, max_size=12), st.text(min_size=1, max_size=10)))
# what the role lets through: no control characters (nor the line and paragraph separators YAML breaks at)
printable = config_of(st.one_of(
    st.text(alphabet="".join(c for c in HOSTILE if c.isprintable()), min_size=1, max_size=12),
    st.text(alphabet=st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")), min_size=1, max_size=10),
))


def expected(config: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, entry in config.items():
        loaded: dict[str, Any] = {"base_path": entry["base_path"]}
        if entry.get("is_default"):
            loaded["is_default"] = True
        for folder, value in entry["folders"].items():
            loaded[folder] = "\n".join([value] if isinstance(value, str) else value)
        out[name] = loaded
    return out


@given(hostile)
@example({"team b\nevil:": {"base_path": "/mnt/x\nother: {base_path: /etc}", "folders": {"vae: [a]": "a\n  b: c"}}})
@example({"[Service]": {"base_path": "'\"%$", "folders": {"#comment": ["- item", "? key"]}, "is_default": True}})
def test_every_name_and_path_loads_back_as_one_value(config: dict[str, Any]) -> None:
    rendered = render(TEMPLATE, __comfyui_extra_model_paths=config)
    assert yaml.safe_load(rendered) == expected(config)


@given(printable)
def test_comfyui_finds_each_path_given(config: dict[str, Any]) -> None:
    """Without control characters (refused by the role), ComfyUI's own reading finds exactly the paths given."""
    found = comfyui_extra_paths(yaml.safe_load(render(TEMPLATE, __comfyui_extra_model_paths=config)))
    wanted: dict[str, list[str]] = {}
    for name in config:
        entry = config[name]
        for folder, value in entry["folders"].items():
            for path in [value] if isinstance(value, str) else value:
                wanted.setdefault(folder, []).append(os.path.join(entry["base_path"], path))
    assert {k: sorted(v) for k, v in found.items()} == {k: sorted(v) for k, v in wanted.items()}
