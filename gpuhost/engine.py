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
import re
import socket
import struct
import threading
from collections.abc import Iterator
from typing import Any, BinaryIO, Optional
from urllib.parse import quote, urlencode, urlparse

from gpuhost.model import ExitCode, GpuhostError, UsageError
from gpuhost.options import Option
from gpuhost.redact import redact_url
from gpuhost.userfile import strict_loads

DEFAULT_HOST = "unix:///var/run/docker.sock"
# Far above any answer gpuhost reads (an inspect is a few KB, a list of a thousand containers a few
# MB); a larger one is not the Engine API, and reading it would only cost memory.
MAX_ANSWER_BYTES = 64 * 1024 * 1024
# What an error status's body may add to the message.
MAX_ERROR_BYTES = 64 * 1024


DOCKER_REMEDY = "Start Docker, or run as root / a member of the docker group."


class EngineError(GpuhostError):
    """The Engine API answered with an error status (exit code 3 where nothing turned it into another
    error: a 404 for a named container or image is bad input, and its caller says so)."""

    exit_code = ExitCode.SOURCE_UNREADABLE
    remedy = DOCKER_REMEDY

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"Docker Engine API {status}: {message}")
        self.status = status
        self.message = message


class EngineBadAnswer(EngineError):
    """The daemon address answered, but not as the Engine API does: not HTTP, cut short, too slow
    (no complete answer before the deadline), too large, or not the JSON the endpoint returns."""

    def __init__(self, host: str, message: str) -> None:
        GpuhostError.__init__(self, f"{host}: {message}")
        self.status = 0
        self.message = message


class EngineUnavailable(GpuhostError):
    """Nothing answers at the daemon address (not installed or not running): exit code 3."""

    exit_code = ExitCode.SOURCE_UNREADABLE
    remedy = DOCKER_REMEDY


class EnginePermissionDenied(GpuhostError):
    """The socket exists but this user may not open it: exit code 3."""

    exit_code = ExitCode.SOURCE_UNREADABLE
    remedy = DOCKER_REMEDY


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


class DockerAddressError(UsageError, ValueError):
    """A Docker address (--docker-host or DOCKER_HOST) that is not one: bad usage, exit 2 (still a
    ValueError for the callers that catch what an address may raise)."""


ADDRESS_EXAMPLE = "unix:///var/run/docker.sock or tcp://127.0.0.1:2375"
# every command that talks to Docker takes it; docker_address() checks it, and DOCKER_HOST alike
DOCKER_HOST_OPTION = Option(
    "--docker-host",
    "Docker daemon address. Default: $DOCKER_HOST or unix:///var/run/docker.sock.",
    metavar="HOST",
    example="--docker-host unix:///run/docker.sock",
)


def docker_address(option: Optional[str] = None) -> str:
    """The Docker address a command talks to: --docker-host when given, else $DOCKER_HOST when set,
    else the default socket. Either one is checked the same way (DockerAddressError names which)."""
    if option is not None:
        try:
            check_address(option)
        except ValueError as exc:
            raise DockerAddressError(f"--docker-host: {exc}", f"Example: --docker-host {ADDRESS_EXAMPLE}") from None
        return option
    value = os.environ.get("DOCKER_HOST", "")
    if not value:  # set but empty counts as unset, as for the docker CLI
        return DEFAULT_HOST
    try:
        check_address(value)
    except ValueError as exc:
        raise DockerAddressError(
            f"DOCKER_HOST from the environment: {exc}",
            f"Unset DOCKER_HOST, or set it to {ADDRESS_EXAMPLE} (--docker-host overrides it).",
        ) from None
    return value


def check_address(host: str) -> tuple[str | None, str]:
    """(socket path, host:port) of a Docker daemon address; ValueError names what is wrong with it
    (showing the address without credentials: gpuhost.redact)."""
    shown = redact_url(host)
    if host != host.strip():
        raise ValueError(f"Docker address {shown!r} has spaces or a newline around it")
    try:
        parsed = urlparse(host)
    except ValueError as exc:  # e.g. "Invalid IPv6 URL"
        raise ValueError(f"Docker address {shown!r}: {exc}") from None
    if "@" in parsed.netloc:
        raise ValueError(
            f"Docker address {shown!r}: Docker takes no user or password in its address "
            "(a tcp:// daemon authenticates with TLS client certificates)"
        )
    if parsed.scheme == "unix":
        if not parsed.path.startswith("/"):
            raise ValueError(f"Docker address {shown!r}: unix:// needs an absolute socket path")
        return parsed.path, ""
    if parsed.scheme in ("tcp", "http"):
        try:
            port = parsed.port
        except ValueError:
            raise ValueError(f"Docker address {shown!r}: the port is not a number from 1 to 65535") from None
        if port == 0:
            raise ValueError(f"Docker address {shown!r}: the port is not a number from 1 to 65535")
        if not parsed.hostname or port is None or parsed.path not in ("", "/"):
            raise ValueError(f"Docker address {shown!r}: write tcp://HOST:PORT")
        return None, parsed.netloc
    raise ValueError(f"unsupported Docker address {shown!r}: use unix:///path/to/docker.sock or tcp://HOST:PORT")


