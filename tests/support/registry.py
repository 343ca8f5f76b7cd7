"""A real image registry on loopback: Debian's `docker-registry` (CNCF distribution 2.8).

It listens on 127.0.0.1 only, on a free port, keeps its blobs in a storage directory of its own
and is stopped (and its directory removed) afterwards. Docker pulls from and pushes to localhost
registries without TLS, so no certificate is involved. With `netns_pid` it runs inside another
process's network namespace (a private dockerd started with `unshare --net`), where the host's
loopback is not reachable.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

REGISTRY_BIN = "docker-registry"
SKOPEO_BIN = "skopeo"
BLOB_INFO_CACHE = "/var/lib/containers/cache"
MANIFEST_TYPES = "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json"


def registry_available() -> bool:
    return shutil.which(REGISTRY_BIN) is not None


def skopeo_available() -> bool:
    return shutil.which(SKOPEO_BIN) is not None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def in_netns(netns_pid: int | None, command: list[str]) -> list[str]:
    """`command`, run inside the network namespace of `netns_pid` when one is given."""
    if netns_pid is None:
        return command
    return ["nsenter", f"--net=/proc/{netns_pid}/ns/net", "--", *command]


class LocalRegistry:
    def __init__(self, base: Path | None = None, netns_pid: int | None = None, port: int | None = None) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="gpuhost-registry-", dir=str(base) if base else "/var/tmp"))
        self.storage = self.base / "storage"
        self.netns_pid = netns_pid
        # a fresh network namespace has every port free; on the host ask the kernel for one
        self.port = port or (free_port() if netns_pid is None else 5000)
        self.log_path = self.base / "registry.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def config(self) -> dict[str, Any]:
        return {
            "version": 0.1,
            "log": {"level": "info", "formatter": "text"},
            "storage": {"filesystem": {"rootdirectory": str(self.storage)}, "delete": {"enabled": True}},
            "http": {"addr": self.address},
        }

    def start(self, timeout: float = 30.0) -> LocalRegistry:
        self.storage.mkdir(parents=True, exist_ok=True)
        config_path = self.base / "config.yml"
        config_path.write_text(json.dumps(self.config()))  # YAML is a superset of JSON
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                in_netns(self.netns_pid, [shutil.which(REGISTRY_BIN) or REGISTRY_BIN, "serve", str(config_path)]),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"docker-registry exited: {self.log_path.read_text()[-2000:]}")
            if self._answers():
                return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"docker-registry did not answer on {self.address} within {timeout:.0f} s")

    def _answers(self) -> bool:
        if self.netns_pid is not None:
            # the host cannot reach that loopback: the registry says when it listens
            return f"listening on {self.address}" in self.log_path.read_text(errors="replace")
        try:
            with urllib.request.urlopen(f"http://{self.address}/v2/", timeout=2) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def get_json(self, path: str, accept: str = MANIFEST_TYPES) -> tuple[dict[str, Any], dict[str, str]]:
        """A GET on the registry's HTTP API from the host (not for a registry in another namespace)."""
        request = urllib.request.Request(f"http://{self.address}{path}", headers={"Accept": accept})
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read(16 * 1024 * 1024)), dict(response.headers)

    def manifest(self, repository: str, reference: str) -> tuple[dict[str, Any], str]:
        """The image manifest of REPOSITORY:REFERENCE and its digest."""
        manifest, headers = self.get_json(f"/v2/{repository}/manifests/{reference}")
        return manifest, headers["Docker-Content-Digest"]

    def skopeo_copy(self, source: str, repository: str, tag: str, *extra: str, timeout: float = 600.0) -> str:
        """`skopeo copy SOURCE docker://ADDRESS/REPOSITORY:TAG` (plain HTTP); returns the destination."""
        destination = f"{self.address}/{repository}:{tag}"
        copy = [SKOPEO_BIN, "copy", "--quiet", "--dest-tls-verify=false", *extra, source, f"docker://{destination}"]
        # skopeo remembers which compressed blob it made of a layer and reuses it, whatever the
        # compression asked for: each copy gets an empty blob-info cache of its own
        command = ["unshare", "--mount", "--", "sh", "-c",
                   f"mkdir -p {BLOB_INFO_CACHE} && mount -t tmpfs tmpfs {BLOB_INFO_CACHE} && exec \"$@\"",
                   "skopeo", *copy]
        proc = subprocess.run(in_netns(self.netns_pid, command), capture_output=True, text=True, timeout=timeout,
                              check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"skopeo copy to {destination} failed: {proc.stderr.strip()[-2000:]}")
        return destination

    def push_uncompressed(self, archive: Path, repository: str, tag: str) -> str:
        """Push a `docker save` archive with its layers as they are, uncompressed: neither `docker
        push` nor skopeo (which always compresses for a registry) can. Returns the destination."""
        if self.netns_pid is not None:
            command = [sys.executable, "-m", "tests.support.registry", self.address, str(archive), repository, tag]
            proc = subprocess.run(in_netns(self.netns_pid, command), capture_output=True, text=True, check=False,
                                  cwd=Path(__file__).resolve().parents[2], timeout=900)
            if proc.returncode != 0:
                raise RuntimeError(f"uncompressed push failed: {proc.stderr.strip()[-2000:]}")
            return proc.stdout.strip()
        return push_archive_uncompressed(self.address, archive, repository, tag)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> LocalRegistry:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


