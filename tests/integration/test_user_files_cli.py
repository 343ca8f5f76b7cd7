"""Every command that reads a file a user names, given what is not a file or not a sane one: a FIFO
(and a link to one), a socket, /dev/zero, a directory, a 1 TiB sparse file, JSON and YAML nested
100,000 deep, bytes that are not UTF-8.

Each command runs as a subprocess with a deadline, so a regression that blocks on the FIFO or reads
/dev/zero until memory runs out fails here instead of hanging the suite. Nothing may hang and no
traceback may reach the user; where the kind decides the answer, the exit code and the words are
pinned (docs/files.md).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import pytest

from tests.support.paths import REPO

DEADLINE_S = 60
NO_DOCKER = ("--docker-host", "unix:///nonexistent/docker.sock")
GPUHOST = (sys.executable, "-m", "gpuhost")
AGENT = (sys.executable, "-c", "import sys; from gpuhost.agent import main; sys.exit(main())")

KINDS = ("fifo", "link-to-fifo", "socket", "dev-zero", "directory", "sparse", "deep-json", "deep-yaml", "latin1")
SPECIAL = {
    "fifo": "is a FIFO, not a regular file",
    "link-to-fifo": "is a FIFO, not a regular file",
    "socket": "is a socket, not a regular file",
    "dev-zero": "is a character device, not a regular file",
    "directory": "is a directory, not a regular file",
    "sparse": "is 1099511627776 bytes, more than the",
}


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    base = tmp_path_factory.mktemp("hostile")
    os.mkfifo(base / "fifo.json")
    (base / "link-to-fifo.json").symlink_to(base / "fifo.json")
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(base / "socket.json"))
    with open(base / "sparse.json", "wb") as fh:
        fh.truncate(1 << 40)
    (base / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    (base / "deep.yaml").write_text("- " * 3_000 + "x\n")
    (base / "latin1.json").write_bytes(b'{"a": "caf\xe9"}')
    (base / "directory").mkdir()
    try:
        yield {"fifo": base / "fifo.json", "link-to-fifo": base / "link-to-fifo.json", "socket": base / "socket.json",
               "dev-zero": Path("/dev/zero"), "directory": base / "directory", "sparse": base / "sparse.json",
               "deep-json": base / "deep.json", "deep-yaml": base / "deep.yaml", "latin1": base / "latin1.json"}
    finally:
        server.close()


# What each reader makes of the kinds beyond SPECIAL: (exit code, words), or None where the file is plain
# text to that reader and any answer without a traceback will do.
Expectation = Optional[tuple[int, str]]
JSON_READER: dict[str, Expectation] = {"deep-json": (2, "nests deeper than 100 levels"),
                                       "deep-yaml": (2, "is not valid JSON"),
                                       "latin1": (2, "is not UTF-8 text (byte 0xe9 at offset 10)")}
MANIFEST_READER: dict[str, Expectation] = {**JSON_READER, "deep-yaml": (2, "nests deeper than 100 levels"),
                                           "directory": (2, "no models.manifest.yaml / models.manifest.yml")}


@dataclass
class Command:
    argv: Callable[[Path, Path], list[str]]  # (the hostile path, a scratch directory)
    others: dict[str, Expectation]
    code: int = 2  # the exit code for the kinds in SPECIAL


def storage_plan_config(path: Path, scratch: Path) -> list[str]:
    # daemon.json says data-root is on the mount already: the plan reads the earlier configuration
    daemon_json = scratch / "daemon.json"
    daemon_json.write_text('{"data-root": "/mnt/docker"}')
    return [*AGENT, "storage-plan", "--mount-path", "/mnt/docker", "--daemon-json", str(daemon_json), *NO_DOCKER,
            "--config", str(path)]


def ca_bundle(path: Path, scratch: Path) -> list[str]:
    manifest = scratch / "m.json"
    manifest.write_text('{"models": [{"path": "vae/x.safetensors", "size": 100}]}')
    return [*GPUHOST, "models", "sync", "https://127.0.0.1:9/models", "--manifest", str(manifest), "--to",
            str(scratch / "models"), "--ca-bundle", str(path), "--json"]


NOT_PEM: dict[str, Expectation] = dict.fromkeys(("deep-json", "deep-yaml", "latin1"),
                                                (2, "holds no CA certificate ssl can load"))
ANSIBLE_CANNOT: dict[str, Expectation] = dict.fromkeys(("deep-json", "deep-yaml", "latin1", "directory"),
                                                       (2, "has no hosts"))
SSH_TEXT: dict[str, Expectation] = dict.fromkeys(("deep-json", "deep-yaml", "latin1"), (2, "Unparsable line"))

COMMANDS = {
    "check --workflow": Command(lambda p, s: [*GPUHOST, "check", "--workflow", str(p), "--json", *NO_DOCKER],
                                JSON_READER),
    # a daemon.json check cannot use is a failing finding, as an invalid one always was
    "check --daemon-json": Command(lambda p, s: [*GPUHOST, "check", "--daemon-json", str(p), "--json", *NO_DOCKER],
                                   {k: (1, v[1]) for k, v in JSON_READER.items() if v}, code=1),
    "check --inventory": Command(lambda p, s: [*GPUHOST, "check", "--inventory", str(p), "--json"], ANSIBLE_CANNOT),
    "check -F": Command(lambda p, s: [*GPUHOST, "check", "--host", "gpu-1", "-F", str(p), "--json"], SSH_TEXT),
    "layers --manifest": Command(lambda p, s: [*GPUHOST, "layers", "img", "--manifest", str(p), "--json", *NO_DOCKER],
                                 MANIFEST_READER),
    "models sync --manifest": Command(lambda p, s: [*GPUHOST, "models", "sync", "s3://models/x", "--manifest", str(p),
                                                    "--to", str(s / "models"), "--json"], MANIFEST_READER),
    "models verify --manifest": Command(lambda p, s: [*GPUHOST, "models", "verify", str(s), "--manifest", str(p),
                                                      "--json"], MANIFEST_READER),
    "models sync --ca-bundle": Command(ca_bundle, NOT_PEM),
    "storage plan --daemon-json": Command(lambda p, s: [*GPUHOST, "storage", "plan", "--daemon-json", str(p), "--json",
                                                        *NO_DOCKER], JSON_READER),
    "agent storage-ensure --config": Command(lambda p, s: [*AGENT, "storage-ensure", "--config", str(p)], JSON_READER),
    "agent storage-plan --config": Command(storage_plan_config, {"deep-json": (2, "nests deeper than 100 levels"),
                                                                 "latin1": (2, "is not UTF-8 text"),
                                                                 "deep-yaml": None}),  # not JSON: ignored, as ever
    "agent facts --proc-driver-version": Command(
        lambda p, s: [*AGENT, "facts", "--area", "gpu", "--proc-driver-version", str(p)],
        {"deep-json": (2, "more than the 64 KiB it may have"), "deep-yaml": (0, ""), "latin1": (0, "")}),
    "agent models-sync --manifest": Command(lambda p, s: [*AGENT, "models-sync", "s3://models/x", "--manifest", str(p),
                                                          "--to", str(s / "models")], MANIFEST_READER),
}


def answer_text(stdout: str) -> str:
    """The error of a refused run, or the failing findings of a check."""
    payload = json.loads(stdout)
    if "error" in payload:
        return str(payload["error"])
    return " | ".join(str(f["message"]) for f in payload.get("findings", []) if f["severity"] == "fail")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_no_command_hangs_or_crashes_on_a_hostile_file(hostile: dict[str, Path], tmp_path: Path, name: str,
                                                       kind: str) -> None:
    command = COMMANDS[name]
    proc = subprocess.run(command.argv(hostile[kind], tmp_path), cwd=REPO, capture_output=True, text=True,
                          timeout=DEADLINE_S, check=False)
    assert "Traceback" not in proc.stderr, proc.stderr
    expected: Expectation = (command.code, SPECIAL[kind]) if kind in SPECIAL else command.others.get(kind)
    if kind == "directory" and "directory" in command.others:
        expected = command.others["directory"]
    if expected is None:
        assert proc.returncode in (0, 1, 2, 3), proc.stderr
        return
    code, words = expected
    assert proc.returncode == code, (proc.stdout, proc.stderr)
    if words:
        text = answer_text(proc.stdout)
        assert words in text, text
        if kind in SPECIAL and kind != "dev-zero":
            assert str(hostile[kind]) in text  # the path is named


# every file a collector reads under --root, as far as check reads them from a captured tree
ROOT_FILES = (
    "etc/os-release", "proc/cmdline", "proc/sys/kernel/osrelease", "proc/sys/net/core/bpf_jit_harden",
    "proc/driver/nvidia/params", "var/lib/dpkg/status", "etc/nvidia-container-runtime/config.toml",
    "etc/containerd/config.toml", "etc/gpuhost/docker-storage.json", "etc/gpuhost/models.json",
    "var/lib/gpuhost/storage-probe.json", "boot/grub/grubenv", "sys/class/dmi/id/sys_vendor",
    "sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-e098032b8c4b",
    "run/gpuhost-capture/systemctl-show.txt",
)


@pytest.mark.parametrize("kind", ["fifo", "dev-zero"])
def test_a_captured_tree_with_special_files_is_checked_without_hanging(hostile: dict[str, Path], tmp_path: Path,
                                                                      kind: str) -> None:
    """check --root: a FIFO (or /dev/zero) wherever a collector reads, a deep YAML CDI spec."""
    root = tmp_path / "root"
    for relative in (*ROOT_FILES, "etc/cdi/nvidia.yaml", "proc/driver/nvidia/version"):
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).symlink_to(hostile[kind])
    (root / "etc/cdi/deep.yaml").symlink_to(hostile["deep-yaml"])
    proc = subprocess.run([*GPUHOST, "check", "--root", str(root), *NO_DOCKER, "--json"], cwd=REPO,
                          capture_output=True, text=True, timeout=DEADLINE_S, check=False)
    assert "Traceback" not in proc.stderr, proc.stderr
    report = json.loads(proc.stdout)
    errors = {os.path.basename(spec["path"]): spec["error"] for spec in report["facts"]["cdi"]["specs"]}
    assert errors["nvidia.yaml"] == SPECIAL[kind]
    assert errors["deep.yaml"] == "nests deeper than 100 levels"
    assert report["facts"]["gpu"]["proc_driver"] is None  # /dev/zero is no driver version: none loaded
