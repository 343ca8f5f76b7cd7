"""The models manifest (gpuhost/comfyui/manifest.py) on hostile and arbitrary input: a Manifest of
positive byte counts that fit, or one short UsageError; never another exception, an overflow, or a
message the size of an alias bomb."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from gpuhost.cli import app
from gpuhost.comfyui.manifest import Manifest, load_manifest, manifest_from_data
from gpuhost.model import UsageError
from gpuhost.units import MAX_BYTES

# under 400 bytes of YAML whose `models` expands to 9^8 strings when walked
ALIAS_BOMB = """a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
tolerance: 0.01
models: [{path: *h, size: 4.27GB}]
"""
MESSAGE_LIMIT = 2000


def load_text(tmp_path: Path, text: str, name: str = "models.manifest.yaml") -> Manifest:
    path = tmp_path / name
    path.write_text(text)
    return load_manifest(str(path))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("models: {a: .inf}\n", "larger than 1 EiB"),
        ("models: {a: -.inf}\n", "cannot be negative"),
        ("models: {a: .nan}\n", "is not a number"),
        ("models: {a: 1.0e+400}\n", "larger than 1 EiB"),
        ("models: {a: " + "9" * 400 + "}\n", "larger than 1 EiB"),
        ("models: {a: '" + "9" * 400 + "'}\n", "cannot read the size"),
        ("min_model_bytes: " + "9" * 400 + "\nmodels: {a: 1}\n", "larger than 1 EiB"),
        ("tolerance: .nan\nmodels: {a: 1}\n", "tolerance must be a fraction"),
        ("tolerance: 1.0e+400\nmodels: {a: 1}\n", "tolerance must be a fraction"),
        ("models:\n  - path: ''\n    size: 1\n", "`path` must be a non-empty string"),
        ("models:\n  - path: null\n    size: 1\n", "`path` must be a non-empty string"),
        ("models:\n  - path: 5\n    size: 1\n", "`path` must be a non-empty string"),
        ("models:\n  - match: [a]\n    size: 1\n", "`match` must be a non-empty string"),
        ("models: {null: 1}\n", "must be a non-empty string"),
        ("models: {'': 1}\n", "must be a non-empty string"),
        ("1: 2\nx: 3\nmodels: {a: 1}\n", "unknown keys 1, x"),
        ("models: " + "[" * 5000 + "]" * 5000 + "\n", "nests deeper than 100 levels"),
    ],
)
def test_hostile_manifests_are_usage_errors(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(UsageError, match=message) as caught:
        load_text(tmp_path, text)
    assert len(str(caught.value)) < MESSAGE_LIMIT


def test_json_manifests_are_strict(tmp_path: Path) -> None:
    for text, message in [
        ('{"models": {"a": NaN}}', "not valid JSON"),
        ('{"models": {"a": 1e400}}', "not valid JSON"),
        ('{"models": ' + "[" * 100_000 + "]" * 100_000 + "}", "nests deeper than 100 levels"),
        ('{"models": [{"path": null, "size": 1}]}', "`path` must be a non-empty string"),
    ]:
        with pytest.raises(UsageError, match=message):
            load_text(tmp_path, text, "models.manifest.json")


def test_an_alias_bomb_is_refused_small_and_fast(tmp_path: Path) -> None:
    assert len(ALIAS_BOMB.encode()) < 400
    tracemalloc.start()
    try:
        with pytest.raises(UsageError, match="aliases") as caught:
            load_text(tmp_path, ALIAS_BOMB)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(str(caught.value)) < MESSAGE_LIMIT
    assert peak < 10 * 1024 * 1024


def test_a_few_aliases_are_fine(tmp_path: Path) -> None:
    text = "models:\n  - path: &p /opt/ComfyUI/models/vae/sdxl_vae.safetensors\n    size: &s 335MB\n" \
           "  - match: '*flux1-dev*'\n    size: *s\n"
    manifest = load_text(tmp_path, text)
    assert [entry.expected_bytes for entry in manifest.entries] == [335_000_000, 335_000_000]


@pytest.mark.parametrize("value", ["9" * 400, "1e400", "nan", "inf", "-1", " 1MB", "1MB\n"])
def test_layers_min_model_bytes_option_is_a_usage_error(value: str) -> None:
    result = CliRunner().invoke(app, ["layers", "comfyui:0.3.64", "--min-model-bytes", value, "--json",
                                      "--docker-host", "unix:///nonexistent/docker.sock"])
    assert result.exit_code == 2, result.output
    assert "--min-model-bytes" in json.loads(result.stdout)["error"]


# --- properties ------------------------------------------------------------------------------

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=12),
    st.from_regex(r"\d{1,30}(\.\d{1,5})? ?(B|kB|MB|GB|GiB|MiB|TiB|k|g)?", fullmatch=True),
)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                                            max_size=3), max_leaves=10)
entry_keys = st.sampled_from(["path", "match", "size", "folder", "sha256", "source", "other"])
entries = st.dictionaries(entry_keys, values, max_size=4)
models = st.one_of(
    st.lists(entries, max_size=4),
    st.dictionaries(st.one_of(st.text(max_size=20), st.integers(), st.none()), values, max_size=4),
    values,
)
documents = st.one_of(
    st.fixed_dictionaries({"models": models}, optional={"tolerance": values, "min_model_bytes": values,
                                                         "version": values, "extra": values}),
    values,
)


@given(data=documents)
def test_any_data_is_a_manifest_or_one_usage_error(data: Any) -> None:
    try:
        manifest = manifest_from_data(data, "m.yaml")
    except UsageError as exc:
        assert len(str(exc)) < MESSAGE_LIMIT
        return
    for entry in manifest.entries:
        assert isinstance(entry.key, str) and entry.key
        assert isinstance(entry.expected_bytes, int) and 0 < entry.expected_bytes <= MAX_BYTES
    assert 0 <= manifest.tolerance < 1
    assert manifest.min_model_bytes is None or 0 <= manifest.min_model_bytes <= MAX_BYTES


yaml_text = st.one_of(
    st.text(max_size=200),
    st.lists(st.sampled_from(["models:", " - ", "path: ", "size: ", "&a ", "*a ", "[", "]", "{", "}", ": ", "\n",
                              "  ", "1GB", ".inf", ".nan", "null", "'x'", "!!python/object ", "---", "match: ",
                              "9" * 40]), max_size=40).map("".join),
)


@given(text=yaml_text, suffix=st.sampled_from(["yaml", "json"]))
def test_any_text_is_a_manifest_or_one_usage_error(tmp_path_factory: pytest.TempPathFactory, text: str,
                                                   suffix: str) -> None:
    path = tmp_path_factory.mktemp("manifest") / f"models.manifest.{suffix}"
    path.write_text(text, encoding="utf-8")
    try:
        load_manifest(str(path))
    except UsageError as exc:
        assert len(str(exc)) < MESSAGE_LIMIT + len(str(path))