class UnusableAnswer(Exception):
    """An HTTP answer that cannot be used: cut short, larger than its cap, or not complete in time."""


class Watchdog:
    """Shut a connected socket down when its time is up: a read blocked on a server that trickles or
    says nothing returns then, whatever the per-read timeout. One deadline for the whole answer."""

    def __init__(self, conn: http.client.HTTPConnection | socket.socket, seconds: float) -> None:
        self.seconds = seconds
        self.expired = False
        # the socket itself: the connection forgets it once a response that closes takes it over
        self._sock: Optional[socket.socket] = conn if isinstance(conn, socket.socket) else conn.sock
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True
        self._timer.start()

    def _expire(self) -> None:
        self.expired = True
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)

    def cancel(self) -> None:
        self._timer.cancel()

    def late(self) -> str:
        return f"no complete answer within {self.seconds:g} s"


def read_answer(response: http.client.HTTPResponse, limit: int, watchdog: Watchdog) -> bytes:
    """The whole body, at most `limit` bytes, before the watchdog's deadline; UnusableAnswer otherwise."""
    declared_text = response.getheader("Content-Length") or ""
    declared = int(declared_text) if declared_text.isdigit() and len(declared_text) < 20 else None
    if declared is not None and declared > limit:
        raise UnusableAnswer(f"the answer is larger than {_mib(limit)} (Content-Length {declared})")
    body = bytearray()
    try:
        while True:
            chunk = response.read1(65536)
            if not chunk:
                break
            body += chunk
            if len(body) > limit:
                raise UnusableAnswer(f"the answer is larger than {_mib(limit)}")
    except (OSError, ValueError, http.client.HTTPException) as exc:
        if watchdog.expired:
            raise UnusableAnswer(watchdog.late()) from exc
        if isinstance(exc, http.client.IncompleteRead):
            raise UnusableAnswer("the answer was cut short") from exc
        raise UnusableAnswer(f"the connection failed mid-answer: {exc}") from exc
    if watchdog.expired:
        raise UnusableAnswer(watchdog.late())
    if declared is not None and len(body) < declared:
        raise UnusableAnswer(f"the answer was cut short ({len(body)} of {declared} bytes)")
    return bytes(body)


def unusable_exchange(exc: BaseException, watchdog: Watchdog) -> str:
    """Why asking or reading the status line and headers failed, in words."""
    if watchdog.expired or isinstance(exc, socket.timeout):
        return watchdog.late()
    if isinstance(exc, http.client.RemoteDisconnected):
        return "the connection was closed without an answer"
    if isinstance(exc, http.client.HTTPException):
        text = " ".join(str(exc).split())[:80]
        return f"not an HTTP answer ({type(exc).__name__}{': ' + text if text else ''})"
    return f"the connection failed: {exc}"


def _mib(limit: int) -> str:
    return f"{limit / (1024 * 1024):.1f} MiB"


# The shape of each Engine API answer gpuhost reads: anything else did not come from the Engine API.
_OBJECT_ANSWERS = re.compile(r"/(?:version|info|(?:containers|images)/[^/]+/json)")
_LIST_ANSWERS = re.compile(r"/(?:containers/json|images/json|images/[^/]+/history)")


