"""Properties of the daemon.json writer (library/docker_daemon_config.py), whatever the existing file
and whatever the settings: it never drops a key it was not asked to change, never writes a number
dockerd cannot read, and when it refuses it says why and leaves every file byte for byte as it was."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hypothesis import event, given
from hypothesis import strategies as st

from tests.support.paths import REPO

_SPEC = importlib.util.spec_from_file_location("docker_daemon_config", REPO / "library" / "docker_daemon_config.py")
assert _SPEC is not None and _SPEC.loader is not None
ddc: Any = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(ddc)

DOCKER_KEYS = ["debug", "features", "cdi", "runtimes", "nvidia", "log-opts", "max-size", "data-root"]
KEYS = st.sampled_from(DOCKER_KEYS) | st.text(max_size=6)
NUMBERS = st.integers(min_value=-(2**70), max_value=2**70) | st.floats(allow_nan=True, allow_infinity=True)
NON_FINITE = st.sampled_from([math.nan, math.inf, -math.inf])
SCALARS = st.none() | st.booleans() | NUMBERS | NON_FINITE | st.text(max_size=8)
FINITE_NUMBERS = st.integers() | st.floats(allow_nan=False, allow_infinity=False)
FINITE = st.none() | st.booleans() | FINITE_NUMBERS | st.text(max_size=8)


def json_values(scalars: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=4),
        max_leaves=12,
    )


def rendered(value: Any) -> str:
    return json.dumps(value)  # NaN and Infinity are written as such: an existing file may hold them


EXISTING_TEXT = st.one_of(
    st.dictionaries(KEYS, json_values(FINITE), max_size=5).map(rendered),
    st.dictionaries(KEYS, json_values(FINITE), max_size=5).map(rendered),
    st.dictionaries(KEYS, json_values(SCALARS), max_size=5).map(rendered),
    json_values(SCALARS).map(rendered),
    st.text(max_size=40),
    st.sampled_from(
        [
            "",
            "  \n",
            '{"a": 1e400}',
            '{"a": 1, "a": 2}',
            "\ufeff{}",
            '{"a": [' * 150 + "]" * 150 + "}",
            '{"a": "\\ud800"}',
            '{"a": 1} trailing',
            "// comment\n{}",
        ]
    ),
)
EXISTING = st.one_of(EXISTING_TEXT.map(lambda text: text.encode("utf-8", "surrogatepass")), st.binary(max_size=40))
SETTINGS = st.one_of(
    st.dictionaries(KEYS, json_values(FINITE), max_size=5),
    st.dictionaries(KEYS, json_values(FINITE), max_size=5),
    st.dictionaries(KEYS, json_values(SCALARS), max_size=5),
    st.dictionaries(st.integers(0, 3) | KEYS, SCALARS, max_size=2),
)


def strict_load(text: str) -> Any:
    def refuse(name: str) -> None:
        raise AssertionError(f"{name} written to daemon.json")

    return json.loads(text, parse_constant=refuse)


def dotted_keys(value: Any, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield (*prefix, key)
            yield from dotted_keys(item, (*prefix, key))


def asked_to_change(settings: Any, path: tuple[str, ...]) -> bool:
    """Whether `settings` removes or replaces the key at `path` (or a key above it)."""
    node = settings
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return False
        node = node[key]
        if not isinstance(node, dict):
            return True
    return False


def snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def finite_everywhere(value: Any) -> bool:
    if isinstance(value, dict):
        return all(finite_everywhere(v) for v in value.values())
    if isinstance(value, list):
        return all(finite_everywhere(v) for v in value)
    return not isinstance(value, float) or math.isfinite(value)


@given(existing=st.none() | EXISTING, settings=SETTINGS, check_mode=st.sampled_from([False, False, False, True]))
def test_merge_keeps_user_keys_writes_only_finite_json_or_refuses_cleanly(
    existing: bytes | None, settings: dict[Any, Any], check_mode: bool
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        path = directory / "daemon.json"
        if existing is not None:
            path.write_bytes(existing)
        before = snapshot(directory)
        try:
            result = ddc.update(str(path), settings, check_mode=check_mode)
        except ddc.Refusal as refusal:
            event("refused")
            assert snapshot(directory) == before
            assert refusal.message.strip() and "Traceback" not in refusal.message
            assert str(path) in refusal.message or "settings" in refusal.message or "mode" in refusal.message
            return
        after = snapshot(directory)
        if check_mode or not result["changed"]:
            event("nothing written")
            assert after == before
            return
        event("merged into an existing file" if existing is not None else "created")
        written = strict_load(path.read_text(encoding="utf-8"))
        assert isinstance(written, dict) and written == result["config"]
        assert finite_everywhere(settings)
        # every key of the previous file is still there unless the settings removed or replaced it
        previous = json.loads(existing.decode("utf-8")) if existing and existing.strip() else {}
        for key_path in dotted_keys(previous):
            if not asked_to_change(settings, key_path):
                node = written
                for key in key_path:
                    assert isinstance(node, dict) and key in node, (key_path, written)
                    node = node[key]
        # and nothing is left beside it but the backup of the previous content
        extra = sorted(set(after) - {"daemon.json"})
        assert extra == ([os.path.basename(result["backup_file"])] if existing is not None else [])


@given(mode=st.integers(-10, 0o20000) | st.text(max_size=8) | st.booleans() | st.floats())
def test_a_mode_is_a_mode_or_a_refusal(mode: Any) -> None:
    try:
        value = ddc.parse_mode(mode)
    except ddc.Refusal as refusal:
        assert "mode" in refusal.message
        return
    assert 0 <= value <= 0o7777


def planted(base: dict[Any, Any], where: list[str], value: Any) -> dict[Any, Any]:
    """`base` with `value` at the dotted key `where` (objects on the way replace what was there)."""
    result = dict(base)
    node = result
    for key in where[:-1]:
        child = node.get(key)
        node[key] = dict(child) if isinstance(child, dict) else {}
        node = node[key]
    node[where[-1]] = value
    return result


@given(
    existing=st.dictionaries(KEYS, json_values(FINITE), max_size=4),
    settings=st.dictionaries(KEYS, json_values(FINITE), max_size=4),
    where=st.lists(KEYS, min_size=1, max_size=3),
    bad=NON_FINITE | NON_FINITE.map(lambda number: [1, number]),
    in_file=st.booleans(),
)
def test_a_non_finite_number_anywhere_is_refused(
    existing: dict[str, Any], settings: dict[str, Any], where: list[str], bad: Any, in_file: bool
) -> None:
    if in_file:
        existing = planted(existing, where, bad)
    else:
        settings = planted(settings, where, bad)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "daemon.json"
        path.write_text(json.dumps(existing))
        before = snapshot(Path(tmp))
        try:
            ddc.update(str(path), settings)
        except ddc.Refusal as refusal:
            assert "finite" in refusal.message
        else:
            raise AssertionError(f"wrote {path.read_text()!r}")
        assert snapshot(Path(tmp)) == before
