"""A small Docker Engine API client over the daemon socket, standard library only.

The Docker SDK imports paramiko and requests eagerly (about 0.35-0.6 s here), which alone
would eat most of `gpuhost check`'s one-second budget, and its dependencies cannot travel
inside the zipapp that fleet checks ship to remote hosts. The Engine API is plain HTTP
with JSON, so this client speaks it directly.
"""

from __future__ import annotations

import contextlib
import errno
import http.client
import json
import os
import socket
import struct
from collections.abc import Iterator
from typing import Any, BinaryIO
from urllib.parse import quote, urlencode, urlparse

DEFAULT_HOST = "unix:///var/run/docker.sock"


class EngineError(Exception):
    """The Engine API answered with an error status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"Docker Engine API {status}: {message}")
        self.status = status
        self.message = message


class EngineUnavailable(Exception):
    """Nothing answers at the daemon address (not installed or not running)."""


class EnginePermissionDenied(Exception):
    """The socket exists but this user may not open it."""


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        # large blocks: uploads (docker load) of many GB otherwise cost a Python loop per 8 KiB
        super().__init__("localhost", timeout=timeout, blocksize=1024 * 1024)
        self._socket_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._socket_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


def quote_ref(ref: str) -> str:
    """Quote an image or container reference for use in a URL path."""
    return quote(ref, safe="")


def check_address(host: str) -> tuple[str | None, str]:
    """(socket path, host:port) of a Docker daemon address; ValueError names what is wrong with it."""
    if host != host.strip():
        raise ValueError(f"Docker address {host!r} has spaces or a newline around it")
    parsed = urlparse(host)
    if parsed.scheme == "unix":
        if not parsed.path.startswith("/"):
            raise ValueError(f"Docker address {host!r}: unix:// needs an absolute socket path")
        return parsed.path, ""
    if parsed.scheme in ("tcp", "http"):
        try:
            port = parsed.port
        except ValueError:
            raise ValueError(f"Docker address {host!r}: the port is not a number from 1 to 65535") from None
        if port == 0:
            raise ValueError(f"Docker address {host!r}: the port is not a number from 1 to 65535")
        if not parsed.hostname or port is None or parsed.path not in ("", "/"):
            raise ValueError(f"Docker address {host!r}: write tcp://HOST:PORT")
        return None, parsed.netloc
    raise ValueError(f"unsupported Docker address {host!r}: use unix:///path/to/docker.sock or tcp://HOST:PORT")


class EngineClient:
    def __init__(self, host: str | None = None, timeout: float = 10.0) -> None:
        self.host = host or os.environ.get("DOCKER_HOST") or DEFAULT_HOST
        self.timeout = timeout
        self._unix_path, self._netloc = check_address(self.host)

    def _connection(self, timeout: float | None) -> http.client.HTTPConnection:
        effective = self.timeout if timeout is None else timeout
        if self._unix_path is not None:
            return _UnixHTTPConnection(self._unix_path, effective)
        return http.client.HTTPConnection(self._netloc, timeout=effective)

    def _open(
        self,
        method: str,
        path: str,
        params: dict[str, Any] | None,
        body: Any,
        timeout: float | None,
        upload: tuple[BinaryIO, int, str] | None = None,
    ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        url = path
        if params:
            url += "?" + urlencode({k: _param(v) for k, v in params.items() if v is not None})
        headers = {"Host": "docker"}
        payload: bytes | BinaryIO | None = None
        if body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if upload is not None:
            payload, length, content_type = upload
            headers["Content-Type"] = content_type
            headers["Content-Length"] = str(length)
        conn = self._connection(timeout)
        try:
            conn.request(method, url, body=payload, headers=headers)
            response = conn.getresponse()
        except FileNotFoundError as exc:
            conn.close()
            raise EngineUnavailable(f"no Docker socket at {self._unix_path}") from exc
        except ConnectionRefusedError as exc:
            conn.close()
            raise EngineUnavailable(f"nothing listens at {self.host} (is dockerd running?)") from exc
        except PermissionError as exc:
            conn.close()
            raise EnginePermissionDenied(
                f"permission denied on {self.host}: run as root or join the docker group"
            ) from exc
        except OSError as exc:
            conn.close()
            if exc.errno in (errno.ENOENT, errno.ECONNREFUSED):
                raise EngineUnavailable(f"{self.host}: {exc.strerror}") from exc
            if exc.errno == errno.EACCES:
                raise EnginePermissionDenied(f"{self.host}: {exc.strerror}") from exc
            raise EngineUnavailable(f"{self.host}: {exc}") from exc
        if response.status >= 400:
            raw = response.read()
            conn.close()
            raise EngineError(response.status, _error_message(raw))
        return conn, response

    def request(
        self,
        method: str,
        path: str,
        params: dict[str, Any] | None = None,
        body: Any = None,
        timeout: float | None = None,
    ) -> Any:
        conn, response = self._open(method, path, params, body, timeout)
        try:
            raw = response.read()
        finally:
            conn.close()
        if not raw:
            return None
        content_type = response.getheader("Content-Type", "")
        if "json" in content_type:
            return json.loads(raw)
        return raw.decode(errors="replace")

    def get(self, path: str, params: dict[str, Any] | None = None, timeout: float | None = None) -> Any:
        return self.request("GET", path, params=params, timeout=timeout)

    def stream(
        self, path: str, params: dict[str, Any] | None = None, timeout: float | None = None
    ) -> Iterator[bytes]:
        """Yield the body of a streaming endpoint chunk by chunk, as it arrives."""
        conn, response = self._open("GET", path, params, None, timeout)
        try:
            while True:
                chunk = response.read1(65536)
                if not chunk:
                    return
                yield chunk
        finally:
            conn.close()

    def open_stream(
        self, path: str, params: dict[str, Any] | None = None, timeout: float | None = None
    ) -> EngineStream:
        """Open a streaming endpoint for a reader thread that another thread may shutdown(): unlike
        stream(), a read that fails ends the stream quietly (the caller checks what it followed)."""
        conn, response = self._open("GET", path, params, None, timeout)
        return EngineStream(conn, response)

    def upload(
        self,
        path: str,
        data: BinaryIO,
        length: int,
        content_type: str = "application/x-tar",
        params: dict[str, Any] | None = None,
        timeout: float | None = None,
    ) -> bytes:
        """POST a raw body streamed from a file (docker load, docker import); return the response body."""
        conn, response = self._open("POST", path, params, None, timeout, upload=(data, length, content_type))
        try:
            return response.read()
        finally:
            conn.close()

    def ping(self) -> bool:
        return bool(self.get("/_ping", timeout=2.0) == "OK")


class EngineStream:
    """An open streaming response (logs with follow=1, events)."""

    def __init__(self, conn: http.client.HTTPConnection, response: http.client.HTTPResponse) -> None:
        self._conn = conn
        self._response = response

    def read(self) -> bytes:
        """The next chunk as it arrives; b"" at the end of the stream or after close()."""
        try:
            return self._response.read1(65536)
        except (OSError, ValueError, AttributeError, http.client.HTTPException):
            return b""  # ended, or shut down from another thread

    def shutdown(self) -> None:
        """End the stream from another thread: a blocked read() returns b"" (the reader closes)."""
        sock = self._conn.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.shutdown()
        self._conn.close()


def _param(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value)


def _error_message(raw: bytes) -> str:
    try:
        return str(json.loads(raw).get("message", raw.decode(errors="replace")))
    except (ValueError, AttributeError):
        return raw.decode(errors="replace").strip()


STREAM_NAMES = {0: "stdin", 1: "stdout", 2: "stderr"}


class LogDemuxer:
    """Split the Engine API's multiplexed log stream (non-TTY containers) into lines.

    Each frame is an 8-byte header (stream id, three zero bytes, big-endian length)
    followed by the payload. A TTY container's stream has no frames: pass tty=True.
    """

    def __init__(self, tty: bool = False) -> None:
        self.tty = tty
        self._buffer = b""
        self._partial: dict[int, bytes] = {}

    def feed(self, data: bytes) -> list[tuple[str, str]]:
        self._buffer += data
        lines: list[tuple[str, str]] = []
        if self.tty:
            payload, self._buffer = self._buffer, b""
            lines.extend(self._split(1, payload))
            return lines
        while len(self._buffer) >= 8:
            stream_id, length = struct.unpack(">BxxxL", self._buffer[:8])
            if len(self._buffer) < 8 + length:
                break
            payload = self._buffer[8 : 8 + length]
            self._buffer = self._buffer[8 + length :]
            lines.extend(self._split(stream_id, payload))
        return lines

    def flush(self) -> list[tuple[str, str]]:
        rest = []
        for stream_id, partial in self._partial.items():
            if partial:
                rest.append((STREAM_NAMES.get(stream_id, "stdout"), partial.decode(errors="replace")))
        self._partial.clear()
        return rest

    def _split(self, stream_id: int, payload: bytes) -> list[tuple[str, str]]:
        data = self._partial.get(stream_id, b"") + payload
        *complete, rest = data.split(b"\n")
        self._partial[stream_id] = rest
        name = STREAM_NAMES.get(stream_id, "stdout")
        return [(name, line.rstrip(b"\r").decode(errors="replace")) for line in complete]
