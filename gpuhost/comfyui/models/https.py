"""An http(s) models source: HEAD for size and ETag, Range GETs, redirects followed (a bounded
number), every request within a total deadline (gpuhost.exchange: connect to last byte, a server
that trickles included) and never reading more than it asked for.

Also the one bounded GET `gpuhost models verify --url` uses for ComfyUI's /models/<folder>.
"""

from __future__ import annotations

import ssl
import threading
from collections.abc import Iterator
from typing import Any, Optional
from urllib.parse import quote, urljoin, urlsplit

from gpuhost import userfile
from gpuhost.comfyui.models.source import ChangedObject, MissingObject, RemoteObject, TransientError
from gpuhost.exchange import Deadline, ExchangeError, Opened, Unreachable, Untrusted, open_answer
from gpuhost.model import SourceError, UsageError
from gpuhost.redact import redact_url

MAX_REDIRECTS = 5
CHUNK = 1024 * 1024
RETRY_STATUSES = {408, 425, 429, 500, 502, 503, 504}


def check_http_url(url: str, what: str = "source") -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"{what} {url!r} is not an http(s) URL", "Example: https://models.example.com/comfyui")
    if ".." in parts.path.split("/"):
        raise UsageError(f"{what} {url!r}: the path must not contain `..`")
    return url


class HttpSource:
    def __init__(self, url: str, *, timeout_s: float = 60.0, ca_bundle: Optional[str] = None) -> None:
        self.url = check_http_url(url)
        self.base = url if url.endswith("/") else url + "/"
        self.timeout_s = timeout_s
        self.context = ssl.create_default_context(cafile=ca_bundle) if ca_bundle else ssl.create_default_context()
        self._active: set[Opened] = set()
        self._lock = threading.Lock()
        self._aborted = False

    def abort(self) -> None:
        """Fail every request in flight now (a shut-down socket wakes a blocked read) and every later one."""
        with self._lock:
            self._aborted = True
            active = list(self._active)
        for opened in active:
            opened.abort()

    def _track(self, opened: Opened) -> Opened:
        with self._lock:
            if self._aborted:
                opened.close()
                raise TransientError(f"{redact_url(opened.url)}: stopped")
            self._active.add(opened)
        return opened

    def _release(self, opened: Opened) -> None:
        with self._lock:
            self._active.discard(opened)
        opened.close()

    def _open(self, method: str, url: str, headers: dict[str, str], deadline: Deadline, limit: int) -> Opened:
        """The answer after redirects (each hop sent the same headers, all within one deadline); its
        body is read within the deadline and at most `limit` bytes."""
        for _ in range(MAX_REDIRECTS + 1):
            if self._aborted:
                raise TransientError(f"{redact_url(url)}: stopped")
            try:
                opened = open_answer(method, url, deadline, limit, {"User-Agent": "gpuhost-models", **headers},
                                     context=self.context, use_proxy=False)
            except ExchangeError as exc:
                raise _source_error(url, exc) from exc
            if opened.status in (301, 302, 303, 307, 308):
                location = opened.headers.get("Location") or ""
                status = opened.status
                opened.close()
                if not location:
                    raise SourceError(url, f"HTTP {status} without a Location")
                url = urljoin(url, location)
                if urlsplit(url).scheme not in ("http", "https"):
                    raise SourceError(url, "redirected to a URL that is not http(s)")
                continue
            return self._track(opened)
        raise SourceError(url, f"more than {MAX_REDIRECTS} redirects", "Give the final URL as the source.")

    def _judge(self, status: int, url: str) -> None:
        shown = redact_url(url)
        if status == 404 or status == 410:
            raise MissingObject(f"{shown}: not in the source (HTTP {status})")
        if status in (401, 403):
            raise SourceError(url, f"access refused (HTTP {status})",
                              "Check the URL's credentials or token; the server refuses this client.")
        if status == 412:
            raise ChangedObject(f"{shown}: changed while it was being copied")
        if status == 416:
            raise ChangedObject(
                f"{shown}: changed while it was being copied (now shorter: HTTP 416 to a Range request)"
            )
        if status in RETRY_STATUSES:
            raise TransientError(f"{shown}: HTTP {status}")
        if status >= 400:
            raise SourceError(url, f"HTTP {status}")

    def object_url(self, key: str) -> str:
        return urljoin(self.base, quote(key))

    def stat(self, key: str) -> RemoteObject:
        url = self.object_url(key)
        opened = self._open("HEAD", url, {}, Deadline(self.timeout_s), 0)
        try:
            final = opened.url
            self._judge(opened.status, final)
            length = opened.headers.get("Content-Length")
            if length is None or not length.isdigit() or len(length) > 19:
                raise SourceError(final, "the answer to HEAD gives no Content-Length")
            if (opened.headers.get("Accept-Ranges") or "").lower() != "bytes":
                raise SourceError(final, "the server does not take Range requests (no Accept-Ranges: bytes)",
                                  "Serve the models from a server that does (S3, a CDN, nginx, caddy).")
            version = opened.headers.get("ETag") or opened.headers.get("Last-Modified") or ""
            return RemoteObject(key=url, size=int(length), version=version)
        finally:
            self._release(opened)

    def explain_missing(self, keys: list[str]) -> Optional[Exception]:
        if len(keys) < 2:  # one missing file is that file's problem
            return None
        return SourceError(self.url, f"none of the {len(keys)} files is there (HTTP 404 for each, e.g. "
                           f"{self.object_url(keys[0])})",
                           "Check the base URL: each file is BASE/FOLDER/NAME, or BASE/ the entry's `source`.")

    def read_range(self, obj: RemoteObject, start: int, end: int) -> Iterator[bytes]:
        """The bytes start..end, all within timeout_s; never more than asked for."""
        headers = {"Range": f"bytes={start}-{end - 1}", "Accept-Encoding": "identity"}
        if obj.version:
            headers["If-Range"] = obj.version
        opened = self._open("GET", obj.key, headers, Deadline(self.timeout_s), end - start)
        try:
            final = opened.url
            shown = redact_url(final)
            self._judge(opened.status, final)
            whole = opened.status == 200 and start == 0 and end == obj.size
            if opened.status == 200 and not whole:
                raise ChangedObject(f"{shown}: answered the whole object to a Range request (changed, or no ranges)")
            if opened.status == 206:
                expected = f"bytes {start}-{end - 1}/"
                content_range = opened.headers.get("Content-Range") or ""
                if not content_range.startswith(expected):
                    raise TransientError(f"{shown}: asked for {expected}, got {content_range!r}")
                total = content_range[len(expected):]
                if total.isdigit() and int(total) != obj.size:
                    raise ChangedObject(f"{shown}: changed while it was being copied (now {total} bytes, "
                                        f"was {obj.size})")
            elif not whole:
                raise SourceError(final, f"HTTP {opened.status} to a Range request")
            tag = opened.headers.get("ETag")
            if tag and obj.version.startswith(('"', "W/")) and tag != obj.version:
                raise ChangedObject(f"{shown}: changed while it was being copied (ETag {tag}, was {obj.version})")
            left = end - start
            while left:
                try:
                    chunk = opened.read(min(CHUNK, left))
                except ExchangeError as exc:
                    raise TransientError(f"{shown}: {exc.reason}") from exc
                if not chunk:
                    raise TransientError(f"{shown}: the answer broke off {left} bytes short")
                left -= len(chunk)
                yield chunk
        finally:
            self._release(opened)

    def close(self) -> None:
        return None


