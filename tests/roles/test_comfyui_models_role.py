"""The comfyui role's models tasks (tasks_from: models-check, models) run by ansible-playbook against this
machine, syncing from moto's S3 server on 127.0.0.1 (through a proxy that counts the bytes it passes)
into a temporary directory: check mode first, then for real, then again; then the boot unit's own
commands after the models directory is wiped, as an EC2 stop/start wipes the instance store. And the
whole role in check mode, to see the mounts and HF_HOME it would give the container."""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from gpuhost.comfyui.models.facts import collect_models
from tests.support.ansible import PlaybookRun, local_play, run_playbook
from tests.support.comfyui_replay import IMAGE, build_image
from tests.support.paths import REPO
from tests.support.s3 import BUCKET, S3Proxy, fill_bucket, model_bytes, s3_client, s3_server

PREFIX = "comfyui"
# the source keys; the manifest names `unet`, ComfyUI's legacy name for diffusion_models
FILES = {"checkpoints/base.safetensors": model_bytes(90_000, 1), "unet/flux.safetensors": model_bytes(40_000, 2)}
UID = GID = 4242
AWS_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_CONFIG_FILE": os.devnull,
           "AWS_SHARED_CREDENTIALS_FILE": os.devnull}
PLAYBOOK = f"""---
- name: Sync the models the way the comfyui role does
  hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: Check the models variables
      ansible.builtin.include_role:
        name: comfyui
        tasks_from: models-check

    - name: Sync, mount and install the boot unit
      ansible.builtin.include_role:
        name: comfyui
        tasks_from: models
        public: true
      vars:
        __comfyui_uid: "{UID}"
        __comfyui_gid: "{GID}"

    - name: Render extra_model_paths.yaml with the role's template
      ansible.builtin.template:
        src: {REPO}/roles/comfyui/templates/extra_model_paths.yaml.j2
        dest: "{{{{ comfyui_data_dir }}}}/extra_model_paths.yaml"
        mode: "0644"

    - name: Show what main.yml gives the container
      ansible.builtin.debug:
        msg: "CONTAINER {{{{ {{'volumes': __comfyui_models_volumes, 'env': __comfyui_models_env}} | to_json }}}}"
"""
WHOLE_ROLE = local_play("Deploy ComfyUI", "comfyui")


@pytest.fixture(scope="module")
def s3_proxy() -> Iterator[S3Proxy]:
    with pytest.MonkeyPatch.context() as patch, s3_server() as endpoint:
        for name, value in AWS_ENV.items():
            patch.setenv(name, value)
        patch.delenv("AWS_PROFILE", raising=False)
        client = s3_client(endpoint)
        fill_bucket(client, BUCKET, FILES, PREFIX)
        with S3Proxy(endpoint) as proxy:
            yield proxy


def role_vars(tmp_path: Path, proxy: S3Proxy) -> dict[str, Any]:
    agent = tmp_path / "agent"
    return {
        "comfyui_models_source": f"s3://{BUCKET}/{PREFIX}",
        "comfyui_models_manifest": {"models": [
            {"path": "checkpoints/base.safetensors", "size": len(FILES["checkpoints/base.safetensors"]),
             "sha256": hashlib.sha256(FILES["checkpoints/base.safetensors"]).hexdigest()},
            {"path": "flux.safetensors", "folder": "unet", "size": len(FILES["unet/flux.safetensors"])},
        ]},
        "comfyui_models_dir": str(tmp_path / "disk" / "models"),
        "comfyui_models_endpoint_url": proxy.endpoint,
        "comfyui_models_region": "us-east-1",
        "comfyui_models_sync_args": ["--concurrency", "4"],
        "comfyui_models_s3_packages": [],
        "comfyui_models_config_dir": str(tmp_path / "etc"),
        "comfyui_models_unit_dir": str(tmp_path / "systemd"),
        "comfyui_data_dir": str(tmp_path / "data"),
        # the agent goes to this test's directory and runs with the Python that has boto3
        "gpuhost_agent_path": str(agent / "gpuhost-agent.pyz"),
        "gpuhost_agent_bin": str(agent / "gpuhost-agent"),
        "gpuhost_agent_python": sys.executable,
    }


def play(tmp_path: Path, variables: dict[str, Any], *extra: str) -> PlaybookRun:
    (tmp_path / "data").mkdir(exist_ok=True)
    return run_playbook(
        tmp_path, PLAYBOOK, "-i", "localhost,", "-e", json.dumps(variables), *extra,
        env=AWS_ENV,
    )


