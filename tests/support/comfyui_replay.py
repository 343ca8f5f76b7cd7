"""The ComfyUI replay image: build it, save it, run captures in it, and what each must give.

Run as a module to build (and save) the image outside pytest, e.g. for molecule or the bench:
  python -m tests.support.comfyui_replay [--shared DIR] [--save ARCHIVE.tar]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import socket
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
REPLAY_DIR = REPO / "tests" / "replay"
# the project's own captures (recorded from the real image by scripts/record-comfyui-capture): where one
# has the name of a shared capture it is the one used, everywhere
OWN_CAPTURES = REPO / "tests" / "fixtures" / "comfyui"
OBJECT_INFO = OWN_CAPTURES / "object_info.json"
# the real image's entrypoint: the replay runs its identity code (WANTED_UID/WANTED_GID)
ENTRYPOINT = REPO / "tests" / "comfyui-image" / "entrypoint.py"
# On a daemon shared by several checkouts, GPUHOST_REPLAY_IMAGE and GPUHOST_REPLAY_PREFIX keep one
# checkout's image and containers apart from another's.
IMAGE = os.environ.get("GPUHOST_REPLAY_IMAGE", "gpuhost-comfyui-replay:test")
# the image interface (roles/comfyui/README.md) the stand-in declares as the real image does: every
# container of it carries these labels beside the ones its role sets
INTERFACE_LABELS = {"gpuhost.comfyui.run-as": "wanted_env,user", "gpuhost.comfyui.cmdline-env": "COMFY_CMDLINE_EXTRA",
                    "gpuhost.comfyui.base-directory-env": "BASE_DIRECTORY"}
NAME_PREFIX = os.environ.get("GPUHOST_REPLAY_PREFIX", "gpuhost-comfyui-replay-")
# A bridge network of our own: published ports work on it, and it does not depend on the
# default docker0 bridge (which other users of a shared daemon may tear down).
NETWORK = "gpuhost-comfyui-replay"


@dataclass(frozen=True)
class Expected:
    phase: str
    reason: str
    # the line that decides it (its text starts with this); "" when the probe decides
    line: str
    warnings: tuple[str, ...] = ()
    # the replay's --listen in a container of its own (the capture's GUI lines name what it binds)
    listen: tuple[str, ...] = ("--listen", "0.0.0.0")
    # a capture that stalls: the stall timeout it was recorded for (it fell silent for longer)
    stall_timeout: float | None = None


EXTRAS = ("nodes_audio.py", "nodes_audio_encoder.py")
# Every capture and the verdict wait-ready must reach on it.
CAPTURES: dict[str, Expected] = {
    "startup-cpu": Expected("ready", "ready", "", EXTRAS),
    "startup-cpu-listen-all": Expected("ready", "ready", "", EXTRAS),
    "failure-custom-node-import": Expected("ready", "ready", "", ("broken_node", *EXTRAS)),
    "failure-missing-module": Expected("failed", "missing-module", "ModuleNotFoundError: No module named 'requests'"),
    "failure-missing-module-torchvision": Expected(
        "failed", "missing-module", "ModuleNotFoundError: No module named 'torchvision'"
    ),
    "failure-port-in-use": Expected("failed", "port-in-use", "OSError: [Errno 98]", EXTRAS),
    # recorded from the real image (tests/fixtures/comfyui, scripts/record-comfyui-capture)
    "startup-cpu-listen-dual": Expected("ready", "ready", "", EXTRAS, listen=("--listen",)),
    "startup-cpu-killed": Expected("ready", "ready", "", EXTRAS),
    "failure-custom-node-blocks": Expected(
        "stalled", "stalled", "blocking_node: waiting for a lock that nobody releases", stall_timeout=20.0
    ),
    "failure-user-dir-not-writable": Expected(
        "failed", "dir-not-writable", "Failed to initialize database. Please ensure", EXTRAS
    ),
    "failure-base-dir-not-writable": Expected(
        "failed", "dir-not-writable", "PermissionError: [Errno 13] Permission denied: '/basedir/user'"
    ),
}


def shared_dir() -> Path:
    return Path(os.environ.get("GPUHOST_SHARED", REPO.parent / "shared"))


def capture_file(name: str, shared: Path | None = None) -> Path:
    """A fixture file of the ComfyUI captures (`startup-cpu.timed.log`): the project's copy in
    tests/fixtures/comfyui where there is one, else the shared one."""
    own = OWN_CAPTURES / name
    return own if own.is_file() else (shared or shared_dir()) / "fixtures" / "comfyui" / name


def capture_names(shared: Path | None = None) -> set[str]:
    """Every capture there is (a .timed.log), the project's and the shared ones."""
    dirs = [OWN_CAPTURES, (shared or shared_dir()) / "fixtures" / "comfyui"]
    return {p.name[: -len(".timed.log")] for d in dirs for p in d.glob("*.timed.log")}


