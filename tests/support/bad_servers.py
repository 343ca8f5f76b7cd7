"""Small servers that answer badly, on 127.0.0.1 or a unix socket in a temporary directory.

Each connection gets one scripted answer: raw bytes (an SSH banner), an HTTP response cut short,
a body of any size, or bytes trickled one at a time. Every server is bounded: it stops writing when
the client goes away, after `max_seconds`, and when the context ends.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Optional

SSH_BANNER = b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n"


def http_response(body: bytes, status: str = "200 OK", content_type: str = "application/json",
                  length: Optional[int] = None) -> bytes:
    """An HTTP/1.1 answer; `length` other than len(body) makes one that is cut short."""
    declared = len(body) if length is None else length
    head = (f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {declared}\r\n"
            "Connection: close\r\n\r\n")
    return head.encode() + body


DOCKER_HEADERS = b"Api-Version: 1.41\r\nServer: Docker/20.10.24+dfsg1 (linux)\r\nOstype: linux\r\n"


def docker_response(body: bytes, status: str = "200 OK", content_type: str = "application/json",
                    length: Optional[int] = None) -> bytes:
    """An answer as dockerd's API routes give it: with its Api-Version and Server headers."""
    head, _, rest = http_response(body, status, content_type, length).partition(b"\r\n")
    return head + b"\r\n" + DOCKER_HEADERS + rest


@dataclass
class Script:
    """What the server writes on each connection."""

    prefix: bytes = b""  # written at once
    trickle: bytes = b""  # then one byte every `interval` seconds
    interval: float = 1.0
    # then this many bytes of `filler` (a large body), in 64 KiB writes
    filler_bytes: int = 0
    filler: bytes = b" "
    answer_before_request: bool = False  # an SSH server speaks first

    @classmethod
    def body(cls, body: bytes, **kwargs: object) -> Script:
        return cls(prefix=http_response(body, **kwargs))  # type: ignore[arg-type]


