"""The real ComfyUI 0.3.64 (gpuhost-comfyui:0.3.64, built by scripts/build-comfyui-image) for tests
and benches: make sure the image is built, start a server on 127.0.0.1, time its first HTTP 200.

    from tests.support.comfyui_real import ensure_image, real_comfyui

    ensure_image()                         # seconds when up to date; fails with the reason otherwise
    with real_comfyui(tmp_path) as server:
        server.wait_ready()                # gpuhost's own verdict, or RuntimeError with it
        urllib.request.urlopen(server.url + "/object_info")

Each server is a container of the image in the host network, listening on 127.0.0.1 and a free
port (`--listen 127.0.0.1 --port N`, no bridge), on the CPU (`--cpu`), as a non-root host id
(WANTED_UID/WANTED_GID, or `--user` with run_as="user"), with ComfyUI's base directory made of
folders under the test's directory (models, custom_nodes, user, input, output: each mounted at
/basedir/<name>, owned by that id). It is removed on leaving the block.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.paths import REPO

IMAGE = "gpuhost-comfyui:0.3.64"
NAME_PREFIX = "gpuhost-comfyui-real-"
BUILD_SCRIPT = REPO / "scripts" / "build-comfyui-image"
KEY_LABEL = "gpuhost.comfyui-image.key"
BASE_FOLDERS = ("models", "custom_nodes", "user", "input", "output")
# an id no account on the host has: files ComfyUI writes show who wrote them
DEFAULT_ID = 4243


def image_key() -> str:
    """The key the up-to-date image carries (the build script's hash of what it is made from)."""
    done = subprocess.run([str(BUILD_SCRIPT), "--key"], capture_output=True, text=True, check=False, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"scripts/build-comfyui-image --key: {done.stderr.strip()}")
    return done.stdout.strip()


def image_is_current() -> bool:
    done = subprocess.run(["docker", "image", "inspect", "-f", f'{{{{index .Config.Labels "{KEY_LABEL}"}}}}', IMAGE],
                          capture_output=True, text=True, check=False, timeout=60)
    return done.returncode == 0 and done.stdout.strip() == image_key()


def ensure_image(timeout: float = 3600.0) -> str:
    """Build the image unless it is up to date (scripts/build-comfyui-image: seconds when it is)."""
    done = subprocess.run([str(BUILD_SCRIPT)], capture_output=True, text=True, check=False, timeout=timeout,
                          cwd=REPO)
    if done.returncode != 0:
        raise RuntimeError(f"scripts/build-comfyui-image failed:\n{done.stderr[-4000:]}")
    return IMAGE


def free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_status(url: str, timeout: float = 2.0) -> int:
    """The status of a GET (0: no answer); reads at most 1 MiB of the body."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:
            answer.read(1024 * 1024)
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (OSError, ValueError):
        return 0


def get_json(url: str, timeout: float = 30.0, limit: int = 64 * 1024 * 1024) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as answer:
        return json.loads(answer.read(limit))


class FirstOK:
    """A poller of its own: GET `url` every `interval` s until the first 200 (or `timeout`), in a
    thread; `at` is the wall-clock time that answer arrived (None without one)."""

    def __init__(self, url: str, interval: float = 0.02, timeout: float = 300.0) -> None:
        self.url, self.interval, self.timeout = url, interval, timeout
        self.at: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        deadline = time.monotonic() + self.timeout
        while not self._stop.is_set() and time.monotonic() < deadline:
            if http_status(self.url, timeout=1.0) == 200:
                self.at = time.time()
                return
            self._stop.wait(self.interval)

    def start(self) -> FirstOK:
        self._thread.start()
        return self

    def join(self, timeout: float | None = None) -> float | None:
        self._thread.join(timeout)
        return self.at

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


@dataclass
class RealComfyUI:
    name: str
    port: int
    base_dir: Path
    uid: int
    gid: int
    started_at: float
    container: Any = field(repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def folder(self, name: str) -> Path:
        return self.base_dir / name

    def logs(self) -> str:
        return bytes(self.container.logs()).decode(errors="replace")

    def wait_ready(self, timeout: float = 300.0, stall_timeout: float = 120.0) -> Any:
        """gpuhost's verdict on the container (the library call wait-ready makes); RuntimeError
        with the verdict and the log's tail unless it is ready."""
        from gpuhost.comfyui.wait import WaitOptions, wait_ready
        from gpuhost.engine import EngineClient

        result = wait_ready(EngineClient(), self.name, WaitOptions(timeout=timeout, stall_timeout=stall_timeout))
        if result.verdict.phase.value != "ready":
            raise RuntimeError(f"{self.name} is not ready: {json.dumps(result.to_dict())[:3000]}\n"
                               f"{self.logs()[-3000:]}")
        return result


def make_base_dir(root: Path, uid: int, gid: int) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name in BASE_FOLDERS:
        path = root / name
        path.mkdir(exist_ok=True)
        os.chown(path, uid, gid)
    return root


@contextlib.contextmanager
def real_comfyui(
    work_dir: Path,
    *,
    uid: int = DEFAULT_ID,
    gid: int = DEFAULT_ID,
    run_as: str = "wanted_env",
    args: Sequence[str] = ("--cpu",),
    environment: Mapping[str, str] | None = None,
    volumes: Mapping[str, dict[str, str]] | None = None,
    port: int | None = None,
    name: str | None = None,
) -> Iterator[RealComfyUI]:
    """Start the real ComfyUI (see the module's docstring); `args` go in COMFY_CMDLINE_EXTRA,
    `volumes` are more docker SDK volume entries. The image must be built (ensure_image)."""
    import docker
    import docker.errors

    if run_as not in ("wanted_env", "user"):
        raise ValueError(f"run_as is wanted_env or user, not {run_as!r}")
    client = docker.from_env()
    port = port or free_port()
    name = name or f"{NAME_PREFIX}{uuid.uuid4().hex[:8]}"
    base_dir = make_base_dir(work_dir / "basedir", uid, gid)
    mounts = {str(base_dir / folder): {"bind": f"/basedir/{folder}", "mode": "rw"} for folder in BASE_FOLDERS}
    mounts.update(volumes or {})
    env = {"COMFY_CMDLINE_EXTRA": " ".join(args)}
    if run_as == "wanted_env":
        env.update(WANTED_UID=str(uid), WANTED_GID=str(gid))
    env.update(environment or {})
    container = client.containers.run(
        IMAGE, ["--listen", "127.0.0.1", "--port", str(port)], name=name, detach=True, network_mode="host",
        environment=env, volumes=mounts, user=f"{uid}:{gid}" if run_as == "user" else None,
        labels={"gpuhost.test": "comfyui-real"},
    )
    started = time.time()
    try:
        yield RealComfyUI(name, port, base_dir, uid, gid, started, container)
    finally:
        with contextlib.suppress(docker.errors.NotFound):
            client.containers.get(name).remove(force=True)
