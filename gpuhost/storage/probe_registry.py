"""A registry on this host's loopback that serves the unpack probe's images, so that the probe
times a real `docker pull` instead of a `docker load`.

The two differ where it matters: with the containerd image store a load writes every blob into
containerd's content store first and unpacks afterwards, while a pull unpacks each layer as soon
as it is fetched, beside the fetching of the next; both stores hash and store what they fetch. A
pull from loopback is a pull without the network: the probe's rate then holds everything but the
download's own wait.

It serves only what the registry API needs for a pull (GET/HEAD of /v2/, of a manifest by tag or
digest, and of a blob by digest), listens on 127.0.0.1 on a free port (Docker pulls from 127.0.0.0/8
over plain HTTP), and stops with the probe. Standard library only: it runs in the agent zipapp.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import re
import shutil
import threading
from dataclasses import dataclass
from typing import Any

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER_MEDIA_TYPES = {
    "none": "application/vnd.oci.image.layer.v1.tar",
    "gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
    "zstd": "application/vnd.oci.image.layer.v1.tar+zstd",
}
_PATH = re.compile(r"^/v2/(?P<name>[a-z0-9._/-]+)/(?P<kind>manifests|blobs)/(?P<reference>[A-Za-z0-9_.:-]+)$")


@dataclass(frozen=True)
class Blob:
    digest: str
    size: int
    path: str = ""  # a file, or
    data: bytes = b""  # the bytes themselves


def file_digest(path: str) -> str:
    """The file's content digest as registries and image manifests write it: `sha256:<hex>`."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(4 * 1024 * 1024), b""):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def file_blob(path: str) -> Blob:
    return Blob(file_digest(path), os.path.getsize(path), path=path)


def bytes_blob(data: bytes) -> Blob:
    return Blob("sha256:" + hashlib.sha256(data).hexdigest(), len(data), data=data)


class ProbeRegistry:
    """Manifests and blobs for one repository, served on 127.0.0.1 while the context lasts."""

    def __init__(self, repository: str) -> None:
        self.repository = repository
        self.blobs: dict[str, Blob] = {}
        self.manifests: dict[str, bytes] = {}  # by tag and by digest
        self._server: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> str:
        assert self._server is not None
        return f"127.0.0.1:{self._server.server_address[1]}"

    def add_image(self, tag: str, layers: list[tuple[Blob, str]], config: dict[str, Any]) -> str:
        """Serve an image of `layers` (each blob and its compression) under `tag`; returns its reference."""
        config_blob = bytes_blob(json.dumps(config).encode())
        manifest = json.dumps({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config_blob.digest, "size": config_blob.size},
            "layers": [{"mediaType": LAYER_MEDIA_TYPES[compression], "digest": blob.digest, "size": blob.size}
                       for blob, compression in layers],
        }).encode()
        for blob in [config_blob, *(blob for blob, _ in layers)]:
            self.blobs[blob.digest] = blob
        self.manifests[tag] = manifest
        self.manifests["sha256:" + hashlib.sha256(manifest).hexdigest()] = manifest
        return f"{self.address}/{self.repository}:{tag}"

    def forget(self, tag: str) -> None:
        manifest = self.manifests.pop(tag, None)
        if manifest is not None:
            self.manifests.pop("sha256:" + hashlib.sha256(manifest).hexdigest(), None)

    def __enter__(self) -> ProbeRegistry:
        registry = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def handle_one_request(self) -> None:
                # Docker tries HTTPS first and falls back to plain HTTP only when the answer to its
                # TLS handshake starts with "HTTP/" (containerd's httpFallback), as Go's servers
                # answer; http.server would take the handshake for an HTTP/0.9 request and answer
                # without a status line
                try:
                    first = self.rfile.peek(1)[:1]  # type: ignore[attr-defined]
                except OSError:
                    first = b""
                if first == b"\x16":
                    self.wfile.write(b"HTTP/1.0 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    self.close_connection = True
                    return
                super().handle_one_request()

            def do_HEAD(self) -> None:
                self._answer(body=False)

            def do_GET(self) -> None:
                self._answer(body=True)

            def _answer(self, body: bool) -> None:
                path = self.path.split("?", 1)[0]
                if path in ("/v2", "/v2/"):
                    return self._bytes(b"{}", "application/json", body)
                match = _PATH.match(path)
                if match is None or match.group("name") != registry.repository:
                    return self._bytes(b'{"errors":[{"code":"NAME_UNKNOWN"}]}', "application/json", body, 404)
                reference = match.group("reference")
                if match.group("kind") == "manifests":
                    manifest = registry.manifests.get(reference)
                    if manifest is None:
                        return self._bytes(b'{"errors":[{"code":"MANIFEST_UNKNOWN"}]}', "application/json", body,
                                           404)
                    return self._bytes(manifest, OCI_MANIFEST, body,
                                       digest="sha256:" + hashlib.sha256(manifest).hexdigest())
                blob = registry.blobs.get(reference)
                if blob is None:
                    return self._bytes(b'{"errors":[{"code":"BLOB_UNKNOWN"}]}', "application/json", body, 404)
                if blob.data or not blob.path:
                    return self._bytes(blob.data, "application/octet-stream", body, digest=blob.digest)
                self._headers(blob.size, "application/octet-stream", 200, blob.digest)
                if body:
                    with open(blob.path, "rb") as fh:
                        shutil.copyfileobj(fh, self.wfile, 1024 * 1024)

            def _headers(self, length: int, content_type: str, status: int, digest: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(length))
                self.send_header("Docker-Distribution-API-Version", "registry/2.0")
                if digest:
                    self.send_header("Docker-Content-Digest", digest)
                self.end_headers()

            def _bytes(self, data: bytes, content_type: str, body: bool, status: int = 200, digest: str = "") -> None:
                self._headers(len(data), content_type, status, digest)
                if body:
                    self.wfile.write(data)

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="gpuhost-probe-registry",
                                        daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
