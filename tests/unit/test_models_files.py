"""gpuhost.comfyui.models without a network: the safetensors check, ComfyUI's folders, the options,
verify and the check rule on files written here."""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
from pathlib import Path

import pytest

from gpuhost.comfyui.models.catalog import load_catalog
from gpuhost.comfyui.models.facts import collect_models
from gpuhost.comfyui.models.safetensors import check_model_file
from gpuhost.comfyui.models.sync import SyncOptions
from gpuhost.comfyui.models.verify import ModelsOptions
from gpuhost.comfyui.models.verify import run as verify
from gpuhost.hostfacts import HostFacts
from gpuhost.model import Severity, UsageError
from gpuhost.rules import RuleOptions
from gpuhost.rules.comfyui import models as models_rule
from tests.support.s3 import model_bytes


def safetensors(tensors: dict[str, tuple[str, list[int], int]]) -> bytes:
    """A file whose tensors have the given dtype, shape and byte length each."""
    header, offset = {}, 0
    for name, (dtype, shape, length) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + length]}
        offset += length
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + b"\1" * offset


def check_bytes(tmp_path: Path, data: bytes, name: str = "m.safetensors") -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return check_model_file(str(path))


def test_a_whole_safetensors_file_passes(tmp_path: Path) -> None:
    assert check_bytes(tmp_path, safetensors({"a": ("F16", [3, 4], 24), "b": ("U8", [5], 5)})) == ""
    assert check_bytes(tmp_path, model_bytes(100_000, 1)) == ""


@pytest.mark.parametrize(("data", "expected"), [
    (b"", "too short"),
    (b"<!DOCTYPE html><html><body>Access denied</body></html>", "HTML page"),
    (b"version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 4265380512\n", "Git LFS pointer"),
    (struct.pack("<Q", 10) + b"[1,2,3]   ", "does not start with `{`"),
    (struct.pack("<Q", 10) + b"{not json}", "not JSON"),
    (struct.pack("<Q", 500) + b"{}", "runs past the end"),
])
def test_what_a_failed_download_leaves_is_caught(tmp_path: Path, data: bytes, expected: str) -> None:
    assert expected in check_bytes(tmp_path, data)


def test_truncated_and_inconsistent_files_are_caught(tmp_path: Path) -> None:
    whole = safetensors({"a": ("F32", [4, 4], 64)})
    assert "truncated" in check_bytes(tmp_path, whole[:-1])
    assert "longer than its tensors" in check_bytes(tmp_path, whole + b"\0")
    assert "expected" in check_bytes(tmp_path, safetensors({"a": ("F32", [4, 4], 60)}))
    assert "unknown dtype" in check_bytes(tmp_path, safetensors({"a": ("F128", [1], 16)}))
    # other formats: only what is surely not a model
    assert "HTML" in check_bytes(tmp_path, b"<html>404</html>", "m.ckpt")
    assert check_bytes(tmp_path, b"PK\3\4" + b"\0" * 100, "m.ckpt") == ""


def write_manifest(tmp_path: Path, models: list[dict[str, object]]) -> str:
    path = tmp_path / "models.manifest.json"
    path.write_text(json.dumps({"models": models}))
    return str(path)


def test_folders_come_from_the_entry_or_its_path_and_legacy_names_map(tmp_path: Path) -> None:
    catalog = load_catalog(write_manifest(tmp_path, [
        {"path": "/opt/ComfyUI/models/checkpoints/sd15.safetensors", "size": 10},
        {"path": "clip/t5xxl.safetensors", "size": 10},
        {"path": "flux.safetensors", "size": "1KiB", "folder": "unet", "sha256": "A" * 64},
        {"path": "sub/x.pt", "size": 10, "folder": "loras", "source": "elsewhere/x.pt"},
        {"match": "*flux1-dev*", "size": "23.8GB"},
    ]))
    assert [(f.folder, f.name, f.source_key) for f in catalog.files] == [
        ("checkpoints", "sd15.safetensors", "checkpoints/sd15.safetensors"),
        ("text_encoders", "t5xxl.safetensors", "clip/t5xxl.safetensors"),
        ("diffusion_models", "flux.safetensors", "unet/flux.safetensors"),
        ("loras", "sub/x.pt", "elsewhere/x.pt"),
    ]
    assert catalog.files[2].sha256 == "a" * 64 and catalog.files[2].size == 1024
    assert catalog.ignored == ["*flux1-dev*"]


@pytest.mark.parametrize(("entry", "expected"), [
    ({"path": "x.safetensors", "size": 10, "folder": "checkpoint"}, "not a model folder ComfyUI reads"),
    ({"path": "x.safetensors", "size": 10}, "no ComfyUI folder"),
    ({"path": "x.txt", "size": 10, "folder": "loras"}, "does not list"),
    ({"path": "../x.safetensors", "size": 10, "folder": "loras"}, "plain relative path"),
    ({"path": "x.safetensors", "size": 10, "folder": "loras", "sha256": "abc"}, "64 hexadecimal"),
    ({"path": "x.safetensors", "size": 10, "folder": "loras", "source": "../y"}, "without `..`"),
])
def test_bad_entries_are_refused(tmp_path: Path, entry: dict[str, object], expected: str) -> None:
    with pytest.raises(UsageError, match=expected):
        load_catalog(write_manifest(tmp_path, [entry]))


