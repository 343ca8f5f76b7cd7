"""An http(s) models source: HEAD for size and ETag, Range GETs, redirects followed (a bounded
number), every request within a total deadline (gpuhost.exchange: connect to last byte, a server
that trickles included) and never reading more than it asked for.

Also the one bounded GET `gpuhost models verify --url` uses for ComfyUI's /models/<folder>.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from typing import Any, Optional
from urllib.parse import quote, urljoin, urlsplit

from gpuhost.comfyui.models.source import ChangedObject, MissingObject, RemoteObject, TransientError
from gpuhost.engine import strict_json
from gpuhost.exchange import Deadline, ExchangeError, Opened, Unreachable, Untrusted, open_answer
from gpuhost.model import SourceError, UsageError

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

    def _open(self, method: str, url: str, headers: dict[str, str], deadline: Deadline, limit: int) -> Opened:
        """The answer after redirects (each hop sent the same headers, all within one deadline); its
        body is read within the deadline and at most `limit` bytes."""
        for _ in range(MAX_REDIRECTS + 1):
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
            return opened
        raise SourceError(url, f"more than {MAX_REDIRECTS} redirects", "Give the final URL as the source.")

    def _judge(self, status: int, url: str) -> None:
        if status == 404 or status == 410:
            raise MissingObject(f"{url}: not in the source (HTTP {status})")
        if status in (401, 403):
            raise SourceError(url, f"access refused (HTTP {status})",
                              "Check the URL's credentials or token; the server refuses this client.")
        if status == 412:
            raise ChangedObject(f"{url}: changed while it was being copied")
        if status in RETRY_STATUSES:
            raise TransientError(f"{url}: HTTP {status}")
        if status >= 400:
            raise SourceError(url, f"HTTP {status}")

    def object_url(self, key: str) -> str:
        return urljoin(self.base, quote(key))

    def stat(self, key: str) -> RemoteObject:
        url = self.object_url(key)
        with self._open("HEAD", url, {}, Deadline(self.timeout_s), 0) as opened:
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

    def read_range(self, obj: RemoteObject, start: int, end: int) -> Iterator[bytes]:
        """The bytes start..end, all within timeout_s; never more than asked for."""
        headers = {"Range": f"bytes={start}-{end - 1}", "Accept-Encoding": "identity"}
        if obj.version:
            headers["If-Range"] = obj.version
        with self._open("GET", obj.key, headers, Deadline(self.timeout_s), end - start) as opened:
            final = opened.url
            self._judge(opened.status, final)
            whole = opened.status == 200 and start == 0 and end == obj.size
            if opened.status == 200 and not whole:
                raise ChangedObject(f"{final}: answered the whole object to a Range request (changed, or no ranges)")
            if opened.status == 206:
                expected = f"bytes {start}-{end - 1}/"
                content_range = opened.headers.get("Content-Range") or ""
                if not content_range.startswith(expected):
                    raise TransientError(f"{final}: asked for {expected}, got {content_range!r}")
            elif not whole:
                raise SourceError(final, f"HTTP {opened.status} to a Range request")
            left = end - start
            while left:
                try:
                    chunk = opened.read(min(CHUNK, left))
                except ExchangeError as exc:
                    raise TransientError(f"{final}: {exc.reason}") from exc
                if not chunk:
                    raise TransientError(f"{final}: the answer broke off {left} bytes short")
                left -= len(chunk)
                yield chunk

    def close(self) -> None:
        return None


def get_json(url: str, timeout_s: float = 10.0, max_bytes: int = 16 * 1024 * 1024) -> Any:
    """GET a JSON document within a total deadline and a size cap (ComfyUI's /models/<folder>)."""
    source = HttpSource(url, timeout_s=timeout_s)
    remedy = "Is ComfyUI serving there? `gpuhost wait-ready NAME`."
    try:
        with source._open("GET", url, {"Accept": "application/json"}, Deadline(timeout_s), max_bytes) as opened:
            if opened.status != 200:
                raise SourceError(opened.url, f"HTTP {opened.status}", remedy)
            data = opened.read_all()
    except TransientError as exc:
        raise SourceError(url, str(exc), remedy) from exc
    except ExchangeError as exc:
        raise SourceError(url, exc.reason, remedy) from exc
    try:
        return strict_json(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise SourceError(url, f"the answer is not JSON: {exc}") from exc


def _source_error(url: str, exc: ExchangeError) -> Exception:
    """What a failed exchange means to a sync: a TLS certificate or a refused connection will not
    change on a retry; a slow, cut-short or unusable answer might."""
    if isinstance(exc, Untrusted):
        return SourceError(url, exc.reason, "Give the CA that signed it with --ca-bundle FILE.")
    if isinstance(exc, Unreachable) and exc.reason == "connection refused":
        return SourceError(url, "connection refused", "Check the URL and that the server runs.")
    return TransientError(f"{url}: {exc.reason}")
