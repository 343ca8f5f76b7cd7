"""An http(s) models source: HEAD for size and ETag, Range GETs, redirects followed (a bounded
number), every request within a total deadline and never reading more than it asked for.

Also the one bounded GET `gpuhost models verify --url` uses for ComfyUI's /models/<folder>.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from typing import Any, Optional
from urllib.parse import quote, urljoin, urlsplit

from gpuhost import userfile
from gpuhost.comfyui.models.source import ChangedObject, MissingObject, RemoteObject, TransientError
from gpuhost.model import SourceError, UsageError
from gpuhost.redact import redact_url

MAX_REDIRECTS = 5
CHUNK = 1024 * 1024
RETRY_STATUSES = {408, 425, 429, 500, 502, 503, 504}


def check_http_url(url: str, what: str = "source") -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"{what} {redact_url(url)!r} is not an http(s) URL",
                         "Example: https://models.example.com/comfyui")
    if ".." in parts.path.split("/"):
        raise UsageError(f"{what} {redact_url(url)!r}: the path must not contain `..`")
    return url


class _Deadline:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.until = time.monotonic() + seconds

    def left(self, what: str) -> float:
        remaining = self.until - time.monotonic()
        if remaining <= 0:
            raise TransientError(f"{what}: no complete answer within {self.seconds:g} s")
        return remaining


class HttpSource:
    def __init__(self, url: str, *, timeout_s: float = 60.0, ca_bundle: Optional[str] = None) -> None:
        self.url = check_http_url(url)
        self.base = url if url.endswith("/") else url + "/"
        self.timeout_s = timeout_s
        self.context = ssl.create_default_context(cafile=ca_bundle) if ca_bundle else ssl.create_default_context()
        self._active: set[http.client.HTTPConnection] = set()
        self._lock = threading.Lock()
        self._aborted = False

    def abort(self) -> None:
        """Fail every request in flight now (a shut-down socket wakes a blocked read) and every later one."""
        with self._lock:
            self._aborted = True
            active = list(self._active)
        for conn in active:
            if conn.sock is not None:
                with contextlib.suppress(OSError):
                    conn.sock.shutdown(socket.SHUT_RDWR)

    def _release(self, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            self._active.discard(conn)
        conn.close()

    def _open(self, method: str, url: str, headers: dict[str, str],
              deadline: _Deadline) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse, str]:
        """The answer after redirects (each hop sent the same headers), and the URL that gave it."""
        for _ in range(MAX_REDIRECTS + 1):
            parts = urlsplit(url)
            timeout = deadline.left(redact_url(url))
            conn: http.client.HTTPConnection
            if parts.scheme == "https":
                conn = http.client.HTTPSConnection(parts.hostname or "", parts.port or 443, timeout=timeout,
                                                   context=self.context)
            else:
                conn = http.client.HTTPConnection(parts.hostname or "", parts.port or 80, timeout=timeout)
            with self._lock:
                if self._aborted:
                    raise TransientError(f"{redact_url(url)}: stopped")
                self._active.add(conn)
            path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            try:
                conn.request(method, path, headers={"User-Agent": "gpuhost-models", **headers})
                response = conn.getresponse()
            except ssl.SSLCertVerificationError as exc:
                self._release(conn)
                raise SourceError(url, f"TLS certificate not trusted: {exc.verify_message}",
                                  "Give the CA that signed it with --ca-bundle FILE.") from exc
            except (OSError, http.client.HTTPException) as exc:
                self._release(conn)
                if isinstance(exc, ConnectionRefusedError):
                    raise SourceError(url, "connection refused", "Check the URL and that the server runs.") from exc
                raise TransientError(f"{redact_url(url)}: {type(exc).__name__}: {exc}") from exc
            if response.status in (301, 302, 303, 307, 308):
                location = response.getheader("Location") or ""
                response.read(64 * 1024)
                self._release(conn)
                if not location:
                    raise SourceError(url, f"HTTP {response.status} without a Location")
                url = urljoin(url, location)
                if urlsplit(url).scheme not in ("http", "https"):
                    raise SourceError(url, "redirected to a URL that is not http(s)")
                continue
            return conn, response, url
        raise SourceError(url, f"more than {MAX_REDIRECTS} redirects", "Give the final URL as the source.")

    def _judge(self, response: http.client.HTTPResponse, url: str) -> None:
        status = response.status
        if status == 404 or status == 410:
            raise MissingObject(f"{redact_url(url)}: not in the source (HTTP {status})")
        if status in (401, 403):
            raise SourceError(url, f"access refused (HTTP {status})",
                              "Check the URL's credentials or token; the server refuses this client.")
        if status == 412:
            raise ChangedObject(f"{redact_url(url)}: changed while it was being copied")
        if status == 416:
            raise ChangedObject(
                f"{redact_url(url)}: changed while it was being copied (now shorter: HTTP 416 to a Range request)"
            )
        if status in RETRY_STATUSES:
            raise TransientError(f"{redact_url(url)}: HTTP {status}")
        if status >= 400:
            raise SourceError(url, f"HTTP {status}")

    def object_url(self, key: str) -> str:
        return urljoin(self.base, quote(key))

    def stat(self, key: str) -> RemoteObject:
        url = self.object_url(key)
        deadline = _Deadline(self.timeout_s)
        conn, response, final = self._open("HEAD", url, {}, deadline)
        try:
            self._judge(response, final)
            length = response.getheader("Content-Length")
            if length is None or not length.isdigit():
                raise SourceError(final, "the answer to HEAD gives no Content-Length")
            if (response.getheader("Accept-Ranges") or "").lower() != "bytes":
                raise SourceError(final, "the server does not take Range requests (no Accept-Ranges: bytes)",
                                  "Serve the models from a server that does (S3, a CDN, nginx, caddy).")
            version = response.getheader("ETag") or response.getheader("Last-Modified") or ""
            return RemoteObject(key=url, size=int(length), version=version)
        finally:
            self._release(conn)

    def explain_missing(self, keys: list[str]) -> Optional[Exception]:
        if len(keys) < 2:  # one missing file is that file's problem
            return None
        return SourceError(self.url, f"none of the {len(keys)} files is there (HTTP 404 for each, e.g. "
                           f"{self.object_url(keys[0])})",
                           "Check the base URL: each file is BASE/FOLDER/NAME, or BASE/ the entry's `source`.")

    def read_range(self, obj: RemoteObject, start: int, end: int) -> Iterator[bytes]:
        deadline = _Deadline(self.timeout_s)
        headers = {"Range": f"bytes={start}-{end - 1}", "Accept-Encoding": "identity"}
        if obj.version:
            headers["If-Range"] = obj.version
        conn, response, final = self._open("GET", obj.key, headers, deadline)
        try:
            self._judge(response, final)
            whole = response.status == 200 and start == 0 and end == obj.size
            if response.status == 200 and not whole:
                raise ChangedObject(
                    f"{redact_url(final)}: answered the whole object to a Range request (changed, or no ranges)")
            if response.status == 206:
                expected = f"bytes {start}-{end - 1}/"
                content_range = response.getheader("Content-Range") or ""
                if not content_range.startswith(expected):
                    raise TransientError(f"{redact_url(final)}: asked for {expected}, got {content_range!r}")
                total = content_range[len(expected):]
                if total.isdigit() and int(total) != obj.size:
                    raise ChangedObject(f"{redact_url(final)}: changed while it was being copied (now {total} bytes, "
                                        f"was {obj.size})")
            elif not whole:
                raise SourceError(final, f"HTTP {response.status} to a Range request")
            tag = response.getheader("ETag")
            if tag and obj.version.startswith(('"', "W/")) and tag != obj.version:
                raise ChangedObject(
                    f"{redact_url(final)}: changed while it was being copied (ETag {tag}, was {obj.version})"
                )
            left = end - start
            while left:
                if conn.sock is not None:
                    conn.sock.settimeout(min(deadline.left(redact_url(final)), self.timeout_s))
                try:
                    chunk = response.read(min(CHUNK, left))
                except (OSError, http.client.HTTPException) as exc:
                    raise TransientError(f"{redact_url(final)}: {type(exc).__name__}: {exc}") from exc
                if not chunk:
                    raise TransientError(f"{redact_url(final)}: the answer broke off {left} bytes short")
                left -= len(chunk)
                yield chunk
        finally:
            self._release(conn)

    def close(self) -> None:
        return None


def get_json(url: str, timeout_s: float = 10.0, max_bytes: int = 16 * 1024 * 1024) -> Any:
    """GET a JSON document within a total deadline and a size cap (ComfyUI's /models/<folder>)."""
    source = HttpSource(url, timeout_s=timeout_s)
    deadline = _Deadline(timeout_s)
    try:
        conn, response, final = source._open("GET", url, {"Accept": "application/json"}, deadline)
    except TransientError as exc:
        raise SourceError(url, str(exc), "Is ComfyUI serving there? `gpuhost wait-ready NAME`.") from exc
    try:
        if response.status != 200:
            raise SourceError(final, f"HTTP {response.status}", "Is ComfyUI serving there? `gpuhost wait-ready NAME`.")
        data = b""
        while len(data) <= max_bytes:
            if conn.sock is not None:
                conn.sock.settimeout(deadline.left(redact_url(final)))
            chunk = response.read(CHUNK)
            if not chunk:
                break
            data += chunk
        if len(data) > max_bytes:
            raise SourceError(final, f"the answer is larger than {max_bytes} bytes")
        try:
            return userfile.parse_json(data, f"the answer of {final}")
        except userfile.UserFileError as exc:  # not JSON, or nested past the parser's depth
            raise SourceError(url, str(exc)) from None
    except (TransientError, socket.timeout, OSError, http.client.HTTPException) as exc:
        raise SourceError(url, f"{type(exc).__name__}: {exc}") from exc
    finally:
        conn.close()
