"""An image's layer descriptors (media type, compressed size) from its registry.

Docker keeps neither a pulled layer's compression nor its compressed size, so `gpuhost layers`
asks the registry the image came from for the manifest of the digest Docker recorded
(RepoDigests). Plain HTTP for localhost registries (Docker's own rule), HTTPS otherwise, with an
anonymous bearer token when the registry asks for one. A multi-platform image's digest names a
manifest list: the manifest for the image's platform is read from it (one level, as Docker pulls).

Every exchange (name lookup, connect, TLS, status line, headers, body) fits one total deadline for
the whole fetch, each answer fits a size cap, and each manifest must hash to the digest that named
it. Whatever goes wrong is a RegistryError whose message says what the registry did.
"""

from __future__ import annotations

import hashlib
import http.client
import platform
import re
import socket
import ssl
import threading
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any, Optional

from gpuhost.engine import UnusableAnswer, Watchdog, read_answer, strict_json, unusable_exchange
from gpuhost.units import MAX_BYTES

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
MAX_ERROR_BYTES = 64 * 1024
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


class _Deadline:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.until = time.monotonic() + seconds

    def left(self, where: str) -> float:
        remaining = self.until - time.monotonic()
        if remaining <= 0:
            raise RegistryError(f"{where}: no complete answer within {self.seconds:g} s")
        return remaining


class _Watchdog(Watchdog):
    """The engine's watchdog over what is left of the deadline; late() names the whole deadline."""

    def __init__(self, sock: socket.socket, deadline: _Deadline, where: str) -> None:
        super().__init__(sock, deadline.left(where))
        self.total = deadline.seconds

    def late(self) -> str:
        return f"no complete answer within {self.total:g} s"


@dataclass
class _Answer:
    url: str
    status: int
    headers: http.client.HTTPMessage
    body: bytes


def _resolve(host: str, port: int, deadline: _Deadline) -> list[Any]:
    """getaddrinfo within the deadline: a resolver that never answers is a timeout, not a hang."""
    found: dict[str, Any] = {}

    def lookup() -> None:
        try:
            found["addresses"] = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            found["error"] = exc

    worker = threading.Thread(target=lookup, daemon=True)
    worker.start()
    worker.join(deadline.left(host))
    if worker.is_alive():
        raise RegistryError(f"{host}: the name did not resolve within {deadline.seconds:g} s")
    if "error" in found:
        raise RegistryError(f"{host}: the name does not resolve ({found['error']})")
    return list(found["addresses"])


def _connect(host: str, port: int, deadline: _Deadline) -> socket.socket:
    failure: Optional[OSError] = None
    for family, kind, proto, _, address in _resolve(host, port, deadline):
        sock = socket.socket(family, kind, proto)
        sock.settimeout(deadline.left(f"{host}:{port}"))
        try:
            sock.connect(address)
            return sock
        except OSError as exc:
            sock.close()
            failure = exc
    reason = "connection refused" if isinstance(failure, ConnectionRefusedError) else str(failure or "no address")
    raise RegistryError(f"{host}:{port}: {reason}")


