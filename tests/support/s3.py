"""S3 and http model sources on 127.0.0.1 for the `gpuhost models` tests and bench.

- s3_server(): moto's ThreadedMotoServer (S3) on a free loopback port, reset on start.
- S3Proxy: a forwarding proxy in front of it that counts the body bytes it passes per path, can
  answer the next N GETs with S3's 503 SlowDown, can slow the bytes it passes down, can call a
  function once a path has passed N bytes (to change the object mid-copy), can drop If-Match (a
  store that ignores it) and can answer every request itself (403, 301, a plain 404).
- RangeServer: a static file server taking Range requests (http, or https with a certificate),
  with an optional redirect hop, a count of the body bytes it sent per path, If-Range and 416 as
  RFC 9110 has them (or If-Range ignored, or answered 412), a slow-down and the same per-path hook.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import http.client
import http.server
import logging
import os
import ssl
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.support.aws import clean_moto_server

BUCKET = "models"
SLOWDOWN = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message><RequestId>0</RequestId></Error>"
)


@contextmanager
def s3_server() -> Iterator[str]:
    """A moto S3 server on loopback with nothing left from earlier tests; yields its endpoint."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    with clean_moto_server() as endpoint:
        yield endpoint


def s3_client(endpoint: str) -> Any:
    import boto3

    return boto3.client("s3", region_name="us-east-1", endpoint_url=endpoint)


def fill_bucket(client: Any, bucket: str, objects: dict[str, bytes], prefix: str = "") -> None:
    """Create `bucket` holding each object under `prefix`/its key."""
    client.create_bucket(Bucket=bucket)
    for key, data in objects.items():
        client.put_object(Bucket=bucket, Key=f"{prefix}/{key}" if prefix else key, Body=data)


def model_bytes(size: int, seed: int) -> bytes:
    """`size` bytes of a valid safetensors file (one U8 tensor filling it), different for each seed."""
    import json
    import struct

    def header_for(data_len: int) -> bytes:
        header = json.dumps({"w": {"dtype": "U8", "shape": [data_len], "data_offsets": [0, data_len]},
                             "__metadata__": {"seed": str(seed)}}).encode()
        return header

    data_len = size - 8 - len(header_for(size))
    header = header_for(data_len)
    while 8 + len(header) + data_len != size:  # the header's own length changes the data's
        data_len = size - 8 - len(header)
        header = header_for(data_len)
    block = hashlib.sha256(str(seed).encode()).digest() * 1024
    data = (block * (data_len // len(block) + 1))[:data_len]
    return struct.pack("<Q", len(header)) + header + data


class _ProxyHandler(http.server.BaseHTTPRequestHandler):
    server: _ProxyServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _forward(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        if self.server.canned is not None:
            status, payload, extra = self.server.canned
            self.send_response(status)
            for key, value in {"Content-Length": str(len(payload)), **extra}.items():
                self.send_header(key, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)
            return
        if self.command == "GET" and self.server.take_slowdown():
            self.send_response(503)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(SLOWDOWN)))
            self.end_headers()
            self.wfile.write(SLOWDOWN)
            return
        conn = http.client.HTTPConnection(self.server.upstream_host, self.server.upstream_port, timeout=60)
        dropped = ("connection", "keep-alive", *(("if-match",) if self.server.strip_if_match else ()))
        headers = {k: v for k, v in self.headers.items() if k.lower() not in dropped}
        conn.request(self.command, self.path, body=body, headers=headers)
        answer = conn.getresponse()
        self.send_response(answer.status)
        for key, value in answer.getheaders():
            if key.lower() not in ("connection", "transfer-encoding", "keep-alive", "server", "date"):
                self.send_header(key, value)
        self.end_headers()
        if self.command == "HEAD":
            conn.close()
            return
        path = self.path.split("?")[0]
        while True:
            chunk = answer.read(64 * 1024)
            if not chunk:
                break
            self.wfile.write(chunk)
            self.server.count(path, len(chunk))
            if self.server.delay_per_chunk:
                time.sleep(self.server.delay_per_chunk)
        conn.close()

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _forward


class _ProxyServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, upstream: str) -> None:
        super().__init__(("127.0.0.1", 0), _ProxyHandler)
        host_port = upstream.split("://", 1)[1]
        self.upstream_host, _, port = host_port.partition(":")
        self.upstream_port = int(port or 80)
        self.sent: Counter[str] = Counter()
        self.slowdowns_left = 0
        self.slowdowns_sent = 0
        self.delay_per_chunk = 0.0
        self.strip_if_match = False
        # (status, body, headers) answered to every request instead of forwarding it
        self.canned: tuple[int, bytes, dict[str, str]] | None = None
        self.hooks = ByteHooks()
        self._lock = threading.Lock()

    def take_slowdown(self) -> bool:
        with self._lock:
            if self.slowdowns_left <= 0:
                return False
            self.slowdowns_left -= 1
            self.slowdowns_sent += 1
            return True

    def count(self, path: str, n: int) -> None:
        with self._lock:
            self.sent[path] += n
            total = self.sent[path]
        self.hooks.passed(path, total)


