"""An image's layer descriptors (media type, compressed size) from its registry.

Docker keeps neither a pulled layer's compression nor its compressed size, so `gpuhost layers`
asks the registry the image came from for the manifest of the digest Docker recorded
(RepoDigests). Plain HTTP for localhost registries (Docker's own rule), HTTPS otherwise, with an
anonymous bearer token when the registry asks for one. A multi-platform image's digest names a
manifest list: the manifest for the image's platform is read from it (one level, as Docker pulls).

Every exchange (gpuhost.exchange: name lookup, connect, TLS, status line, headers, body) fits one
total deadline for the whole fetch, each answer fits a size cap, and each manifest must hash to the
digest that named it. Whatever goes wrong is a RegistryError whose message says what the registry did.
"""

from __future__ import annotations

import hashlib
import platform
import re
import urllib.parse
from dataclasses import dataclass
from typing import Any, Optional

from gpuhost.exchange import Answer, Deadline, ExchangeError, exchange, where_of
from gpuhost.units import MAX_BYTES
from gpuhost.userfile import strict_loads

MANIFEST_TYPES = (
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
)
INDEX_TYPES = (
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.index.v1+json",
)
MANIFEST_ACCEPT = ", ".join(MANIFEST_TYPES + INDEX_TYPES)
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
MAX_TOKEN_BYTES = 1024 * 1024
MAX_REDIRECTS = 3
DEFAULT_DEADLINE_S = 5.0
DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")
# Go's architecture names, as Docker records them in an image's config
_MACHINE_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}


class RegistryError(OSError):
    """The registry could not say: unreachable, refused, too slow, too large, or not a registry's answer."""


@dataclass(frozen=True)
class LayerDescriptor:
    media_type: str
    digest: str
    size: int


@dataclass(frozen=True)
class Platform:
    """The platform whose manifest a manifest list is searched for (an image's Os/Architecture/Variant)."""

    os: str = "linux"
    architecture: str = ""
    variant: str = ""

    @classmethod
    def of_host(cls) -> Platform:
        machine = platform.machine().lower()
        return cls("linux", _MACHINE_ARCH.get(machine, machine))

    def matches(self, entry: dict[str, Any]) -> bool:
        wanted = entry.get("platform")
        if not isinstance(wanted, dict):
            return False
        if wanted.get("os") != self.os or wanted.get("architecture") != self.architecture:
            return False
        return not self.variant or wanted.get("variant") in (None, "", self.variant)

    def __str__(self) -> str:
        return "/".join(part for part in (self.os, self.architecture, self.variant) if part)


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


def _get(url: str, headers: dict[str, str], deadline: Deadline, limit: int) -> Answer:
    """GET, following redirects (at most MAX_REDIRECTS, never from https to http)."""
    for _ in range(MAX_REDIRECTS + 1):
        try:
            answer = exchange("GET", url, deadline, limit, {"User-Agent": "gpuhost-layers", **headers})
        except ExchangeError as exc:
            raise RegistryError(str(exc)) from exc
        if answer.status not in (301, 302, 303, 307, 308):
            return answer
        location = answer.headers.get("Location") or ""
        target = urllib.parse.urljoin(url, location)
        if not location or urllib.parse.urlsplit(target).scheme not in ("http", "https"):
            raise RegistryError(f"{where_of(url)}: HTTP {answer.status} to {location[:200]!r}, not an http(s) URL")
        if url.startswith("https:") and target.startswith("http:"):
            raise RegistryError(f"{where_of(url)}: redirected from https to plain http ({where_of(target)})")
        url = target
    raise RegistryError(f"{where_of(url)}: more than {MAX_REDIRECTS} redirects")