class EngineClient:
    def __init__(
        self, host: str | None = None, timeout: float = 10.0, max_answer_bytes: int = MAX_ANSWER_BYTES
    ) -> None:
        self.host = docker_address(host)
        # the connect timeout, and the deadline for a whole answer (status line, headers and body)
        self.timeout = timeout
        self.max_answer_bytes = max_answer_bytes
        self._unix_path, self._netloc = check_address(self.host)
        self._is_docker: Optional[bool] = None  # what /_ping said, asked once when an error needs it

    def _connection(self, timeout: float) -> http.client.HTTPConnection:
        if self._unix_path is not None:
            return _UnixHTTPConnection(self._unix_path, timeout)
        return http.client.HTTPConnection(self._netloc, timeout=timeout)

    def _connect(self, conn: http.client.HTTPConnection) -> None:
        try:
            conn.connect()
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

    def _open(
        self,
        method: str,
        path: str,
        params: dict[str, Any] | None,
        body: Any,
        timeout: float | None,
        upload: tuple[BinaryIO, int, str] | None = None,
        deadline: float | None = None,
        confirm: bool = True,
    ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse, Watchdog]:
        """Connect, send, and read the status line and headers before the deadline (`deadline`
        seconds, by default the timeout; for an upload it starts once the body is sent). An error
        status is EngineError when Docker gave it (its headers, or else /_ping, say so), and
        EngineBadAnswer from any other server: a web server's 404 is not a missing container."""
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
        effective = self.timeout if timeout is None else timeout
        conn = self._connection(effective)
        self._connect(conn)
        watchdog: Optional[Watchdog] = None
        try:
            if upload is None:
                watchdog = Watchdog(conn, effective if deadline is None else deadline)
            conn.request(method, url, body=payload, headers=headers)
            if watchdog is None:
                watchdog = Watchdog(conn, effective if deadline is None else deadline)
            response = conn.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            if watchdog is not None:
                watchdog.cancel()
            conn.close()
            if watchdog is None:
                raise EngineBadAnswer(self.host, f"sending the request failed: {exc}") from exc
            raise EngineBadAnswer(self.host, unusable_exchange(exc, watchdog)) from exc
        if response.status >= 400:
            try:
                raw = read_answer(response, MAX_ERROR_BYTES, watchdog)
            except UnusableAnswer as exc:
                raw = str(exc).encode()
            finally:
                watchdog.cancel()
                response.close()
                conn.close()
            if confirm and not _engine_marks(response) and not self._answers_ping():
                raise EngineBadAnswer(
                    self.host,
                    f"{method} {path} answered HTTP {response.status} without the Engine API's headers, and /_ping "
                    "does not answer OK: not a Docker daemon",
                )
            raise EngineError(response.status, _error_message(raw))
        return conn, response, watchdog

    def _answers_ping(self) -> bool:
        """Whether /_ping answers OK here, as every Docker daemon does (asked once per client)."""
        if self._is_docker is None:
            self._is_docker = False
            try:
                conn, response, watchdog = self._open("GET", "/_ping", None, None, min(self.timeout, 5.0),
                                                      confirm=False)
                try:
                    self._is_docker = read_answer(response, 1024, watchdog).strip() == b"OK"
                finally:
                    watchdog.cancel()
                    response.close()
                    conn.close()
            except (EngineError, EngineUnavailable, EnginePermissionDenied, UnusableAnswer):
                pass
        return self._is_docker

    def request(
        self,
        method: str,
        path: str,
        params: dict[str, Any] | None = None,
        body: Any = None,
        timeout: float | None = None,
    ) -> Any:
        """The answer as JSON (or text), read whole within the timeout and the size cap; an answer
        of the wrong shape for a known endpoint is EngineBadAnswer."""
        conn, response, watchdog = self._open(method, path, params, body, timeout)
        try:
            raw = read_answer(response, self.max_answer_bytes, watchdog)
        except UnusableAnswer as exc:
            raise EngineBadAnswer(self.host, str(exc)) from exc
        finally:
            watchdog.cancel()
            response.close()
            conn.close()
        answer: Any = None
        if raw:
            content_type = response.getheader("Content-Type", "")
            if "json" in content_type:
                try:
                    answer = strict_loads(raw)
                except ValueError as exc:
                    raise EngineBadAnswer(self.host, f"{method} {path}: not valid JSON ({exc})") from exc
            else:
                answer = raw.decode(errors="replace")
        if method == "GET":
            _check_shape(self.host, path, answer)
        return answer

    def get(self, path: str, params: dict[str, Any] | None = None, timeout: float | None = None) -> Any:
        return self.request("GET", path, params=params, timeout=timeout)

    def stream(
        self, path: str, params: dict[str, Any] | None = None, timeout: float | None = None
    ) -> Iterator[bytes]:
        """Yield the body of a streaming endpoint chunk by chunk, as it arrives (the caller bounds it)."""
        conn, response, watchdog = self._open("GET", path, params, None, timeout)
        watchdog.cancel()
        try:
            while True:
                chunk = response.read1(65536)
                if not chunk:
                    return
                yield chunk
        finally:
            conn.close()

    def open_stream(
        self,
        path: str,
        params: dict[str, Any] | None = None,
        timeout: float | None = None,
        deadline: float | None = None,
    ) -> EngineStream:
        """Open a streaming endpoint for a reader thread that another thread may shutdown(): unlike
        stream(), a read that fails ends the stream quietly (the caller checks what it followed).
        The headers come within the timeout; with `deadline` (seconds) the stream ends then."""
        conn, response, watchdog = self._open("GET", path, params, None, timeout)
        watchdog.cancel()
        return EngineStream(conn, response, Watchdog(conn, deadline) if deadline is not None else None)

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
        conn, response, watchdog = self._open(
            "POST", path, params, None, timeout, upload=(data, length, content_type)
        )
        try:
            return read_answer(response, self.max_answer_bytes, watchdog)
        except UnusableAnswer as exc:
            raise EngineBadAnswer(self.host, str(exc)) from exc
        finally:
            watchdog.cancel()
            response.close()
            conn.close()

    def ping(self) -> bool:
        return bool(self.get("/_ping", timeout=2.0) == "OK")