def build_context(shared: Path, into: Path) -> Path:
    """A docker build context: the Dockerfile, replay.py, the real image's entrypoint and the captures
    it replays (the shared ones, the project's own over them)."""
    source = shared / "fixtures" / "comfyui"
    if not source.is_dir():
        raise FileNotFoundError(f"no ComfyUI captures at {source}: set GPUHOST_SHARED")
    shutil.copy(REPLAY_DIR / "Dockerfile", into / "Dockerfile")
    shutil.copy(REPLAY_DIR / "replay.py", into / "replay.py")
    shutil.copy(ENTRYPOINT, into / "comfyui_entrypoint.py")
    fixtures = into / "fixtures"
    fixtures.mkdir()
    for path in sorted(source.iterdir()):
        if path.name.endswith((".timed.log", ".json")) or path.name.startswith("prompt-"):
            shutil.copy(path, fixtures / path.name)
    for path in sorted(OWN_CAPTURES.iterdir()):
        if path.name.endswith((".timed.log", ".http.json")) or path == OBJECT_INFO:
            shutil.copy(path, fixtures / path.name)
    for path in [into / "replay.py", into / "comfyui_entrypoint.py", *fixtures.iterdir()]:
        path.chmod(0o644)
    return into


def build_image(shared: Path | None = None, tag: str = IMAGE) -> str:
    import docker

    client = docker.from_env()
    with tempfile.TemporaryDirectory(prefix="gpuhost-comfyui-replay-") as tmp:
        context = build_context(shared or shared_dir(), Path(tmp))
        client.images.build(path=str(context), tag=tag, rm=True, network_mode="none", pull=False)
    return tag


def save_image(path: Path, tag: str = IMAGE) -> Path:
    import docker

    client = docker.from_env()
    image = client.images.get(tag)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    with open(tmp, "wb") as fh:
        # the archive names the image by this tag: another tag of the same image (another checkout's
        # GPUHOST_REPLAY_IMAGE) may come first in its list, and the role loads it by this name
        for chunk in image.save(named=tag):
            fh.write(chunk)
    tmp.replace(path)
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_capture(
    client: Any,
    capture: str,
    name: str,
    host_port: int | None = None,
    host_network: bool = False,
    extra_args: tuple[str, ...] = (),
    **kwargs: Any,
) -> Any:
    """Start a replay container (docker SDK). Bridge: the capture's --listen (0.0.0.0, or a bare
    --listen for a dual-stack capture) with the port published on 127.0.0.1 (a free port unless given).
    Host network: --listen 127.0.0.1 --port host_port."""
    if host_network:
        port = host_port or free_port()
        command = ["play", capture, "--listen", "127.0.0.1", "--port", str(port), *extra_args]
        return client.containers.run(IMAGE, command, name=name, detach=True, network_mode="host", **kwargs)
    listen = CAPTURES[capture].listen if capture in CAPTURES else ("--listen", "0.0.0.0")
    command = ["play", capture, *listen, "--port", "8188", *extra_args]
    ports = {"8188/tcp": ("127.0.0.1", host_port)}
    kwargs.setdefault("network", ensure_network(client))
    return client.containers.run(IMAGE, command, name=name, detach=True, ports=ports, **kwargs)


def ensure_network(client: Any, name: str = NETWORK) -> str:
    if not client.networks.list(names=[name]):
        client.networks.create(name, driver="bridge", labels={"gpuhost.test": "comfyui"})
    return name


def remove_network(client: Any, name: str = NETWORK) -> None:
    for network in client.networks.list(names=[name]):
        network.remove()


def run_holder(client: Any, name: str, port: int) -> Any:
    """The first instance of the port-in-use capture: serves on 127.0.0.1:port (host network)."""
    return client.containers.run(
        IMAGE, ["hold", "--listen", "127.0.0.1", "--port", str(port)], name=name, detach=True, network_mode="host"
    )


def remove(client: Any, name: str) -> None:
    import docker.errors

    with contextlib.suppress(docker.errors.NotFound):
        client.containers.get(name).remove(force=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build (and save) the ComfyUI replay image.")
    parser.add_argument("--shared", type=Path, default=None, help="the shared/ directory (default: GPUHOST_SHARED)")
    parser.add_argument("--tag", default=IMAGE)
    parser.add_argument("--save", type=Path, default=None, help="also write `docker save` of it here")
    args = parser.parse_args(argv)
    tag = build_image(args.shared, args.tag)
    print(tag)
    if args.save:
        print(save_image(args.save, tag))
    return 0


if __name__ == "__main__":
    sys.exit(main())
