"""ComfyUI's HTTP API, standard library only: the readiness probe and JSON calls.

Every read has a total deadline (a server that trickles a byte a second meets it) and a size cap
(a 100 MB /object_info is refused, not held in memory); an answer that is not HTTP, is cut short or
is not JSON is a BadAnswer.
"""

from __future__ import annotations

import http.client
import socket
import time
from typing import Any, Optional
from urllib.parse import SplitResult, urlsplit

from gpuhost.comfyui.readiness import ProbeResult
from gpuhost.engine import UnusableAnswer, Watchdog, read_answer, unusable_exchange
from gpuhost.model import UsageError
from gpuhost.redact import redact_url
from gpuhost.userfile import strict_loads

# /object_info of a server with many custom nodes and model lists is a few MB; 32 MiB leaves room
# and keeps the parsed form well under a few hundred MB of memory.
MAX_JSON_BYTES = 32 * 1024 * 1024
# a probe needs the status only; /system_stats is a few KB
MAX_PROBE_BYTES = 1024 * 1024
URL_EXAMPLE = "Example: http://127.0.0.1:8188"


class BadAnswer(OSError):
    """The server answered, but not usably: not HTTP, cut short, too large, too late or not JSON."""


def check_url(url: str, what: str = "URL") -> SplitResult:
    """An http(s) URL with a host and a port from 1 to 65535, nothing around it; UsageError otherwise
    (showing the URL without its credentials)."""
    shown = redact_url(url) if isinstance(url, str) else url
    if not isinstance(url, str) or url != url.strip() or any(c.isspace() or ord(c) < 32 for c in url):
        raise UsageError(f"{what} {shown!r}: spaces or control characters in a URL", URL_EXAMPLE)
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise UsageError(f"{what} {shown!r}: not an http(s) URL", URL_EXAMPLE)
    try:
        port = parts.port
    except ValueError:
        raise UsageError(f"{what} {shown!r}: the port is not a number from 1 to 65535", URL_EXAMPLE) from None
    if not parts.hostname or port == 0:
        raise UsageError(f"{what} {shown!r}: write http://HOST:PORT", URL_EXAMPLE)
    return parts


def probe(url: str, timeout: float = 2.0, clock: Any = time.time) -> ProbeResult:
    """GET url once: the status, or why there was no HTTP answer."""
    status: Optional[int] = None
    error = ""
    sent_at = clock()  # a 200 counts from when it was asked for, not when it arrived
    try:
        status, _ = request("GET", url, timeout=timeout, max_bytes=MAX_PROBE_BYTES)
    except ConnectionRefusedError:
        error = "connection refused"
    except ConnectionResetError:
        error = "connection reset"
    except socket.timeout:
        error = f"no answer within {timeout:g} s"
    except BadAnswer as exc:
        error = str(exc)
    except (OSError, http.client.HTTPException, UsageError) as exc:
        error = type(exc).__name__ + (f": {exc}" if str(exc) else "")
    return ProbeResult(at=sent_at, url=redact_url(url), status=status, error=error)


def request(
    method: str,
    url: str,
    body: Optional[bytes] = None,
    timeout: float = 10.0,
    content_type: str = "application/json",
    max_bytes: int = MAX_JSON_BYTES,
) -> tuple[int, bytes]:
    """(status, body): connected within `timeout`, the whole answer within `timeout` more, at most
    `max_bytes`. UsageError for a bad URL, OSError when nothing answers, BadAnswer for a bad answer."""
    parts = check_url(url)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or (443 if parts.scheme == "https" else 80)
    conn: http.client.HTTPConnection
    if parts.scheme == "https":
        conn = http.client.HTTPSConnection(host, port, timeout=timeout)
    else:
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    headers = {"Content-Type": content_type} if body is not None else {}
    try:
        conn.connect()
        watchdog = Watchdog(conn, timeout)
        try:
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            raise BadAnswer(f"{redact_url(base_url(url))}: {unusable_exchange(exc, watchdog)}") from exc
        try:
            return response.status, read_answer(response, max_bytes, watchdog)
        except UnusableAnswer as exc:
            raise BadAnswer(f"{redact_url(base_url(url))}: {exc}") from exc
        finally:
            watchdog.cancel()
            response.close()
    finally:
        conn.close()


def get_json(url: str, timeout: float = 10.0, max_bytes: int = MAX_JSON_BYTES) -> Any:
    status, raw = request("GET", url, timeout=timeout, max_bytes=max_bytes)
    if status != 200:
        raise BadAnswer(f"GET {redact_url(url)} answered HTTP {status}")
    try:
        return strict_loads(raw)
    except ValueError as exc:
        raise BadAnswer(f"GET {redact_url(url)}: not valid JSON ({exc})") from exc


def base_url(url: str) -> str:
    """http://host:port of any URL on that server (e.g. a /system_stats probe URL)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"