def get_json(url: str, timeout_s: float = 10.0, max_bytes: int = 16 * 1024 * 1024) -> Any:
    """GET a JSON document within a total deadline and a size cap (ComfyUI's /models/<folder>)."""
    source = HttpSource(url, timeout_s=timeout_s)
    remedy = "Is ComfyUI serving there? `gpuhost wait-ready NAME`."
    try:
        opened = source._open("GET", url, {"Accept": "application/json"}, Deadline(timeout_s), max_bytes)
        try:
            if opened.status != 200:
                raise SourceError(opened.url, f"HTTP {opened.status}", remedy)
            data = opened.read_all()
        finally:
            source._release(opened)
    except TransientError as exc:
        raise SourceError(url, str(exc), remedy) from exc
    except ExchangeError as exc:
        raise SourceError(url, exc.reason, remedy) from exc
    try:
        return userfile.parse_json(data, "the answer")
    except userfile.UserFileError as exc:  # not JSON, or nested past the parser's depth
        raise SourceError(url, f"the answer is not JSON: {exc}") from None


def _source_error(url: str, exc: ExchangeError) -> Exception:
    """What a failed exchange means to a sync: a TLS certificate or a refused connection will not
    change on a retry; a slow, cut-short or unusable answer might."""
    if isinstance(exc, Untrusted):
        return SourceError(url, exc.reason, "Give the CA that signed it with --ca-bundle FILE.")
    if isinstance(exc, Unreachable) and exc.reason == "connection refused":
        return SourceError(url, "connection refused", "Check the URL and that the server runs.")
    return TransientError(f"{redact_url(url)}: {exc.reason}")