LAYER_TAR = "application/vnd.docker.image.rootfs.diff.tar"
CONFIG_JSON = "application/vnd.docker.container.image.v1+json"
MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"


def _upload_blob(address: str, repository: str, stream: Any, size: int, digest: str) -> None:
    host, port = address.rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=120)
    try:
        connection.request("POST", f"/v2/{repository}/blobs/uploads/")
        response = connection.getresponse()
        response.read()
        if response.status != 202:
            raise RuntimeError(f"blob upload refused: {response.status}")
        location = response.getheader("Location") or ""
        location = location.split(address, 1)[-1]
        separator = "&" if "?" in location else "?"
        connection.request(
            "PUT",
            f"{location}{separator}digest={digest}",
            body=stream,
            headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
        )
        response = connection.getresponse()
        body = response.read()
        if response.status != 201:
            raise RuntimeError(f"blob {digest} not stored: {response.status} {body[:300]!r}")
    finally:
        connection.close()


def push_archive_uncompressed(address: str, archive: Path, repository: str, tag: str) -> str:
    with tarfile.open(archive) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))[0]  # type: ignore[arg-type]
        config = tar.extractfile(manifest["Config"]).read()  # type: ignore[union-attr]
        layers = []
        for name in manifest["Layers"]:
            member = tar.getmember(name)
            digest = hashlib.sha256()
            source = tar.extractfile(member)
            assert source is not None
            for chunk in iter(lambda: source.read(4 * 1024 * 1024), b""):  # noqa: B023
                digest.update(chunk)
            layer_digest = "sha256:" + digest.hexdigest()
            _upload_blob(address, repository, tar.extractfile(member), member.size, layer_digest)
            layers.append({"mediaType": LAYER_TAR, "size": member.size, "digest": layer_digest})
    config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
    _upload_blob(address, repository, config, len(config), config_digest)
    body = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": MANIFEST_V2,
            "config": {"mediaType": CONFIG_JSON, "size": len(config), "digest": config_digest},
            "layers": layers,
        }
    ).encode()
    request = urllib.request.Request(
        f"http://{address}/v2/{repository}/manifests/{tag}", data=body, method="PUT",
        headers={"Content-Type": MANIFEST_V2},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        if response.status != 201:
            raise RuntimeError(f"manifest not stored: {response.status}")
    return f"{address}/{repository}:{tag}"


if __name__ == "__main__":
    # run inside another network namespace by LocalRegistry.push_uncompressed
    print(push_archive_uncompressed(sys.argv[1], Path(sys.argv[2]), sys.argv[3], sys.argv[4]))
