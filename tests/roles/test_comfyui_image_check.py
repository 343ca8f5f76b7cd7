"""The comfyui role reads what an image says it honours (its gpuhost.comfyui.* labels, README "What an
image must provide") and refuses, before the container starts, a configuration the image cannot honour.
The images are a few bytes of busybox with labels (docker import --change); the role runs in check mode,
so nothing is created either way."""

from __future__ import annotations

import json
import re
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.ansible import local_play, run_playbook
from tests.support.images import busybox_rootfs_tar

pytestmark = [pytest.mark.docker]

REPOSITORY = "local/gpuhost-comfyui-check"
PLAYBOOK = local_play("Deploy ComfyUI", "comfyui")
CHECK_ONLY = """---
- name: Check an image the way the comfyui role does
  hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: Check what the image honours
      ansible.builtin.include_role:
        name: comfyui
        tasks_from: image-check
"""
ALL_LABELS = {"gpuhost.comfyui.run-as": "wanted_env,user", "gpuhost.comfyui.cmdline-env": "COMFY_CMDLINE_EXTRA",
              "gpuhost.comfyui.base-directory-env": "BASE_DIRECTORY"}


@pytest.fixture(scope="module")
def image_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    made: list[str] = []
    rootfs = tmp_path_factory.mktemp("image-check") / "rootfs.tar"
    rootfs.write_bytes(busybox_rootfs_tar())

    def make(labels: dict[str, str], cmd: bool = True) -> str:
        ref = f"{REPOSITORY}:{uuid.uuid4().hex[:8]}"
        changes = [f"LABEL {key}={json.dumps(value)}" for key, value in labels.items()]
        changes += ['CMD ["sh"]'] if cmd else []
        args = [arg for change in changes for arg in ("--change", change)]
        subprocess.run(["docker", "import", *args, str(rootfs), ref], capture_output=True, check=True, timeout=120)
        made.append(ref)
        return ref

    yield make
    for ref in made:
        subprocess.run(["docker", "rmi", "-f", ref], capture_output=True, check=False)


def check_mode(tmp_path: Path, image: str, playbook: str = CHECK_ONLY, **variables: Any) -> tuple[int, str]:
    settings = {
        "comfyui_image": image,
        "comfyui_image_source": "load",
        "comfyui_image_archive": str(tmp_path / "absent.tar"),
        "comfyui_container_name": "gpuhost-comfyui-image-check",
        "comfyui_host_user": "gpuhost-image-check",
        "comfyui_data_dir": str(tmp_path / "data"),
        "comfyui_cpu_mode": True,
        **variables,
    }
    run = run_playbook(tmp_path, playbook, "-i", "localhost,", "-e", json.dumps(settings), "--check")
    return run.returncode, run.flat


@pytest.mark.parametrize(
    ("labels", "cmd", "variables", "message"),
    [
        ({"gpuhost.comfyui.run-as": "user"}, True, {},
         "runs ComfyUI only as user (its label gpuhost.comfyui.run-as), not as comfyui_run_as=wanted_env: "
         "set comfyui_run_as to one of those."),
        ({"gpuhost.comfyui.cmdline-env": "CLI_ARGS"}, True, {},
         "reads extra ComfyUI arguments from CLI_ARGS (its label gpuhost.comfyui.cmdline-env), not from "
         "comfyui_cmdline_env=COMFY_CMDLINE_EXTRA: set comfyui_cmdline_env: CLI_ARGS."),
        ({"gpuhost.comfyui.base-directory-env": "COMFY_BASE"}, True, {},
         "reads its base directory from COMFY_BASE (its label gpuhost.comfyui.base-directory-env), not from "
         "BASE_DIRECTORY: set comfyui_base_directory to an empty string and comfyui_env to {COMFY_BASE: /basedir}."),
        ({}, False, {}, "has neither an entrypoint nor a command: set comfyui_command"),
    ],
    ids=["run-as", "cmdline-env", "base-directory-env", "no-command"],
)
def test_an_image_that_cannot_honour_the_configuration_is_refused(
    tmp_path: Path, image_factory: Any, labels: dict[str, str], cmd: bool, variables: dict[str, Any], message: str
) -> None:
    image = image_factory(labels, cmd)
    rc, output = check_mode(tmp_path, image, **variables)
    assert rc == 2, output
    assert f"comfyui: {image} {message}" in output, output


def test_the_role_checks_the_image_before_it_starts_the_container(tmp_path: Path, image_factory: Any) -> None:
    image = image_factory({"gpuhost.comfyui.run-as": "wanted_env"})
    rc, output = check_mode(tmp_path, image, PLAYBOOK, comfyui_run_as="user")
    assert rc == 2, output
    assert (f"comfyui: {image} runs ComfyUI only as wanted_env (its label gpuhost.comfyui.run-as), "
            "not as comfyui_run_as=user") in output, output
    assert "Get the image" in output and "Run the ComfyUI container" not in output


@pytest.mark.parametrize(
    ("labels", "cmd", "variables"),
    [
        (ALL_LABELS, True, {}),
        # an empty cmdline env or base directory asks nothing of the image
        ({**ALL_LABELS, "gpuhost.comfyui.cmdline-env": "CLI_ARGS", "gpuhost.comfyui.base-directory-env": "X"}, True,
         {"comfyui_cmdline_env": "", "comfyui_base_directory": ""}),
        # no labels: taken on trust; no command of its own: the role's
        ({}, False, {"comfyui_command": ["sh"]}),
    ],
    ids=["all-labels", "nothing-asked", "no-labels-command-given"],
)
def test_an_image_that_honours_the_configuration_passes(
    tmp_path: Path, image_factory: Any, labels: dict[str, str], cmd: bool, variables: dict[str, Any]
) -> None:
    rc, output = check_mode(tmp_path, image_factory(labels, cmd), **variables)
    assert rc == 0, output
    checked = r"Check that the image can run ComfyUI the way it is configured\] \**\s*ok: \[localhost\]"
    assert re.search(checked, output), output