def _exchange(url: str, headers: dict[str, str], deadline: _Deadline, limit: int) -> _Answer:
    """One GET within what is left of the deadline, its body at most `limit` bytes (an error
    status's at most MAX_ERROR_BYTES)."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    https = parts.scheme == "https"
    port = parts.port or (443 if https else 80)
    where = f"{parts.scheme}://{parts.netloc}"
    sock = _connect(host, port, deadline)
    conn: http.client.HTTPConnection
    if https:
        context = ssl.create_default_context()
        try:
            sock = context.wrap_socket(sock, server_hostname=host, do_handshake_on_connect=False)
        except (OSError, ValueError) as exc:
            sock.close()
            raise RegistryError(f"{where}: TLS could not start: {exc}") from exc
        conn = http.client.HTTPSConnection(host, port, context=context)
    else:
        conn = http.client.HTTPConnection(host, port)
    conn.sock = sock  # connected here: the deadline covers the name lookup and the connect too
    watchdog = _Watchdog(sock, deadline, where)
    try:
        try:
            if isinstance(sock, ssl.SSLSocket):
                sock.do_handshake()
            target = parts.path + (f"?{parts.query}" if parts.query else "")
            conn.request("GET", target, headers={"User-Agent": "gpuhost-layers", **headers})
            response = conn.getresponse()
        except ssl.SSLCertVerificationError as exc:
            raise RegistryError(f"{where}: TLS certificate not trusted: {exc.verify_message}") from exc
        except ssl.SSLError as exc:
            if watchdog.expired:
                raise RegistryError(f"{where}: {watchdog.late()}") from exc
            raise RegistryError(f"{where}: not a TLS answer ({exc.reason or exc})") from exc
        except (OSError, ValueError, http.client.HTTPException) as exc:
            raise RegistryError(f"{where}: {unusable_exchange(exc, watchdog)}") from exc
        try:
            body = read_answer(response, limit if response.status < 400 else MAX_ERROR_BYTES, watchdog)
        except UnusableAnswer as exc:
            if response.status >= 400:
                body = b""  # the status says enough
            else:
                raise RegistryError(f"{where}: {exc}") from exc
        finally:
            response.close()
        return _Answer(url, response.status, response.headers, body)
    finally:
        watchdog.cancel()
        conn.close()


def _get(url: str, headers: dict[str, str], deadline: _Deadline, limit: int) -> _Answer:
    """GET, following redirects (at most MAX_REDIRECTS, never from https to http)."""
    for _ in range(MAX_REDIRECTS + 1):
        answer = _exchange(url, headers, deadline, limit)
        if answer.status not in (301, 302, 303, 307, 308):
            return answer
        location = answer.headers.get("Location") or ""
        target = urllib.parse.urljoin(url, location)
        if not location or urllib.parse.urlsplit(target).scheme not in ("http", "https"):
            raise RegistryError(f"{_where(url)}: HTTP {answer.status} to {location[:200]!r}, not an http(s) URL")
        if url.startswith("https:") and target.startswith("http:"):
            raise RegistryError(f"{_where(url)}: redirected from https to plain http ({_where(target)})")
        url = target
    raise RegistryError(f"{_where(url)}: more than {MAX_REDIRECTS} redirects")


def _where(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _json(answer: _Answer, what: str) -> Any:
    try:
        return strict_json(answer.body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RegistryError(f"{_where(answer.url)}: the {what} is not valid JSON ({str(exc)[:120]})") from exc


def _refusal(answer: _Answer) -> RegistryError:
    """An error status, with the registry's own words (the distribution spec's `errors` list) when it gave them."""
    detail = ""
    try:
        errors = strict_json(answer.body).get("errors")
        if isinstance(errors, list) and errors and isinstance(errors[0], dict):
            detail = " ".join(str(errors[0].get("message") or errors[0].get("code") or "").split())[:200]
    except (ValueError, UnicodeDecodeError, AttributeError):
        pass
    return RegistryError(f"{_where(answer.url)}: HTTP {answer.status}" + (f": {detail}" if detail else ""))


def _token(challenge: str, deadline: _Deadline) -> str:
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
        raise RegistryError(f"{_where(answer.url)}: the token answer holds no token")
    return token


class _ManifestReader:
    """GETs of one repository's manifests by digest, sharing the deadline and the bearer token."""

    def __init__(self, registry: str, repository: str, deadline: _Deadline) -> None:
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
            raise RegistryError(f"{_where(url)}: the answer for {digest[:19]}... is not the manifest with that digest")
        manifest = _json(answer, "manifest")
        if not isinstance(manifest, dict):
            raise RegistryError(f"{_where(url)}: the manifest is not a JSON object")
        header_type = (answer.headers.get("Content-Type") or "").split(";")[0].strip()
        media_type = manifest.get("mediaType") or header_type
        if media_type not in MANIFEST_TYPES + INDEX_TYPES:
            if "manifests" in manifest and isinstance(manifest.get("manifests"), list):
                media_type = INDEX_TYPES[1]  # an OCI index may leave mediaType out
            elif "layers" in manifest:
                media_type = MANIFEST_TYPES[1]
            else:
                raise RegistryError(f"{_where(url)}: answered {str(media_type)[:80]!r}, not an image manifest")
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
    reader = _ManifestReader(registry, repository, _Deadline(deadline_s))
    media_type, manifest = reader.read(digest)
    if media_type in INDEX_TYPES:
        wanted = image_platform or Platform.of_host()
        digest = _platform_digest(manifest, wanted, reader.base)
        media_type, manifest = reader.read(digest)
        if media_type in INDEX_TYPES:
            raise RegistryError(f"{_where(reader.base)}: the manifest list for {wanted} names another manifest list")
    return _layers(manifest, reader.base)


def _platform_digest(index: dict[str, Any], wanted: Platform, url: str) -> str:
    entries = index.get("manifests")
    if not isinstance(entries, list):
        raise RegistryError(f"{_where(url)}: the manifest list has no `manifests` list")
    for entry in entries:
        if isinstance(entry, dict) and wanted.matches(entry):
            digest = entry.get("digest")
            if not isinstance(digest, str) or not DIGEST_RE.fullmatch(digest):
                raise RegistryError(f"{_where(url)}: the manifest list's entry for {wanted} has no sha256 digest")
            return digest
    raise RegistryError(f"{_where(url)}: the manifest list has no manifest for {wanted}")


def _layers(manifest: dict[str, Any], url: str) -> list[LayerDescriptor]:
    layers = manifest.get("layers")
    if not isinstance(layers, list):
        raise RegistryError(f"{_where(url)}: the registry's manifest lists no layers")
    descriptors = []
    for number, layer in enumerate(layers, start=1):
        if not isinstance(layer, dict):
            raise RegistryError(f"{_where(url)}: layer {number} of the manifest is not an object")
        size, media_type, digest = layer.get("size"), layer.get("mediaType"), layer.get("digest")
        if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= MAX_BYTES:
            raise RegistryError(
                f"{_where(url)}: layer {number}'s size {str(size)[:40]!r} is not a whole number of bytes"
            )
        if not isinstance(media_type, str) or not isinstance(digest, str):
            raise RegistryError(f"{_where(url)}: layer {number} has no mediaType or digest string")
        descriptors.append(LayerDescriptor(media_type[:200], digest[:200], size))
    return descriptors
