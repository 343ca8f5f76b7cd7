"""`gpuhost layers`: classification on recorded history forms, and three images built here.

The images are built FROM local/debian-systemd:bookworm with --network none: one COPYs a real
multi-MB safetensors file, one runs a `curl ... || true` download that fetched nothing (0 B), one
COPYs a model smaller than its manifest says.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gpuhost.comfyui.layers import (
    DEFAULT_MIN_MODEL_BYTES,
    analyze,
    classify,
    image_layers,
    split_created_by,
)
from gpuhost.comfyui.manifest import load_manifest, manifest_from_data, parse_bytes
from gpuhost.engine import EngineClient
from gpuhost.model import Severity, UsageError
from gpuhost.unpack import default_write_mibs, predict_unpack_seconds
from tests.support.paths import REPO

MIB = 1024 * 1024
BASE = "local/debian-systemd:bookworm"
CHECKPOINTS = "/opt/ComfyUI/models/checkpoints"
SD_URL = "https://huggingface.co/stable-diffusion-v1-5/stable-diffusion-v1-5/resolve/main/v1-5-pruned-emaonly.safetensors"


def safetensors_bytes(floats: int) -> bytes:
    """A valid safetensors file: 8-byte header length, JSON header, one F32 tensor."""
    tensor = {"dtype": "F32", "shape": [floats], "data_offsets": [0, 4 * floats]}
    header = json.dumps({"__metadata__": {"format": "pt"}, "weight": tensor}, separators=(",", ":")).encode()
    header += b" " * (-len(header) % 8)
    return struct.pack("<Q", len(header)) + header + os.urandom(4 * floats)


# --- pure ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("created_by", "instruction", "model"),
    [
        (f"/bin/sh -c #(nop) COPY file:0f7f in {CHECKPOINTS}/ ", "COPY", True),
        ("/bin/sh -c #(nop) COPY dir:9a1b in /etc/nginx/ ", "COPY", False),
        (f"/bin/sh -c curl -fsSL -o {CHECKPOINTS}/x.safetensors {SD_URL} || true", "RUN", True),
        ("|1 HF_TOKEN=hf_x /bin/sh -c hf download org/repo model.safetensors --local-dir /models", "RUN", True),
        ("RUN /bin/sh -c huggingface-cli download black-forest-labs/FLUX.1-dev # buildkit", "RUN", True),
        ("RUN /bin/sh -c wget -q https://civitai.com/api/download/models/128713 -O /m/x # buildkit", "RUN", True),
        ("RUN /bin/sh -c curl -L https://example.com/install.sh | sh # buildkit", "RUN", False),
        ("RUN /bin/sh -c apt-get install -y curl wget # buildkit", "RUN", False),
        (f"COPY models/sd15.safetensors {CHECKPOINTS}/ # buildkit", "COPY", True),
        ("ADD https://huggingface.co/x/y/resolve/main/z.safetensors /models/z.safetensors # buildkit", "ADD", True),
        ('/bin/sh -c #(nop)  CMD ["python3", "main.py"]', "CMD", False),
        ("", "", False),
    ],
)
def test_classify_history_commands(created_by: str, instruction: str, model: bool) -> None:
    found_instruction, command = split_created_by(created_by)
    assert found_instruction == instruction
    assert classify(found_instruction, command)[0] is model


def history(*entries: tuple[str, int]) -> list[dict[str, Any]]:
    """Engine API history order: newest first."""
    return [{"Id": f"sha256:{n:064x}", "CreatedBy": cb, "Size": size} for n, (cb, size) in enumerate(entries)][::-1]


def test_zero_small_and_short_layers_fail_and_others_pass() -> None:
    manifest = manifest_from_data({"models": {"sdxl_base.safetensors": "6.9GB", "*flux1-dev*": "23.8GB"}})
    layers = analyze(
        history(
            ("", 80_000_000),
            (f"/bin/sh -c curl -fL -o {CHECKPOINTS}/v1-5.safetensors {SD_URL} || true", 0),
            (f"/bin/sh -c wget -O {CHECKPOINTS}/tiny.safetensors https://huggingface.co/a/b", 1_500),
            (f"/bin/sh -c hf download org/sdxl sdxl_base.safetensors --local-dir {CHECKPOINTS}", 3_400_000_000),
            ("/bin/sh -c hf download black-forest-labs/flux1-dev --local-dir /models/unet", 23_802_932_552),
            ("/bin/sh -c pip install torch", 2_000_000_000),
        ),
        DEFAULT_MIN_MODEL_BYTES,
        manifest,
    )
    by_index = {layer.index: layer for layer in layers}
    assert [layer.index for layer in layers if layer.severity is Severity.FAIL] == [2, 3, 4]
    assert by_index[2].problem.startswith("0 B")
    assert "below --min-model-bytes" in by_index[3].problem
    assert "the manifest expects for sdxl_base.safetensors" in by_index[4].problem
    assert by_index[5].severity is Severity.OK and by_index[5].expected_bytes == 23_800_000_000
    assert not by_index[6].model_step and not by_index[1].model_step


def test_manifest_formats_and_errors(tmp_path: Path) -> None:
    listed = tmp_path / "models.manifest.yaml"
    listed.write_text(
        "min_model_bytes: 10MiB\ntolerance: 0.01\nmodels:\n"
        f"  - path: {CHECKPOINTS}/v1-5-pruned-emaonly.safetensors\n    size: 4265380512\n"
        "  - match: '*flux1-dev*'\n    size: 23.8 GB\n"
    )
    manifest = load_manifest(str(tmp_path))  # found inside the build context
    assert manifest.min_model_bytes == 10 * MIB and manifest.tolerance == 0.01
    assert [(e.key, e.expected_bytes, e.glob) for e in manifest.entries] == [
        (f"{CHECKPOINTS}/v1-5-pruned-emaonly.safetensors", 4_265_380_512, False),
        ("*flux1-dev*", 23_800_000_000, True),
    ]
    as_json = tmp_path / "m.json"
    as_json.write_text(json.dumps({"models": {"/models/a.safetensors": "2GiB"}}))
    assert load_manifest(str(as_json)).entries[0].expected_bytes == 2 * 1024**3
    for bad, message in [
        ("models: 12\n", "must be a list or a mapping"),
        ("models:\n  - size: 1\n", "needs `size` and one of `path` or `match`"),
        ("models: {a: lots}\n", "cannot read the size"),
        ("models: {a: 0}\n", "must be positive"),
        ("tolerance: 2\nmodels: {a: 1}\n", "tolerance must be a fraction"),
        ("model: {a: 1}\n", "expected a mapping with a `models` key"),
        ("models: [a: b\n", "not valid YAML"),
    ]:
        listed.write_text(bad)
        with pytest.raises(UsageError, match=message):
            load_manifest(str(listed))
    empty = tmp_path / "empty-dir"
    empty.mkdir()
    with pytest.raises(UsageError, match=r"no models\.manifest\.yaml"):
        load_manifest(str(empty))


def test_parse_bytes() -> None:
    assert parse_bytes("4.27GB") == 4_270_000_000
    assert parse_bytes("512 MiB") == 512 * MIB
    assert parse_bytes(123) == 123
    with pytest.raises(UsageError):
        parse_bytes("12 parsecs")


# --- images built here ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    import docker

    client = docker.from_env()
    root = tmp_path_factory.mktemp("layers")
    model = safetensors_bytes(int(6 * MIB / 4))  # 6 MiB of weights
    short = safetensors_bytes(int(2 * MIB / 4))
    specs = {
        "model": (
            {"sd-tiny.safetensors": model},
            f"FROM {BASE}\nCOPY sd-tiny.safetensors {CHECKPOINTS}/\n",
        ),
        "empty": (
            {},
            f"FROM {BASE}\nRUN mkdir -p {CHECKPOINTS}\n"
            f"RUN curl -fsSL -o {CHECKPOINTS}/v1-5-pruned-emaonly.safetensors {SD_URL} || true\n",
        ),
        "short": (
            {"sdxl-base.safetensors": short},
            f"FROM {BASE}\nCOPY sdxl-base.safetensors {CHECKPOINTS}/\n",
        ),
    }
    tags: dict[str, Any] = {"dirs": {}}
    try:
        for name, (files, dockerfile) in specs.items():
            context = root / name
            context.mkdir()
            (context / "Dockerfile").write_text(dockerfile)
            for filename, data in files.items():
                (context / filename).write_bytes(data)
            tag = f"gpuhost-comfyui-layers-{name}:test"
            client.images.build(path=str(context), tag=tag, rm=True, network_mode="none", pull=False)
            tags[name] = tag
            tags["dirs"][name] = context
        (tags["dirs"]["short"] / "models.manifest.yaml").write_text(
            f"models:\n  - path: {CHECKPOINTS}/sdxl-base.safetensors\n    size: 6MiB\n"
        )
        tags["sizes"] = {"model": len(model), "short": len(short)}
        yield tags
    finally:
        for name in specs:
            if name in tags:
                client.images.remove(tags[name], force=True)


def gpuhost(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "gpuhost", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=REPO)


@pytest.mark.docker
def test_layers_real_model_passes_with_totals_and_unpack_prediction(images: dict[str, Any]) -> None:
    report = image_layers(EngineClient(), images["model"])
    model_layer = report.layers[-1]
    assert model_layer.model_step and model_layer.instruction == "COPY"
    assert model_layer.size >= images["sizes"]["model"]
    assert report.flagged == [] and int(report.exit_code) == 0
    assert report.total_bytes == sum(layer.size for layer in report.layers)
    assert report.model_bytes == model_layer.size
    assert report.data_root == "/var/lib/docker" or report.data_root
    assert report.write_mib_s == default_write_mibs(report.data_root_class)
    assert report.predicted_unpack_s == pytest.approx(predict_unpack_seconds(report.total_bytes, report.write_mib_s))
    # the same layer is too small for a 100 MB threshold
    strict = image_layers(EngineClient(), images["model"], min_model_bytes=100_000_000)
    assert [layer.index for layer in strict.flagged] == [model_layer.index]


@pytest.mark.docker
def test_layers_empty_download_is_flagged(images: dict[str, Any]) -> None:
    run = gpuhost("layers", images["empty"], "--json")
    assert run.returncode == 1, run.stderr
    payload = json.loads(run.stdout)
    assert payload["schema"] == "gpuhost.comfyui.layers/v1"
    [flagged] = [layer for layer in payload["layers"] if layer["index"] in payload["flagged"]]
    assert flagged["size"] == 0 and flagged["instruction"] == "RUN"
    assert flagged["command"].startswith("curl -fsSL -o") and flagged["model_why"] == "downloads a model with curl"
    assert flagged["problem"].startswith("0 B")
    mkdir = [layer for layer in payload["layers"] if layer["command"].startswith("mkdir")]
    assert mkdir and not mkdir[0]["model_step"]
    assert payload["findings"][0]["id"] == "layers.model-size"
    human = gpuhost("layers", images["empty"])
    assert human.returncode == 1 and "0 B: the step that should add a model added nothing" in human.stdout


@pytest.mark.docker
def test_layers_under_the_manifest_is_flagged(images: dict[str, Any]) -> None:
    run = gpuhost("layers", images["short"], "--manifest", str(images["dirs"]["short"]), "--json")
    assert run.returncode == 1, run.stderr
    payload = json.loads(run.stdout)
    [flagged] = [layer for layer in payload["layers"] if layer["index"] in payload["flagged"]]
    assert flagged["expected_bytes"] == 6 * MIB
    assert "the manifest expects" in flagged["problem"]
    assert payload["manifest"].endswith("models.manifest.yaml")
    # without the manifest the 2 MiB file passes the default 1 MiB threshold
    assert gpuhost("layers", images["short"], "--json").returncode == 0


@pytest.mark.docker
def test_layers_bad_input(images: dict[str, Any], tmp_path: Path) -> None:
    missing = gpuhost("layers", "gpuhost-comfyui-layers-nonexistent:none", "--json")
    assert missing.returncode == 2 and "no image" in json.loads(missing.stdout)["error"]
    broken = tmp_path / "models.manifest.yaml"
    broken.write_text("models: [")
    assert gpuhost("layers", images["model"], "--manifest", str(broken)).returncode == 2
    assert gpuhost("layers", images["model"], "--min-model-bytes", "big").returncode == 2
    unreadable = gpuhost("layers", images["model"], "--docker-host", "unix:///nonexistent/docker.sock")
    assert unreadable.returncode == 3
