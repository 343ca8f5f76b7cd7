"""scripts/build-comfyui-image without building: its key follows the recipe's inputs (so a changed recipe
rebuilds once, and nothing else does), a bad image-config line is refused before anything runs, and a
second build waits for the first one's lock and gives up with the reason. Copies of the script and the
recipe run from a tree of their own; the base image's id comes from this machine's dockerd (seconds)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.paths import REPO, SHARED

pytestmark = [pytest.mark.docker]

RECIPE = ("requirements.lock", "assemble.sh", "image-config", "entrypoint.py")


def tree(root: Path) -> Path:
    """The build script and the recipe, as a checkout of their own."""
    (root / "scripts").mkdir(parents=True)
    (root / "tests" / "comfyui-image").mkdir(parents=True)
    for name in ("build-comfyui-image", "lib.sh"):
        shutil.copy2(REPO / "scripts" / name, root / "scripts" / name)
    for name in RECIPE:
        shutil.copy2(REPO / "tests" / "comfyui-image" / name, root / "tests" / "comfyui-image" / name)
    return root


def build(root: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "GPUHOST_SHARED": str(SHARED), "GPUHOST_CACHE": str(root / "cache"),
                   "GPUHOST_COMFYUI_IMAGE": "gpuhost-comfyui-build-test:absent", **env}
    return subprocess.run([str(root / "scripts" / "build-comfyui-image"), *args], capture_output=True, text=True,
                          env=environment, timeout=120, check=False)


def key(root: Path) -> str:
    done = build(root, "--key")
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.fixture(scope="module")
def base_image() -> None:
    if subprocess.run(["docker", "image", "inspect", "local/debian-systemd:bookworm"], capture_output=True,
                      check=False).returncode != 0:
        pytest.fail("local/debian-systemd:bookworm is missing: run scripts/build-base-images bookworm")


def test_the_key_changes_with_each_input_of_the_recipe_and_nothing_else(tmp_path: Path, base_image: None) -> None:
    root = tree(tmp_path / "checkout")
    first = key(root)
    assert len(first) == 16 and key(root) == first
    script = root / "scripts" / "build-comfyui-image"
    script.write_text(script.read_text() + "\n# a comment: the recipe is the same\n")
    assert key(root) == first
    seen = {first}
    for name in RECIPE:
        path = root / "tests" / "comfyui-image" / name
        original = path.read_bytes()
        path.write_bytes(original + b"\n# changed\n")
        changed = key(root)
        assert changed not in seen, name
        seen.add(changed)
        path.write_bytes(original)
    assert key(root) == first


def test_a_bad_image_config_line_is_refused_before_anything_runs(tmp_path: Path, base_image: None) -> None:
    root = tree(tmp_path / "checkout")
    config = root / "tests" / "comfyui-image" / "image-config"
    config.write_text(config.read_text() + "HEALTHCHECK CMD true\n")
    lines = len(config.read_text().splitlines())
    for args in ((), ("--key",)):
        done = build(root, *args)
        assert done.returncode == 2
        assert f"image-config line {lines}: not an instruction docker commit --change takes" in done.stderr
        assert "HEALTHCHECK CMD true" in done.stderr
    assert not (root / "cache").exists()  # nothing downloaded, locked or built


def test_a_second_build_waits_for_the_first_and_gives_up_with_the_reason(tmp_path: Path, base_image: None) -> None:
    root = tree(tmp_path / "checkout")
    (root / "cache").mkdir()
    lock = root / "cache" / "comfyui-image.lock"
    holder = subprocess.Popen(["flock", str(lock), "sleep", "60"])
    try:
        deadline = time.monotonic() + 10
        while subprocess.run(["flock", "-n", str(lock), "true"], check=False).returncode == 0:
            assert time.monotonic() < deadline, "the holder never took the lock"
            time.sleep(0.1)
        started = time.monotonic()
        done = build(root, GPUHOST_COMFYUI_LOCK_WAIT_S="2")
        waited = time.monotonic() - started
    finally:
        holder.kill()
        holder.wait()
    assert done.returncode == 2, done.stderr
    assert "another build of the ComfyUI image runs" in done.stderr
    assert f"still holds {lock} after 2 s" in done.stderr
    assert waited >= 2
    wheels = root / "cache" / "wheels" / "comfyui"
    assert not wheels.exists() or not any(wheels.iterdir())  # nothing downloaded while it waited
