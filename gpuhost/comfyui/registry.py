"""An image's layer descriptors (media type, compressed size) from its registry.

Docker keeps neither a pulled layer's compression nor its compressed size, so `gpuhost layers`
asks the registry the image came from for the manifest of the digest Docker recorded
(RepoDigests). Plain HTTP for localhost registries (Docker's own rule), HTTPS otherwise, with an
anonymous bearer token when the registry asks for one. One total deadline and a size cap.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any, Optional

MANIFEST_ACCEPT = ", ".join(
    (
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
    )
)
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
DEFAULT_DEADLINE_S = 5.0


@dataclass(frozen=True)
class LayerDescriptor:
    media_type: str
    digest: str
    size: int


def split_repo_digest(repo_digest: str) -> Optional[tuple[str, str, str]]:
    """(registry, repository, digest) of `host[:port]/name@sha256:...`; Docker Hub for bare names."""
    name, _, digest = repo_digest.partition("@")
    if not digest.startswith("sha256:") or not name:
        return None
    first, _, rest = name.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        return first, rest, digest
    return "registry-1.docker.io", name if rest else f"library/{name}", digest


def _plain_http(registry: str) -> bool:
    host = registry.rsplit(":", 1)[0] if registry.count(":") == 1 else registry
    return host in ("localhost", "127.0.0.1", "::1", "[::1]")


def _read(request: urllib.request.Request, deadline: float) -> tuple[bytes, Any]:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("registry deadline passed")
    with urllib.request.urlopen(request, timeout=left) as response:
        body = response.read(MAX_MANIFEST_BYTES + 1)
        if len(body) > MAX_MANIFEST_BYTES:
            raise ValueError("the registry's answer exceeds 4 MiB")
        return body, response.headers


def _token(challenge: str, deadline: float) -> str:
    fields = dict(
        (key.strip(), value.strip('"'))
        for key, _, value in (part.partition("=") for part in challenge[len("Bearer "):].split(","))
    )
    realm = fields.pop("realm", "")
    if not realm.startswith("https://"):
        raise ValueError("the registry's token realm is not an https URL")
    body, _ = _read(urllib.request.Request(f"{realm}?{urllib.parse.urlencode(fields)}"), deadline)
    data = json.loads(body)
    return str(data.get("token") or data.get("access_token") or "")


def fetch_layer_descriptors(repo_digest: str, deadline_s: float = DEFAULT_DEADLINE_S) -> list[LayerDescriptor]:
    """The layers of the manifest behind `repo_digest`. Raises OSError, ValueError or
    TimeoutError when the registry cannot say; a manifest list is refused (Docker records the
    platform manifest's digest for images it pulled)."""
    parts = split_repo_digest(repo_digest)
    if parts is None:
        raise ValueError(f"not a repository digest: {repo_digest[:200]!r}")
    registry, repository, digest = parts
    scheme = "http" if _plain_http(registry) else "https"
    url = f"{scheme}://{registry}/v2/{repository}/manifests/{digest}"
    deadline = time.monotonic() + deadline_s
    headers = {"Accept": MANIFEST_ACCEPT}
    try:
        body, _ = _read(urllib.request.Request(url, headers=headers), deadline)
    except urllib.error.HTTPError as exc:
        challenge = exc.headers.get("WWW-Authenticate", "") if exc.code == 401 else ""
        if not challenge.startswith("Bearer "):
            raise
        headers["Authorization"] = f"Bearer {_token(challenge, deadline)}"
        body, _ = _read(urllib.request.Request(url, headers=headers), deadline)
    manifest = json.loads(body)
    if not isinstance(manifest, dict) or not isinstance(manifest.get("layers"), list):
        raise ValueError("the registry's manifest lists no layers")
    return [
        LayerDescriptor(str(layer.get("mediaType") or ""), str(layer.get("digest") or ""), int(layer.get("size") or 0))
        for layer in manifest["layers"]
        if isinstance(layer, dict)
    ]
