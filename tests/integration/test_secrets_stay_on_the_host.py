"""Hostile ComfyUI containers on the real dockerd: secrets in their environment, command line, extra
command line, labels and log, and terminal control sequences in their log. No secret reaches
`gpuhost check` (JSON or table), `gpuhost-agent facts|check`, `gpuhost wait-ready` or the fleet report
on the controller; no raw control byte reaches a terminal."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gpuhost.ship import build_zipapp
from tests.fleetlab import FleetLab
from tests.support.paths import REPO

pytestmark = pytest.mark.docker
BASE_IMAGE = "local/debian-systemd:bookworm"
PREFIX = "gpuhost-secrets-"
SYSTEM_PYTHON = "/usr/bin/python3"
TAG = secrets.token_hex(4)
# every place a container can hold a secret; each value is unique to this run
SECRET = {
    place: f"S{TAG}{place}"
    for place in ("hf", "aws", "extra", "cmd", "cmdeq", "entry", "label", "labelkey", "dsn")
}
# bytes a terminal acts on: ESC (CSI, OSC), BEL, CR, C1 CSI (UTF-8 c2 9b), BS
RAW_CONTROLS = ("\x1b", "\x07", "\r", "\x9b", "\x08")
HOSTILE_LOG = (
    "printf '\\033]0;gpuhost-pwned\\007\\033[2J\\033[H booting\\r overwritten\\n'; "
    f"printf 'HF_TOKEN={SECRET['hf']} AWS_SECRET_ACCESS_KEY={SECRET['aws']}\\n'; "
    "printf '\\302\\23331m C1 CSI \\010 backspace\\n'; "
    f"printf 'main.py: error: unrecognized arguments: --api-key {SECRET['extra']} \\033[31mred\\n'; "
    "exec sleep 600"
)


def hostile(name: str, script: str) -> dict[str, Any]:
    return {
        "image": BASE_IMAGE,
        "name": name,
        "entrypoint": ["/bin/sh", "-c", script, f"--token={SECRET['entry']}"],
        "command": ["--api-key", SECRET["cmd"], f"--password={SECRET['cmdeq']}", "--listen", "0.0.0.0"],
        "environment": {
            "HF_TOKEN": SECRET["hf"],
            "AWS_SECRET_ACCESS_KEY": SECRET["aws"],
            "COMFY_CMDLINE_EXTRA": f"--api-key {SECRET['extra']} --port 8190 --database-url "
                                   f"postgresql://comfy:{SECRET['dsn']}@db/comfy",
            "NVIDIA_VISIBLE_DEVICES": "void",
        },
        "labels": {"gpuhost.comfyui": "1", "com.example.auth": SECRET["label"], SECRET["labelkey"]: "x"},
        "network_mode": "none",
        "detach": True,
    }


@pytest.fixture(scope="module")
def containers() -> Iterator[dict[str, str]]:
    import docker

    client = docker.from_env()
    names = {"quiet": f"{PREFIX}quiet-{TAG}", "loud": f"{PREFIX}loud-{TAG}"}
    try:
        client.containers.run(**hostile(names["quiet"], "exec sleep 600"))
        client.containers.run(**hostile(names["loud"], HOSTILE_LOG))
        deadline = time.monotonic() + 20
        while b"unrecognized" not in client.containers.get(names["loud"]).logs() and time.monotonic() < deadline:
            time.sleep(0.2)
        yield names
    finally:
        for name in names.values():
            with contextlib.suppress(docker.errors.NotFound):
                client.containers.get(name).remove(force=True)


def run(*argv: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False,
                          env={**os.environ, "COLUMNS": "200"})


def gpuhost(*args: str) -> subprocess.CompletedProcess[str]:
    return run(sys.executable, "-m", "gpuhost", *args)


def assert_nothing_leaks(result: subprocess.CompletedProcess[str], terminal: bool = True) -> None:
    for where, text in (("stdout", result.stdout), ("stderr", result.stderr)):
        for place, secret in SECRET.items():
            assert secret not in text, f"{place} secret in {where}"
        if terminal:
            for control in RAW_CONTROLS:
                assert control not in text, f"raw {control!r} in {where}"


def comfyui_containers(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in report["facts"]["comfyui"]["containers"]}


def test_check_json_and_table_carry_no_secret(containers: dict[str, str]) -> None:
    as_json = gpuhost("check", "--json")
    assert_nothing_leaks(as_json)
    report = json.loads(as_json.stdout)
    seen = comfyui_containers(report)
    # both were collected and judged: the allowlist removed the secrets, not the containers
    assert containers["quiet"] in seen and containers["loud"] in seen
    loud = seen[containers["loud"]]["verdict"]
    assert loud["reason"] == "bad-arguments"
    assert "***" in loud["failing_line"] and "\x1b]0;gpuhost-pwned" in loud["tail"][0]  # data stays exact
    assert "\\x1b" not in loud["tail"][0]
    message = next(f["message"] for f in report["findings"]
                   if f["id"] == "comfyui.ready" and containers["loud"] in f["message"])
    assert "\x1b" not in message and "\\x1b[31m" in message  # a sentence for people: escaped
    docker = {c["name"]: c for c in report["facts"]["docker"]["containers"]}
    for name in containers.values():
        assert docker[name]["labels"] == {"gpuhost.comfyui": "1"}
        assert "env" not in docker[name] and docker[name]["nvidia_visible_devices"] == "void"

    table = gpuhost("check")
    assert table.returncode in (0, 1), table.stderr
    assert_nothing_leaks(table)
    assert containers["loud"] in table.stdout and "\\x1b" in table.stdout


def test_agent_facts_and_check_carry_no_secret(containers: dict[str, str]) -> None:
    directory = Path(tempfile.mkdtemp(prefix=PREFIX))
    try:
        agent, _ = build_zipapp(directory / "gpuhost-agent.pyz")
        facts = run(SYSTEM_PYTHON, str(agent), "facts")
        assert facts.returncode == 0, facts.stderr
        assert_nothing_leaks(facts)
        assert containers["loud"] in comfyui_containers({"facts": json.loads(facts.stdout)})
        docker_area = run(SYSTEM_PYTHON, str(agent), "facts", "--area", "docker")
        assert_nothing_leaks(docker_area)
        assert containers["quiet"] in docker_area.stdout
        check = run(SYSTEM_PYTHON, str(agent), "check")
        assert_nothing_leaks(check)
        assert containers["loud"] in comfyui_containers(json.loads(check.stdout))
    finally:
        shutil.rmtree(directory)


def test_prometheus_metrics_carry_no_secret(containers: dict[str, str], tmp_path: Path) -> None:
    metrics = gpuhost("check", "--format", "prometheus")
    assert_nothing_leaks(metrics)
    for name in containers.values():  # the containers are there, as names only
        assert f'gpuhost_comfyui_phase{{container="{name}",phase="failed"}}' in metrics.stdout
    directory = Path(tempfile.mkdtemp(prefix=PREFIX))
    try:
        os.chmod(directory, 0o755)
        agent, _ = build_zipapp(directory / "gpuhost-agent.pyz")
        textfile = tmp_path / "textfile"
        textfile.mkdir()
        written = run(
            SYSTEM_PYTHON, str(agent), "check", "--format", "prometheus", "--textfile-directory", str(textfile)
        )
        assert written.returncode == 0, written.stdout + written.stderr
        assert_nothing_leaks(written)
        for path in textfile.iterdir():
            for place, secret in SECRET.items():
                assert secret not in path.read_text(), f"{place} secret in {path.name}"
        assert containers["loud"] in (textfile / "gpuhost.prom").read_text()
    finally:
        shutil.rmtree(directory)


def test_wait_ready_on_a_hostile_log(containers: dict[str, str]) -> None:
    text = gpuhost("wait-ready", containers["loud"], "--timeout", "30s")
    assert text.returncode == 1, text.stdout + text.stderr
    assert_nothing_leaks(text)
    assert "FAILED (bad-arguments)" in text.stdout and "\\x1b]0;gpuhost-pwned\\x07" in text.stdout
    as_json = gpuhost("wait-ready", containers["loud"], "--timeout", "30s", "--json")
    assert_nothing_leaks(as_json)
    result = json.loads(as_json.stdout)
    assert result["reason"] == "bad-arguments" and "***" in result["message"]
    quiet = gpuhost("wait-ready", containers["quiet"], "--timeout", "3s", "--stall-timeout", "1s", "--json")
    assert_nothing_leaks(quiet)
    assert json.loads(quiet.stdout)["verdict"] == "stalled"


def test_the_fleet_report_carries_no_secret(containers: dict[str, str], tmp_path: Path) -> None:
    """The agent on an SSH host that sees this dockerd: its facts travel to the controller."""
    lab = FleetLab(tmp_path / "lab")
    lab.add("secrets-01", binds={"/var/run/docker.sock": "/var/run/docker.sock"})
    lab.start()
    try:
        host = lab["secrets-01"]
        result = subprocess.run(
            [sys.executable, "-m", "gpuhost", "check", "--host", f"fleet@127.0.0.1:{host.port}", "-F",
             str(lab.ssh_config), "--become", "--json"],
            cwd=REPO, capture_output=True, text=True, timeout=180, check=False,
            env={**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")},
        )
        assert_nothing_leaks(result)
        report = json.loads(result.stdout)
        (checked,) = report["hosts"]
        assert checked["facts"] is not None, checked["findings"]
        assert containers["loud"] in comfyui_containers(checked)
        table = subprocess.run(
            [sys.executable, "-m", "gpuhost", "check", "--host", f"fleet@127.0.0.1:{host.port}", "-F",
             str(lab.ssh_config), "--become"],
            cwd=REPO, capture_output=True, text=True, timeout=180, check=False,
            env={**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")},
        )
        assert_nothing_leaks(table)
    finally:
        lab.stop()