def _json(answer: Answer, what: str) -> Any:
    try:
        return strict_loads(answer.body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RegistryError(f"{where_of(answer.url)}: the {what} is not valid JSON ({str(exc)[:120]})") from exc


def _refusal(answer: Answer) -> RegistryError:
    """An error status, with the registry's own words (the distribution spec's `errors` list) when it gave them."""
    detail = ""
    try:
        errors = strict_loads(answer.body).get("errors")
        if isinstance(errors, list) and errors and isinstance(errors[0], dict):
            detail = " ".join(str(errors[0].get("message") or errors[0].get("code") or "").split())[:200]
    except (ValueError, UnicodeDecodeError, AttributeError):
        pass
    return RegistryError(f"{where_of(answer.url)}: HTTP {answer.status}" + (f": {detail}" if detail else ""))


def _token(challenge: str, deadline: Deadline) -> str:
    fields = dict(
        (key.strip(), value.strip().strip('"'))
        for key, _, value in (part.partition("=") for part in challenge[len("Bearer "):].split(","))
    )
    realm = fields.pop("realm", "")
    if not realm.startswith("https://"):
        raise RegistryError("the registry's token realm is not an https URL")
    answer = _get(f"{realm}?{urllib.parse.urlencode(fields)}", {}, deadline, MAX_TOKEN_BYTES)
    if answer.status != 200:
        raise _refusal(answer)
    data = _json(answer, "token answer")
    token = data.get("token") or data.get("access_token") if isinstance(data, dict) else None
    if not isinstance(token, str) or not token or any(c.isspace() for c in token):
        raise RegistryError(f"{where_of(answer.url)}: the token answer holds no token")
    return token


class _ManifestReader:
    """GETs of one repository's manifests by digest, sharing the deadline and the bearer token."""

    def __init__(self, registry: str, repository: str, deadline: Deadline) -> None:
        scheme = "http" if _plain_http(registry) else "https"
        self.base = f"{scheme}://{registry}/v2/{repository}/manifests/"
        self.deadline = deadline
        self.headers = {"Accept": MANIFEST_ACCEPT}

    def read(self, digest: str) -> tuple[str, dict[str, Any]]:
        """(media type, manifest) of the manifest behind `digest`, checked against the digest."""
        url = self.base + digest
        answer = _get(url, self.headers, self.deadline, MAX_MANIFEST_BYTES)
        challenge = answer.headers.get("WWW-Authenticate", "") if answer.status == 401 else ""
        if challenge.startswith("Bearer ") and "Authorization" not in self.headers:
            self.headers["Authorization"] = f"Bearer {_token(challenge, self.deadline)}"
            answer = _get(url, self.headers, self.deadline, MAX_MANIFEST_BYTES)
        if answer.status != 200:
            raise _refusal(answer)
        if "sha256:" + hashlib.sha256(answer.body).hexdigest() != digest:
            raise RegistryError(
                f"{where_of(url)}: the answer for {digest[:19]}... is not the manifest with that digest"
            )
        manifest = _json(answer, "manifest")
        if not isinstance(manifest, dict):
            raise RegistryError(f"{where_of(url)}: the manifest is not a JSON object")
        header_type = (answer.headers.get("Content-Type") or "").split(";")[0].strip()
        media_type = manifest.get("mediaType") or header_type
        if media_type not in MANIFEST_TYPES + INDEX_TYPES:
            if "manifests" in manifest and isinstance(manifest.get("manifests"), list):
                media_type = INDEX_TYPES[1]  # an OCI index may leave mediaType out
            elif "layers" in manifest:
                media_type = MANIFEST_TYPES[1]
            else:
                raise RegistryError(f"{where_of(url)}: answered {str(media_type)[:80]!r}, not an image manifest")
        return str(media_type), manifest


def fetch_layer_descriptors(
    repo_digest: str, deadline_s: float = DEFAULT_DEADLINE_S, image_platform: Optional[Platform] = None
) -> list[LayerDescriptor]:
    """The layers of the manifest behind `repo_digest` (for a manifest list, of the manifest for
    `image_platform`, by default this host's). Raises RegistryError when the registry cannot say,
    within `deadline_s` seconds in all."""
    parts = split_repo_digest(repo_digest)
    if parts is None or not DIGEST_RE.fullmatch(parts[2]):
        raise RegistryError(f"not a repository digest: {repo_digest[:200]!r}")
    registry, repository, digest = parts
    reader = _ManifestReader(registry, repository, Deadline(deadline_s))
    media_type, manifest = reader.read(digest)
    if media_type in INDEX_TYPES:
        wanted = image_platform or Platform.of_host()
        digest = _platform_digest(manifest, wanted, reader.base)
        media_type, manifest = reader.read(digest)
        if media_type in INDEX_TYPES:
            raise RegistryError(f"{where_of(reader.base)}: the manifest list for {wanted} names another manifest list")
    return _layers(manifest, reader.base)


def _platform_digest(index: dict[str, Any], wanted: Platform, url: str) -> str:
    entries = index.get("manifests")
    if not isinstance(entries, list):
        raise RegistryError(f"{where_of(url)}: the manifest list has no `manifests` list")
    for entry in entries:
        if isinstance(entry, dict) and wanted.matches(entry):
            digest = entry.get("digest")
            if not isinstance(digest, str) or not DIGEST_RE.fullmatch(digest):
                raise RegistryError(f"{where_of(url)}: the manifest list's entry for {wanted} has no sha256 digest")
            return digest
    raise RegistryError(f"{where_of(url)}: the manifest list has no manifest for {wanted}")


def _layers(manifest: dict[str, Any], url: str) -> list[LayerDescriptor]:
    layers = manifest.get("layers")
    if not isinstance(layers, list):
        raise RegistryError(f"{where_of(url)}: the registry's manifest lists no layers")
    descriptors = []
    for number, layer in enumerate(layers, start=1):
        if not isinstance(layer, dict):
            raise RegistryError(f"{where_of(url)}: layer {number} of the manifest is not an object")
        size, media_type, digest = layer.get("size"), layer.get("mediaType"), layer.get("digest")
        if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= MAX_BYTES:
            raise RegistryError(
                f"{where_of(url)}: layer {number}'s size {str(size)[:40]!r} is not a whole number of bytes"
            )
        if not isinstance(media_type, str) or not isinstance(digest, str):
            raise RegistryError(f"{where_of(url)}: layer {number} has no mediaType or digest string")
        descriptors.append(LayerDescriptor(media_type[:200], digest[:200], size))
    return descriptors