def _engine_marks(response: http.client.HTTPResponse) -> bool:
    """Docker (and Podman's compatible API) send these on every answer its API routes give."""
    server = response.getheader("Server") or ""
    return bool(response.getheader("Api-Version")) or server.startswith(("Docker/", "Libpod/"))


def _check_shape(host: str, path: str, answer: Any) -> None:
    not_docker = ": not a Docker daemon" if isinstance(answer, str) else ""
    if _OBJECT_ANSWERS.fullmatch(path) and not isinstance(answer, dict):
        raise EngineBadAnswer(host, f"GET {path}: expected a JSON object, got {_kind(answer)}{not_docker}")
    if _LIST_ANSWERS.fullmatch(path) and not (
        isinstance(answer, list) and all(isinstance(item, dict) for item in answer)
    ):
        raise EngineBadAnswer(host, f"GET {path}: expected a JSON list of objects, got {_kind(answer)}{not_docker}")


def _kind(answer: Any) -> str:
    if isinstance(answer, str):
        return "text"
    if isinstance(answer, list):
        return "a list" if all(isinstance(item, dict) for item in answer) else "a list of other things"
    return "nothing" if answer is None else type(answer).__name__


class EngineStream:
    """An open streaming response (logs with follow=1, events)."""

    def __init__(
        self, conn: http.client.HTTPConnection, response: http.client.HTTPResponse, watchdog: Watchdog | None = None
    ) -> None:
        self._conn = conn
        self._response = response
        self._watchdog = watchdog
        # True once the server itself ended the answer (not a deadline, a shutdown or a broken read)
        self.complete = False

    def read(self) -> bytes:
        """The next chunk as it arrives; b"" at the end of the stream or after close()."""
        try:
            chunk = self._response.read1(65536)
        except (OSError, ValueError, AttributeError, http.client.HTTPException):
            return b""  # ended, or shut down from another thread
        if not chunk:
            self.complete = not (self._watchdog is not None and self._watchdog.expired) and self._response.isclosed()
        return chunk

    def shutdown(self) -> None:
        """End the stream from another thread: a blocked read() returns b"" (the reader closes)."""
        sock = self._conn.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
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
        message = str(strict_loads(raw).get("message", raw.decode(errors="replace")))
    except (ValueError, AttributeError):
        message = raw.decode(errors="replace").strip()
    return message if len(message) <= 500 else message[:497] + "..."


STREAM_NAMES = {0: "stdin", 1: "stdout", 2: "stderr"}


# A log line longer than this is cut into pieces: a stream without newlines cannot grow memory.
MAX_LINE_BYTES = 64 * 1024


class LogDemuxer:
    """Split the Engine API's multiplexed log stream (non-TTY containers) into lines.

    Each frame is an 8-byte header (stream id, three zero bytes, big-endian length)
    followed by the payload. A TTY container's stream has no frames: pass tty=True.
    Payloads are split as they arrive (a frame is never held whole), and a line longer than
    MAX_LINE_BYTES comes out in pieces.
    """

    def __init__(self, tty: bool = False) -> None:
        self.tty = tty
        self._header = b""
        self._frame_stream = 1
        self._frame_left = 0
        self._partial: dict[int, bytes] = {}

    def feed(self, data: bytes) -> list[tuple[str, str]]:
        if self.tty:
            return self._split(1, data)
        lines: list[tuple[str, str]] = []
        position = 0
        while position < len(data):
            if self._frame_left == 0:
                needed = 8 - len(self._header)
                self._header += data[position : position + needed]
                position += needed
                if len(self._header) < 8:
                    break
                self._frame_stream, self._frame_left = struct.unpack(">BxxxL", self._header)
                self._header = b""
                continue
            payload = data[position : position + self._frame_left]
            position += len(payload)
            self._frame_left -= len(payload)
            lines.extend(self._split(self._frame_stream, payload))
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
        while len(rest) > MAX_LINE_BYTES:
            complete.append(rest[:MAX_LINE_BYTES])
            rest = rest[MAX_LINE_BYTES:]
        self._partial[stream_id] = rest
        name = STREAM_NAMES.get(stream_id, "stdout")
        return [(name, line.rstrip(b"\r").decode(errors="replace")) for line in complete]