def container_settings(run: PlaybookRun) -> dict[str, Any]:
    line = next(line for line in run.output.splitlines() if '"msg": "CONTAINER ' in line)
    return dict(json.loads(json.loads("{" + line.strip().rstrip(",") + "}")["msg"][len("CONTAINER "):]))


def unit_commands(unit: str) -> list[list[str]]:
    return [shlex.split(line.split("=", 1)[1]) for line in unit.splitlines()
            if line.startswith(("ExecStartPre=", "ExecStart="))]


def assert_models(directory: Path) -> None:
    assert (directory / "checkpoints" / "base.safetensors").read_bytes() == FILES["checkpoints/base.safetensors"]
    assert (directory / "diffusion_models" / "flux.safetensors").read_bytes() == FILES["unet/flux.safetensors"]
    assert not list(directory.rglob("*.part*"))


def test_models_check_mode_sync_again_and_boot_resync(tmp_path: Path, s3_proxy: S3Proxy) -> None:
    variables = role_vars(tmp_path, s3_proxy)
    models, hf_home = tmp_path / "disk" / "models", tmp_path / "disk" / "huggingface"
    unit_path = tmp_path / "systemd" / "gpuhost-models-sync.service"
    body_bytes = sum(s3_proxy.sent.values())

    # check mode: the controller's agent plans the fetch (HEADs only) and nothing is written
    run = play(tmp_path, variables, "--check")
    assert run.returncode == 0, run.output
    assert "2 of 2 files to fetch, 130000 bytes" in run.output, run.output
    assert run.recap()["changed"] >= 1, run.output
    assert sum(s3_proxy.sent.values()) == body_bytes
    for path in (models, hf_home, tmp_path / "etc", tmp_path / "systemd", tmp_path / "agent",
                 tmp_path / "data" / "extra_model_paths.yaml"):
        assert not path.exists(), path
    assert not list(Path(os.environ.get("TMPDIR", "/tmp")).glob("ansible.*.models.manifest.json"))

    # for real
    run = play(tmp_path, variables)
    assert run.returncode == 0, run.output
    assert_models(models)
    assert sum(s3_proxy.sent.values()) - body_bytes == sum(map(len, FILES.values()))
    manifest = json.loads((tmp_path / "etc" / "models.manifest.json").read_text())
    assert manifest == variables["comfyui_models_manifest"]
    record = json.loads((tmp_path / "etc" / "models.json").read_text())
    assert record["directory"] == str(models) and record["source"] == variables["comfyui_models_source"]
    facts = collect_models(root="/", record=str(tmp_path / "etc" / "models.json"))
    assert not facts.error and [(f.folder, f.status) for f in facts.files] == [
        ("checkpoints", "ok"), ("diffusion_models", "ok")]

    stat = hf_home.stat()
    assert (stat.st_uid, stat.st_gid, stat.st_mode & 0o777) == (UID, GID, 0o755)
    assert container_settings(run) == {
        "volumes": [f"{models}:/gpuhost/models:ro", f"{hf_home}:/gpuhost/huggingface"],
        "env": {"HF_HOME": "/gpuhost/huggingface"},
    }

    extra = yaml.safe_load((tmp_path / "data" / "extra_model_paths.yaml").read_text())
    assert extra == {"gpuhost": {"base_path": "/gpuhost/models", "is_default": True,
                                 "checkpoints": "checkpoints", "diffusion_models": "diffusion_models"}}

    unit = unit_path.read_text()
    lines = unit.splitlines()
    for expected in ("Type=oneshot", "After=network-online.target gpuhost-docker-storage.service",
                     "Wants=network-online.target", f"RequiresMountsFor={models} {hf_home}",
                     "Before=docker.service", "WantedBy=docker.service", "TimeoutStartSec=1h",
                     f"ConditionPathExists={tmp_path}/etc/models.manifest.json"):
        assert expected in lines, (expected, unit)
    pre, start = unit_commands(unit)
    assert pre == ["/usr/bin/install", "-d", "-o", str(UID), "-g", str(GID), "-m", "0755", str(hf_home)]
    assert start == [
        variables["gpuhost_agent_bin"], "models-sync", f"s3://{BUCKET}/{PREFIX}",
        "--manifest", f"{tmp_path}/etc/models.manifest.json", "--to", str(models),
        "--record", f"{tmp_path}/etc/models.json",
        "--region", "us-east-1", "--endpoint-url", s3_proxy.endpoint, "--concurrency", "4",
    ]
    wanted = tmp_path / "systemd" / "docker.service.wants" / "gpuhost-models-sync.service"
    assert os.readlink(wanted) == str(unit_path)

    # again: nothing fetched, nothing changed; check mode on the converged host changes nothing either
    fetched = sum(s3_proxy.sent.values())
    for extra_args in ((), ("--check",)):
        run = play(tmp_path, variables, *extra_args)
        assert run.returncode == 0, run.output
        assert run.recap()["changed"] == 0, run.output
    assert sum(s3_proxy.sent.values()) == fetched

    # a stop/start: the instance store comes back empty; the boot unit's commands bring the models back
    shutil.rmtree(tmp_path / "disk")
    env = {**os.environ, **AWS_ENV}
    for command in (pre, start):
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
    assert_models(models)
    assert (hf_home.stat().st_uid, hf_home.stat().st_gid) == (UID, GID)
    answer = json.loads(done.stdout)
    assert answer["changed"] is True and {f["action"] for f in answer["files"]} == {"fetched"}


