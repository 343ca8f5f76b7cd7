"""The comfyui role on a host without a GPU: it stands aside and says why, runs on the CPU only when asked,
and an image that cannot be pulled is one failure with the reason."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.support.ansible import PlaybookRun, local_play, run_playbook

PLAYBOOK = local_play("Deploy ComfyUI", "comfyui")


def deploy(tmp_path: Path, variables: dict[str, Any], *extra: str) -> PlaybookRun:
    return run_playbook(tmp_path, PLAYBOOK, "-i", "localhost,", "-e", json.dumps(variables), *extra)


def test_no_gpu_device_stands_aside_before_changing_anything(tmp_path: Path) -> None:
    data = tmp_path / "data"
    run = deploy(
        tmp_path,
        {
            "comfyui_gpu_device": str(tmp_path / "nvidia0"),
            "comfyui_host_user": "gpuhost-comfyui-aside",
            "comfyui_data_dir": str(data),
        },
    )
    assert run.returncode == 0, run.output
    assert f"{tmp_path / 'nvidia0'} does not exist: this host has no NVIDIA GPU" in run.flat
    assert "comfyui_cpu_mode: true" in run.flat
    assert "Run the ComfyUI container" not in run.output
    assert run.recap()["changed"] == 0 and run.recap()["failed"] == 0, run.output
    assert not data.exists()


@pytest.mark.docker
def test_unpullable_image_is_one_clear_failure(tmp_path: Path) -> None:
    image = "127.0.0.1:9/gpuhost/absent:2026-01-01"
    run = deploy(
        tmp_path,
        {
            "comfyui_image": image,
            "comfyui_cpu_mode": True,
            "comfyui_gpu_device": str(tmp_path / "nvidia0"),
            "comfyui_create_user": False,
            "comfyui_host_user": "root",
            "comfyui_data_dir": str(tmp_path / "data"),
            "comfyui_container_name": "gpuhost-comfyui-unpullable",
        },
    )
    assert run.returncode == 2, run.output
    assert re.search(rf"Cannot pull {re.escape(image)}: \S", run.flat), run.output
    assert "comfyui_image_source: load" in run.flat
    assert "Run the ComfyUI container" not in run.output
