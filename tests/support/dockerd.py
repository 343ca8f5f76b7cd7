"""A private, short-lived dockerd for tests that must change the daemon's configuration.

The shared dockerd on a test machine is not restarted by tests: a test that needs another
daemon.json (an extra runtime, another data-root) starts its own daemon with its own data-root,
exec-root, pidfile and socket, and stops it afterwards. It runs in a network namespace of its
own: a dockerd started with `--bridge none` deletes the host's docker0 (and with it the network
of every container on the default bridge), and its iptables rules stay out of the host's.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from gpuhost.engine import EngineClient, EngineUnavailable


class PrivateDockerd:
    def __init__(self, name: str, config: dict[str, Any] | None = None, base: Path | None = None) -> None:
        self.name = name
        self.base = Path(tempfile.mkdtemp(prefix=f"gpuhost-{name}-", dir=str(base) if base else "/var/tmp"))
        # a unix socket path must stay short (108 bytes)
        self.run_dir = Path(tempfile.mkdtemp(prefix=f"gh-{name[:8]}-", dir="/run"))
        self.socket = self.run_dir / "docker.sock"
        self.config_path = self.base / "daemon.json"
        self.config = dict(config or {})
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = self.base / "dockerd.log"

    @property
    def host(self) -> str:
        return f"unix://{self.socket}"

    def client(self) -> EngineClient:
        return EngineClient(self.host, timeout=30.0)

    def start(self, timeout: float = 60.0) -> PrivateDockerd:
        self.config_path.write_text(json.dumps(self.config, indent=2))
        command = [
            "unshare",
            "--net",
            "--",
            shutil.which("dockerd") or "/usr/sbin/dockerd",
            "--config-file", str(self.config_path),
            "--data-root", str(self.base / "data"),
            "--exec-root", str(self.run_dir / "exec"),
            "--pidfile", str(self.run_dir / "docker.pid"),
            "-H", self.host,
            "--bridge", "none",
            "--iptables=false",
            "--ip-masq=false",
        ]
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"dockerd {self.name} exited: {self.log_path.read_text()[-2000:]}")
            try:
                if self.client().ping():
                    return self
            except (EngineUnavailable, OSError):
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"dockerd {self.name} did not answer within {timeout:.0f} s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        subprocess.run(["umount", "-R", str(self.base / "data")], capture_output=True, check=False)
        shutil.rmtree(self.base, ignore_errors=True)
        shutil.rmtree(self.run_dir, ignore_errors=True)

    def __enter__(self) -> PrivateDockerd:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
