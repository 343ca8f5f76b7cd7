"""The front door under test: nginx from Debian on the configuration the comfyui_door role rendered, a
client that trusts the door's own certificate, and headless Chromium from Debian.

This machine has no systemd, so nginx runs as the test's child (`daemon off`) with a main configuration
that holds only what the distribution's nginx.conf would (worker user, mime types, temporary paths) and
includes the role's conf.d; the health service's command is read from the unit the role wrote.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.client
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

NGINX = "nginx"
CHROMIUM = "chromium"
MIME_TYPES = Path("/etc/nginx/mime.types")
WORKER_USER = "www-data"
MAIN_CONF = """user {user};
worker_processes 2;
pid {work}/nginx.pid;
error_log {work}/error.log;
events {{ worker_connections 1024; }}
http {{
    include {mime};
    default_type application/octet-stream;
    client_body_temp_path {work}/body;
    proxy_temp_path {work}/proxy;
    fastcgi_temp_path {work}/fastcgi;
    uwsgi_temp_path {work}/uwsgi;
    scgi_temp_path {work}/scgi;
    include {conf_d}/*.conf;
}}
"""


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


class DoorClient:
    """HTTPS to the door, trusting only its certificate (a self-signed one names 127.0.0.1)."""

    def __init__(self, port: int, certificate: Path, timeout: float = 30.0) -> None:
        self.port, self.timeout = port, timeout
        self.context = ssl.create_default_context(cafile=str(certificate))

    def connect(self) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection("127.0.0.1", self.port, context=self.context, timeout=self.timeout)

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: Mapping[str, str] | None = None, limit: int = 64 * 1024 * 1024) -> Answer:
        connection = self.connect()
        try:
            connection.request(method, path, body=body, headers=dict(headers or {}))
            response = connection.getresponse()
            data = response.read(limit)
            return Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, data)
        finally:
            connection.close()


def main_conf(work: Path, conf_d: Path) -> Path:
    for folder in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (work / folder).mkdir(parents=True, exist_ok=True)
    path = work / "nginx.conf"
    path.write_text(MAIN_CONF.format(user=WORKER_USER, work=work, mime=MIME_TYPES, conf_d=conf_d))
    return path


def nginx_test(conf: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([NGINX, "-t", "-c", str(conf), "-p", str(conf.parent)], capture_output=True, text=True,
                          timeout=60, check=False)


def wait_listening(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1.0):
            return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f} s")


@contextlib.contextmanager
def running(command: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A child process in its own session, stopped (TERM, then KILL) on leaving the block."""
    with open(log, "ab") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield process
    finally:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


@contextlib.contextmanager
def nginx(work: Path, conf_d: Path, port: int) -> Iterator[subprocess.Popen[bytes]]:
    conf = main_conf(work, conf_d)
    tested = nginx_test(conf)
    if tested.returncode != 0:
        raise RuntimeError(f"nginx -t: {tested.stderr}")
    with running([NGINX, "-c", str(conf), "-p", str(work), "-g", "daemon off;"], work / "nginx.out") as process:
        wait_listening(port)
        yield process


def unit_exec_start(unit: Path) -> list[str]:
    """The ExecStart= command line of a unit the role wrote, split as systemd splits it."""
    for line in unit.read_text().splitlines():
        if line.startswith("ExecStart="):
            return shlex.split(line.split("=", 1)[1])
    raise ValueError(f"{unit} has no ExecStart=")


def spki_pin(certificate: Path) -> str:
    """Chromium's --ignore-certificate-errors-spki-list value for this certificate alone."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    cert = x509.load_pem_x509_certificate(certificate.read_bytes())
    spki = cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


def chromium(url: str, certificate: Path, profile: Path, *, dump_dom: bool = False, screenshot: Path | None = None,
             budget_ms: int = 30000, timeout: float = 240.0) -> subprocess.CompletedProcess[str]:
    """Headless Chromium: the page at `url` after `budget_ms` of its own time, as DOM or as a PNG. It trusts
    the door's certificate by its public key, and nothing else it would otherwise refuse."""
    if shutil.which(CHROMIUM) is None:
        raise RuntimeError("chromium is not installed (scripts/setup-test-host installs it)")
    command = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
        "--disable-dev-shm-usage", f"--user-data-dir={profile}",
        f"--ignore-certificate-errors-spki-list={spki_pin(certificate)}",
        f"--virtual-time-budget={budget_ms}", "--window-size=1280,800",
    ]
    if dump_dom:
        command.append("--dump-dom")
    if screenshot is not None:
        command.append(f"--screenshot={screenshot}")
    return subprocess.run([*command, url], capture_output=True, text=True, timeout=timeout, check=False)
