"""ComfyUI's HTTP API, standard library only: the readiness probe and JSON calls."""

from __future__ import annotations

import http.client
import json
import socket
import time
from typing import Any, Optional
from urllib.parse import urlsplit

from gpuhost.comfyui.readiness import ProbeResult


def probe(url: str, timeout: float = 2.0, clock: Any = time.time) -> ProbeResult:
    """GET url once: the status, or why there was no HTTP answer."""
    status: Optional[int] = None
    error = ""
    sent_at = clock()  # a 200 counts from when it was asked for, not when it arrived
    try:
        status, _ = request("GET", url, timeout=timeout)
    except ConnectionRefusedError:
        error = "connection refused"
    except ConnectionResetError:
        error = "connection reset"
    except socket.timeout:
        error = f"no answer within {timeout:g} s"
    except (OSError, http.client.HTTPException) as exc:
        error = type(exc).__name__ + (f": {exc}" if str(exc) else "")
    return ProbeResult(at=sent_at, url=url, status=status, error=error)


def request(
    method: str, url: str, body: Optional[bytes] = None, timeout: float = 10.0, content_type: str = "application/json"
) -> tuple[int, bytes]:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"not an http(s) URL: {url!r}")
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
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def get_json(url: str, timeout: float = 10.0) -> Any:
    status, raw = request("GET", url, timeout=timeout)
    if status != 200:
        raise OSError(f"GET {url} answered HTTP {status}")
    return json.loads(raw)


def base_url(url: str) -> str:
    """http://host:port of any URL on that server (e.g. a /system_stats probe URL)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"