@pytest.mark.parametrize(("option", "value"), [
    ("concurrency", 0), ("concurrency", 1000), ("part_size", "512KiB"), ("part_size", "nan"),
    ("part_size", "16MiB "), ("network_gbps", math.nan), ("network_gbps", math.inf), ("timeout", "-1s"),
    ("to", "/srv/../etc"), ("attempts", 0), ("source", "ftp://x/y"), ("source", "s3://"),
    ("endpoint_url", "localhost:9000"),
])
def test_sync_options_are_checked_before_anything_is_contacted(tmp_path: Path, option: str, value: object) -> None:
    manifest = write_manifest(tmp_path, [{"path": "loras/x.safetensors", "size": 10}])
    arguments: dict[str, object] = {"source": "s3://bucket/prefix", "manifest": manifest, "to": str(tmp_path)}
    arguments[option] = value
    with pytest.raises(UsageError):
        SyncOptions.parse(**arguments)  # type: ignore[arg-type]


def test_verify_calls_a_fifo_or_a_device_where_a_model_goes_corrupt_without_reading_it(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path, [{"path": "vae/fifo.safetensors", "size": 1},
                                         {"path": "vae/zero.safetensors", "size": 1},
                                         {"path": "vae/folder.safetensors", "size": 1}])
    models = tmp_path / "models"
    (models / "vae" / "folder.safetensors").mkdir(parents=True)
    os.mkfifo(models / "vae" / "fifo.safetensors")  # size 0: "short" would hide what it is
    (models / "vae" / "zero.safetensors").symlink_to("/dev/zero")
    result = verify(ModelsOptions.parse(directory=str(models), manifest=manifest))
    assert {f.name: (f.action, f.problem) for f in result.files} == {
        "fifo.safetensors": ("corrupt", "is a FIFO, not a regular file"),
        "zero.safetensors": ("corrupt", "is a character device, not a regular file"),
        "folder.safetensors": ("corrupt", "is a directory, not a regular file"),
    }


def test_verify_names_each_bad_file_and_the_rule_fails_on_the_record(tmp_path: Path) -> None:
    good, other = model_bytes(50_000, 1), model_bytes(60_000, 2)
    manifest = write_manifest(tmp_path, [
        {"path": "loras/good.safetensors", "size": len(good), "sha256": hashlib.sha256(good).hexdigest()},
        {"path": "loras/hashed.safetensors", "size": len(other), "sha256": hashlib.sha256(good).hexdigest()},
        {"path": "vae/short.safetensors", "size": len(good)},
        {"path": "vae/html.safetensors", "size": 40},
        {"path": "vae/missing.safetensors", "size": 10},
    ])
    models = tmp_path / "root" / "models"
    (models / "loras").mkdir(parents=True)
    (models / "vae").mkdir()
    (models / "loras" / "good.safetensors").write_bytes(good)
    (models / "loras" / "hashed.safetensors").write_bytes(other)
    (models / "vae" / "short.safetensors").write_bytes(good[:-100])
    (models / "vae" / "html.safetensors").write_bytes(b"<html><body>Not Found</body></html>\n    ")
    result = verify(ModelsOptions.parse(directory=str(models), manifest=manifest))
    assert {f.name: f.action for f in result.files} == {
        "good.safetensors": "ok", "hashed.safetensors": "corrupt", "short.safetensors": "short",
        "html.safetensors": "corrupt", "missing.safetensors": "missing",
    }
    assert int(result.exit_code) == 1 and "4 of 5" in result.message
    assert "sha256" in next(f.problem for f in result.files if f.name == "hashed.safetensors")
    json.dumps(result.to_dict(), allow_nan=False)

    record = tmp_path / "root" / "etc" / "gpuhost" / "models.json"
    record.parent.mkdir(parents=True)
    catalog = load_catalog(manifest)
    record.write_text(json.dumps({"directory": "/models", "source": "s3://b/p", "files": [
        {"folder": m.folder, "name": m.name, "size": m.size, "sha256": m.sha256} for m in catalog.files]}))
    facts = HostFacts(models=collect_models(str(tmp_path / "root")))
    [finding] = models_rule(facts, RuleOptions())
    # the check reads sizes and headers, not hashes: the wrong-hash file passes there
    assert finding.severity is Severity.FAIL and "3 of 5" in finding.message
    assert "vae/html.safetensors (corrupt: header too large" in finding.message and "an HTML page" in finding.message
    # a host without a record has no models finding
    assert models_rule(HostFacts(models=collect_models(str(tmp_path / "elsewhere"))), RuleOptions()) == []