@dataclass
class BadServer:
    script: Script | Callable[[str], Script]  # or a function of the request line
    unix_dir: Optional[str] = None  # a unix socket in this directory instead of 127.0.0.1
    max_seconds: float = 20.0
    host: str = "127.0.0.1"  # another loopback address (127.0.0.2) where a client must not take it for localhost
    requests: list[str] = field(default_factory=list)
    bytes_sent: int = 0
    address: str = ""
    url: str = ""

    def __enter__(self) -> BadServer:
        if self.unix_dir is not None:
            path = tempfile.mktemp(suffix=".sock", dir=self.unix_dir)  # bind creates it
            self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self._listener.bind(path)
            self.address = f"unix://{path}"
            self.url = ""
        else:
            self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self._listener.bind((self.host, 0))
            port = self._listener.getsockname()[1]
            self.address = f"tcp://{self.host}:{port}"
            self.url = f"http://{self.host}:{port}"
        self._listener.listen(16)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        accept = threading.Thread(target=self._accept, daemon=True)
        accept.start()
        self._threads.append(accept)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        for thread in list(self._threads):
            thread.join(timeout=5)
        self._listener.close()
        if self.address.startswith("unix://"):
            os.unlink(self.address[len("unix://"):])

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _serve(self, conn: socket.socket) -> None:
        deadline = time.monotonic() + self.max_seconds
        with conn:
            try:
                script = self.script if isinstance(self.script, Script) else None
                if script is not None and script.answer_before_request:
                    self._send(conn, script.prefix)
                line = self._read_request(conn, deadline)
                with self._lock:
                    self.requests.append(line)
                if script is None:
                    script = self.script(line)  # type: ignore[operator]
                if not script.answer_before_request:
                    self._send(conn, script.prefix)
                for byte in script.trickle:
                    if self._stop.is_set() or time.monotonic() > deadline:
                        return
                    self._send(conn, bytes([byte]))
                    self._stop.wait(script.interval)
                left = script.filler_bytes
                block = (script.filler * (65536 // len(script.filler) + 1))[:65536]
                while left > 0 and not self._stop.is_set() and time.monotonic() < deadline:
                    self._send(conn, block[:left])
                    left -= min(left, len(block))
            except OSError:
                return  # the client went away

    def _send(self, conn: socket.socket, data: bytes) -> None:
        conn.sendall(data)
        with self._lock:
            self.bytes_sent += len(data)

    def _read_request(self, conn: socket.socket, deadline: float) -> str:
        conn.settimeout(1.0)
        data = b""
        while b"\r\n\r\n" not in data and time.monotonic() < deadline and not self._stop.is_set():
            try:
                chunk = conn.recv(65536)
            except socket.timeout:
                continue
            if not chunk:
                break
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        # read the request's body too: closing on unread bytes would reset the connection (RST) and
        # hide the answer from the client
        length = re.search(rb"\r\ncontent-length:\s*(\d{1,9})", head, re.IGNORECASE)
        left = int(length.group(1)) - len(body) if length else 0
        while left > 0 and time.monotonic() < deadline and not self._stop.is_set():
            try:
                chunk = conn.recv(min(left, 65536))
            except socket.timeout:
                continue
            if not chunk:
                break
            left -= len(chunk)
        return head.split(b"\r\n", 1)[0].decode(errors="replace")


def trickled_headers(count: int = 200) -> bytes:
    """The start of a valid HTTP answer whose headers never end: `count` bytes to trickle."""
    return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Slow: " + b"a" * count


def trickled_body(count: int = 200) -> Script:
    """Valid headers at once, then a JSON body one byte at a time."""
    body = b'{"Version": "' + b"1" * count + b'"}'
    head = http_response(b"", length=len(body))
    return Script(prefix=head, trickle=body)


def hostile_answers(content_type: str = "application/json", interval: float = 1.0) -> dict[str, Script]:
    """One answer of each class that breaks an HTTP client which trusts its server: not HTTP, a bad
    status line, headers too large, too many or never ending, a body trickled, endless, declared
    larger than any cap, cut short or badly chunked, no answer at all, the wrong content type, and
    JSON nested 100,000 deep. Trickles send one byte every `interval` seconds."""
    ok = f"HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\n".encode()
    deep = b"[" * 100_000 + b"]" * 100_000
    return {
        "not-http": Script(prefix=SSH_BANNER, answer_before_request=True),
        "bad-status-line": Script(prefix=b"HTTP/1.1 abc\r\n\r\n"),
        "huge-header": Script(prefix=ok + b"X-Big: " + b"a" * 100 * 1024 + b"\r\n\r\n{}"),
        "too-many-headers": Script(prefix=ok + b"".join(b"X-H%d: a\r\n" % n for n in range(1000)) + b"\r\n{}"),
        "endless-headers": Script(prefix=ok, filler_bytes=1024**3, filler=b"X-Pad: a\r\n"),
        "trickled-headers": Script(trickle=ok + b"X-Slow: " + b"a" * 600, interval=interval),
        "trickled-body": Script(prefix=ok + b"Content-Length: 600\r\n\r\n", trickle=b"{" * 600, interval=interval),
        "endless-body": Script(prefix=ok + b"Connection: close\r\n\r\n[", filler_bytes=1024**3),
        "declared-huge": Script(prefix=ok + b"Content-Length: 1000000000000\r\n\r\n{}"),
        "premature-close": Script(prefix=ok + b"Content-Length: 1000\r\n\r\n{\"a\": 1"),
        "invalid-chunked": Script(prefix=ok + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n"),
        "closed-without-answer": Script(),
        "silent": Script(trickle=b"H", interval=3600.0),
        "wrong-content-type": Script.body(b"<html><body>It works!</body></html>", content_type="text/html"),
        "deep-json": Script(prefix=http_response(deep, content_type=content_type)),
    }


def docker_with_image(repo_digest: str) -> Callable[[str], Script]:
    """A Docker stand-in (its headers, /_ping) that has one image, pulled from `repo_digest`'s
    registry: what `gpuhost layers` reads before it asks that registry for the manifest."""
    inspect = {"Id": "sha256:" + "2" * 64, "Size": 5000, "Os": "linux", "Architecture": "amd64",
               "RepoDigests": [repo_digest]}
    history = [{"Id": "sha256:" + "2" * 64, "CreatedBy": "/bin/sh -c #(nop) ADD file:abc in /", "Size": 5000}]

    def answer(line: str) -> Script:
        if "/_ping" in line:
            return Script(prefix=docker_response(b"OK", content_type="text/plain"))
        body: object = {"DockerRootDir": "/var/lib/docker"}
        if "/history" in line:
            body = history
        elif "/images/" in line:
            body = inspect
        return Script(prefix=docker_response(json.dumps(body).encode()))

    return answer