class ByteHooks:
    """Functions to call once a path has passed a number of body bytes (each called once, in the
    server thread that passed them, before it sends more)."""

    def __init__(self) -> None:
        self._hooks: list[tuple[str, int, Callable[[], None]]] = []
        self._lock = threading.Lock()
        self.fired: list[str] = []

    def add(self, path: str, after_bytes: int, action: Callable[[], None]) -> None:
        with self._lock:
            self._hooks.append((path, after_bytes, action))

    def passed(self, path: str, total: int) -> None:
        with self._lock:
            due = [hook for hook in self._hooks if hook[0] == path and total >= hook[1]]
            self._hooks = [hook for hook in self._hooks if hook not in due]
        for hook_path, _, action in due:
            action()
            self.fired.append(hook_path)


class S3Proxy:
    """Forwards to `upstream` (moto); `sent[/bucket/key]` is the body bytes it passed on."""

    def __init__(self, upstream: str) -> None:
        self.server = _ProxyServer(upstream)
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def sent(self) -> Counter[str]:
        return self.server.sent

    def slow_down_next(self, count: int) -> None:
        self.server.slowdowns_left = count

    def __enter__(self) -> S3Proxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


class _RangeHandler(http.server.SimpleHTTPRequestHandler):
    server: _RangeServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _file(self) -> Path | None:
        path = self.path.split("?")[0]
        if path.startswith("/redirect/"):
            self.send_response(302)
            self.send_header("Location", path[len("/redirect"):])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        target = (self.server.root / path.lstrip("/")).resolve()
        if not str(target).startswith(str(self.server.root)) or not target.is_file():
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        return target

    def _headers(self, etag: str, status: int, length: int, content_range: str = "") -> None:
        self.send_response(status)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(length))
        self.send_header("ETag", etag)
        if content_range:
            self.send_header("Content-Range", content_range)
        self.end_headers()

    def do_HEAD(self) -> None:
        target = self._file()
        if target is not None:
            self._headers(etag_of(os.stat(target)), 200, target.stat().st_size)

    def do_GET(self) -> None:
        target = self._file()
        if target is None:
            return
        try:
            fh = open(target, "rb")  # noqa: SIM115 - held across the answer: a replaced file keeps its bytes
        except FileNotFoundError:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        with fh:
            info = os.fstat(fh.fileno())
            size = info.st_size
            start, end = 0, size - 1
            status, content_range = 200, ""
            wanted = self.headers.get("Range", "")
            if_range = self.headers.get("If-Range")
            current = etag_of(info)
            if if_range and if_range != current and self.server.changed_412:
                self.send_response(412)  # what a server that treats If-Range as If-Match answers
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if wanted.startswith("bytes=") and (not if_range or if_range == current or self.server.ignore_if_range):
                first, _, last = wanted[6:].partition("-")
                start, end = int(first), min(int(last) if last else size - 1, size - 1)
                if start >= size:
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{size}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                status, content_range = 206, f"bytes {start}-{end}/{size}"
            self._headers(current, status, end - start + 1, content_range)
            fh.seek(start)
            left = end - start + 1
            while left:
                chunk = fh.read(min(left, 64 * 1024))
                if not chunk:  # the file shrank under the answer: the client sees it cut short
                    self.close_connection = True
                    break
                self.wfile.write(chunk)
                left -= len(chunk)
                self.server.count(self.path.split("?")[0], len(chunk))
                if self.server.delay_per_chunk:
                    time.sleep(self.server.delay_per_chunk)


class _RangeServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, root: Path) -> None:
        super().__init__(("127.0.0.1", 0), _RangeHandler)
        self.root = root.resolve()
        self.sent: Counter[str] = Counter()
        self.delay_per_chunk = 0.0
        self.ignore_if_range = False
        self.changed_412 = False
        self.hooks = ByteHooks()
        self._lock = threading.Lock()

    def count(self, path: str, n: int) -> None:
        with self._lock:
            self.sent[path] += n
            total = self.sent[path]
        self.hooks.passed(path, total)


def etag_of(info: os.stat_result) -> str:
    return f'"{info.st_size:x}-{info.st_mtime_ns:x}"'


class RangeServer:
    def __init__(self, root: Path, tls_dir: Path | None = None) -> None:
        self.server = _RangeServer(root)
        self.ca_file: Path | None = None
        self.scheme = "http"
        if tls_dir is not None:
            cert, key = self_signed(tls_dir)
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(cert, key)
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
            self.ca_file, self.scheme = cert, "https"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"{self.scheme}://{host}:{port}"

    @property
    def sent(self) -> Counter[str]:
        return self.server.sent

    def __enter__(self) -> RangeServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 signed by itself (it is its own CA bundle), and its key."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    os.chmod(key_path, 0o600)
    return cert_path, key_path