def test_bad_models_variables_stop_before_anything_changes(tmp_path: Path, s3_proxy: S3Proxy) -> None:
    variables = {**role_vars(tmp_path, s3_proxy), "comfyui_models_source": "ftp://models/comfyui",
                 "comfyui_models_dir": str(tmp_path / "disk" / ".." / "models")}
    run = play(tmp_path, variables)
    assert run.returncode == 2, run.output
    assert ("comfyui_models_source is s3://BUCKET/PREFIX or an https:// base URL "
            "(shown without credentials: ftp://models/comfyui)") in run.flat
    assert run.recap()["changed"] == 0
    assert not (tmp_path / "etc").exists() and not (tmp_path / "agent").exists()


@pytest.mark.parametrize(("variable", "url"), [
    ("comfyui_models_source", "https://reader:S3cretPw@models.example.com/comfyui"),
    ("comfyui_models_source", "https://S3cretPw@models.example.com/comfyui"),
    ("comfyui_models_source", "s3://AKIDEXAMPLE:S3cretPw@models/comfyui"),
    ("comfyui_models_endpoint_url", "http://admin:S3cretPw@127.0.0.1:9000"),
], ids=["user-and-password", "token-only", "s3-keys", "endpoint"])
def test_credentials_in_a_models_url_are_refused_and_never_shown(
    tmp_path: Path, s3_proxy: S3Proxy, variable: str, url: str
) -> None:
    run = play(tmp_path, {**role_vars(tmp_path, s3_proxy), variable: url})
    assert run.returncode == 2, run.output
    assert "take no user or password" in run.flat, run.output
    assert "S3cretPw" not in run.output
    assert run.recap()["changed"] == 0
    assert not (tmp_path / "etc").exists() and not (tmp_path / "agent").exists()


@pytest.mark.docker
def test_whole_role_in_check_mode_gives_the_container_the_models(
    tmp_path: Path, s3_proxy: S3Proxy, shared_dir: Path
) -> None:
    build_image(shared_dir)
    variables = {
        **role_vars(tmp_path, s3_proxy),
        "comfyui_image": IMAGE,
        "comfyui_image_source": "load",
        "comfyui_image_archive": str(tmp_path / "absent.tar"),
        "comfyui_container_name": "gpuhost-comfyui-models-check",
        "comfyui_host_user": "gpuhost-models-check",
        "comfyui_require_gpu": False,
        "comfyui_cpu_mode": True,
    }
    run = run_playbook(tmp_path, WHOLE_ROLE, "-i", "localhost,", "-e", json.dumps(variables), "--check", "-v",
                       env=AWS_ENV)
    assert run.returncode == 0, run.output
    assert "2 of 2 files to fetch, 130000 bytes" in run.output
    lines = run.output.splitlines()
    at = next(i for i, line in enumerate(lines) if "TASK [comfyui : Run the ComfyUI container]" in line)
    # the task loops over the instances: `changed: [localhost] => (item=NAME) => {...}`
    answer = json.loads(lines[at + 1].split(" => ", 1)[1].split(") => ", 1)[-1])
    created = answer["actions"][0]["create_parameters"]
    models, hf_home = tmp_path / "disk" / "models", tmp_path / "disk" / "huggingface"
    assert f"{models}:/gpuhost/models:ro" in created["HostConfig"]["Binds"]
    assert f"{hf_home}:/gpuhost/huggingface:rw" in created["HostConfig"]["Binds"]
    assert "HF_HOME=/gpuhost/huggingface" in created["Env"]
    assert "COMFY_CMDLINE_EXTRA=--extra-model-paths-config /basedir/extra_model_paths.yaml --cpu" in created["Env"]
    for path in (models, hf_home, tmp_path / "etc", tmp_path / "systemd"):
        assert not path.exists(), path
