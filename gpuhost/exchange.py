"""One HTTP(S) exchange within a total deadline and a size cap, standard library only.

A server that trickles a byte a second defeats a per-read timeout, one that sends headers or a body
without end defeats a reader without a cap, and a name lookup that never returns defeats both. Here
the name lookup runs within the deadline, and from the connect on a watchdog shuts the socket down
when the deadline passes: proxy tunnel, TLS handshake, request, status line, headers and body are
all inside it. A status line or headers that are not HTTP, an answer cut short or a body past its
cap is Unusable. Proxies come from the environment (HTTPS_PROXY, HTTP_PROXY, NO_PROXY, as urllib
and botocore read them) unless the caller turns them off.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import socket
import ssl
import threading
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any, Optional


class ExchangeError(OSError):
    """The exchange with `where` (scheme://host:port, never credentials) failed for `reason`."""

    def __init__(self, where: str, reason: str) -> None:
        super().__init__(f"{where}: {reason}")
        self.where = where
        self.reason = reason


class Unreachable(ExchangeError):
    """No connection: the name does not resolve, nothing listens, or a proxy refused the tunnel."""


class TooSlow(ExchangeError):
    """No complete answer before the deadline."""


class Unusable(ExchangeError):
    """An answer that is not HTTP (or not TLS), cut short, or larger than its cap."""


class Untrusted(Unusable):
    """A TLS certificate this client does not trust."""


class Deadline:
    """`seconds` from now, for everything an exchange (or several) does."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.until = time.monotonic() + seconds

    def remaining(self) -> float:
        return self.until - time.monotonic()

    def left(self, where: str) -> float:
        remaining = self.remaining()
        if remaining <= 0:
            raise TooSlow(where, self.late())
        return remaining

    def late(self) -> str:
        return f"no complete answer within {self.seconds:g} s"


class _Watchdog:
    """Shuts the socket it watches down when the deadline passes: a read blocked on a server that
    trickles or says nothing returns then, whatever the per-read timeout."""

    def __init__(self, deadline: Deadline) -> None:
        self.expired = False
        self._sock: Optional[socket.socket] = None
        self._lock = threading.Lock()
        self._timer = threading.Timer(max(deadline.remaining(), 0.0), self._expire)
        self._timer.daemon = True
        self._timer.start()

    def watch(self, sock: socket.socket) -> None:
        """Watch `sock` from now on (the TLS socket replaces the plain one it wraps)."""
        with self._lock:
            self._sock = sock
            expired = self.expired
        if expired:
            _shutdown(sock)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            sock = self._sock
        if sock is not None:
            _shutdown(sock)

    def cancel(self) -> None:
        self._timer.cancel()


def _shutdown(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


def where_of(url: str) -> str:
    """scheme://host:port of a URL, without the user and password it may carry."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    return f"{parts.scheme}://{host}" + (f":{port}" if port else "")


@dataclass
class _Proxy:
    host: str
    port: int
    authorization: str  # the Proxy-Authorization header's value, or ""
    where: str


def _proxy_for(parts: urllib.parse.SplitResult) -> Optional[_Proxy]:
    import urllib.request  # here: a plain `gpuhost check` off EC2 never needs it (tens of milliseconds)

    address = urllib.request.getproxies().get(parts.scheme)
    if not address or urllib.request.proxy_bypass(parts.hostname or ""):
        return None
    if "://" not in address:
        address = "http://" + address
    proxy = urllib.parse.urlsplit(address)
    where = where_of(address)
    if proxy.scheme != "http" or not proxy.hostname:
        raise Unreachable(where, f"the {parts.scheme} proxy must be an http:// URL")
    try:
        port = proxy.port or 80
    except ValueError:
        raise Unreachable(where, "the proxy's port is not a number from 1 to 65535") from None
    authorization = ""
    if proxy.username is not None:
        pair = f"{urllib.parse.unquote(proxy.username)}:{urllib.parse.unquote(proxy.password or '')}"
        authorization = "Basic " + base64.b64encode(pair.encode()).decode()
    return _Proxy(proxy.hostname, port, authorization, where)


def _resolve(host: str, port: int, deadline: Deadline, where: str) -> list[Any]:
    """getaddrinfo within the deadline: a resolver that never answers is TooSlow, not a hang."""
    found: dict[str, Any] = {}

    def lookup() -> None:
        try:
            found["addresses"] = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            found["error"] = exc

    worker = threading.Thread(target=lookup, daemon=True)
    worker.start()
    worker.join(deadline.left(where))
    if worker.is_alive():
        raise TooSlow(where, f"the name {host} did not resolve within {deadline.seconds:g} s")
    if "error" in found:
        raise Unreachable(where, f"the name {host} does not resolve ({found['error']})")
    return list(found["addresses"])


def _connect(
    host: str, port: int, deadline: Deadline, watchdog: _Watchdog, where: str, connect_s: Optional[float]
) -> socket.socket:
    failure: Optional[OSError] = None
    for family, kind, proto, _, address in _resolve(host, port, deadline, where):
        sock = socket.socket(family, kind, proto)
        watchdog.watch(sock)
        left = deadline.left(where)
        sock.settimeout(left if connect_s is None else min(left, connect_s))
        try:
            sock.connect(address)
            sock.settimeout(deadline.left(where))
            return sock
        except OSError as exc:
            sock.close()
            failure = exc
    if watchdog.expired:
        raise TooSlow(where, deadline.late())
    if isinstance(failure, ConnectionRefusedError):
        raise Unreachable(where, "connection refused")
    if isinstance(failure, socket.timeout):
        raise Unreachable(where, f"no connection within {connect_s if connect_s is not None else deadline.seconds:g} s")
    raise Unreachable(where, str(failure or "no address"))


def _tunnel(sock: socket.socket, host: str, port: int, proxy: _Proxy) -> None:
    """CONNECT host:port through the proxy on `sock`."""
    target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    head = f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n"
    if proxy.authorization:
        head += f"Proxy-Authorization: {proxy.authorization}\r\n"
    sock.sendall((head + "\r\n").encode())
    response = http.client.HTTPResponse(sock, method="CONNECT")
    try:
        response.begin()
    finally:
        response.close()  # the reader over the socket, not the socket
    if response.status != 200:
        raise Unreachable(proxy.where, f"the proxy refused the tunnel to {target}: HTTP {response.status}")


class Opened:
    """An answer whose status line and headers have arrived; its body is read within the deadline
    and the cap (read(), read_all()); close() ends the exchange."""

    def __init__(
        self,
        method: str,
        url: str,
        conn: http.client.HTTPConnection,
        response: http.client.HTTPResponse,
        watchdog: _Watchdog,
        deadline: Deadline,
        limit: int,
    ) -> None:
        self.url = url
        self.where = where_of(url)
        self.status = response.status
        self.headers = response.headers
        self.limit = limit
        self.received = 0
        self._conn = conn
        self._response = response
        self._watchdog = watchdog
        self._deadline = deadline
        declared = response.getheader("Content-Length") or ""
        bodiless = method == "HEAD" or self.status in (204, 304) or 100 <= self.status < 200
        # the answer to HEAD declares the length of what GET would send, and sends nothing
        self.declared = int(declared) if declared.isdigit() and len(declared) < 20 and not bodiless else None

    def read(self, size: int = 65536) -> bytes:
        """The next bytes of the body (at most `size`); b"" at its end."""
        if self.declared is not None and self.declared > self.limit:
            declared = f"Content-Length {self.declared}"
            raise Unusable(self.where, f"the answer is larger than {_size(self.limit)} ({declared})")
        try:
            chunk = self._response.read1(size)
        except (OSError, ValueError, http.client.HTTPException) as exc:
            if self._watchdog.expired or isinstance(exc, socket.timeout):
                raise TooSlow(self.where, self._deadline.late()) from exc
            if isinstance(exc, http.client.IncompleteRead):
                raise Unusable(self.where, "the answer was cut short") from exc
            raise Unusable(self.where, f"the connection failed mid-answer: {exc}") from exc
        if self._watchdog.expired:
            raise TooSlow(self.where, self._deadline.late())
        self.received += len(chunk)
        if self.received > self.limit:
            raise Unusable(self.where, f"the answer is larger than {_size(self.limit)}")
        if not chunk and self.declared is not None and self.received < self.declared:
            raise Unusable(self.where, f"the answer was cut short ({self.received} of {self.declared} bytes)")
        return chunk

    def read_all(self) -> bytes:
        body = bytearray()
        while True:
            chunk = self.read()
            if not chunk:
                return bytes(body)
            body += chunk

    def read_some(self, limit: int) -> bytes:
        """At most `limit` bytes of the body, never an error (an error status's body, for its message)."""
        body = bytearray()
        with contextlib.suppress(OSError, ValueError, http.client.HTTPException):
            while len(body) < limit and not self._watchdog.expired:
                chunk = self._response.read1(min(65536, limit - len(body)))
                if not chunk:
                    break
                body += chunk
        return bytes(body)

    def abort(self) -> None:
        """End the exchange from another thread: a read blocked on the socket wakes with an error."""
        if self._conn.sock is not None:
            _shutdown(self._conn.sock)

    def close(self) -> None:
        self._watchdog.cancel()
        with contextlib.suppress(OSError, http.client.HTTPException):
            self._response.close()
        self._conn.close()

    def __enter__(self) -> Opened:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_answer(
    method: str,
    url: str,
    deadline: Deadline,
    limit: int,
    headers: Optional[dict[str, str]] = None,
    body: Optional[bytes] = None,
    context: Optional[ssl.SSLContext] = None,
    use_proxy: bool = True,
    connect_s: Optional[float] = None,
) -> Opened:
    """Send one request and read the status line and headers, all within `deadline`; the body is
    then read from the Opened answer (at most `limit` bytes). Raises Unreachable, TooSlow or Unusable."""
    parts = urllib.parse.urlsplit(url)
    https = parts.scheme == "https"
    where = where_of(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise Unusable(where, "not an http(s) URL")
    host = parts.hostname
    try:
        port = parts.port or (443 if https else 80)
    except ValueError:
        raise Unusable(where, "the port is not a number from 1 to 65535") from None
    proxy = _proxy_for(parts) if use_proxy else None
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    sent = dict(headers or {})
    watchdog = _Watchdog(deadline)
    sock: Optional[socket.socket] = None
    try:
        if proxy is not None:
            sock = _connect(proxy.host, proxy.port, deadline, watchdog, proxy.where, connect_s)
            if https:
                _tunnel(sock, host, port, proxy)
            else:
                target = urllib.parse.urlunsplit(("http", parts.netloc.rpartition("@")[2], target, "", ""))
                if proxy.authorization:
                    sent["Proxy-Authorization"] = proxy.authorization
        else:
            sock = _connect(host, port, deadline, watchdog, where, connect_s)
        conn: http.client.HTTPConnection
        if https:
            tls = (context or ssl.create_default_context()).wrap_socket(
                sock, server_hostname=host, do_handshake_on_connect=False
            )
            sock = tls
            watchdog.watch(tls)
            tls.do_handshake()
            conn = http.client.HTTPSConnection(host, port)
        else:
            conn = http.client.HTTPConnection(host, port)
        conn.sock = sock
        conn.request(method, target, body=body, headers=sent)
        response = conn.getresponse()
    except ExchangeError:
        watchdog.cancel()
        _close(sock)
        raise
    except ssl.SSLCertVerificationError as exc:
        watchdog.cancel()
        _close(sock)
        raise Untrusted(where, f"TLS certificate not trusted: {exc.verify_message}") from exc
    except (OSError, ValueError, http.client.HTTPException) as exc:
        watchdog.cancel()
        _close(sock)
        raise _failure(exc, watchdog, deadline, where) from exc
    return Opened(method, url, conn, response, watchdog, deadline, limit)


def _close(sock: Optional[socket.socket]) -> None:
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.close()


def _failure(exc: BaseException, watchdog: _Watchdog, deadline: Deadline, where: str) -> ExchangeError:
    """Why sending the request or reading the status line and headers failed, in words."""
    if watchdog.expired or isinstance(exc, socket.timeout):
        return TooSlow(where, deadline.late())
    if isinstance(exc, ssl.SSLError):
        return Unusable(where, f"not a TLS answer ({exc.reason or exc})")
    if isinstance(exc, http.client.RemoteDisconnected):
        return Unusable(where, "the connection was closed without an answer")
    if isinstance(exc, http.client.HTTPException):
        text = " ".join(str(exc).split())[:80]
        return Unusable(where, f"not an HTTP answer ({type(exc).__name__}{': ' + text if text else ''})")
    if isinstance(exc, ConnectionResetError):
        return Unusable(where, "the connection was reset")
    return Unusable(where, f"the connection failed: {exc}")


@dataclass
class Answer:
    url: str
    status: int
    headers: http.client.HTTPMessage
    body: bytes


def exchange(
    method: str,
    url: str,
    deadline: Deadline,
    limit: int,
    headers: Optional[dict[str, str]] = None,
    body: Optional[bytes] = None,
    context: Optional[ssl.SSLContext] = None,
    use_proxy: bool = True,
    error_limit: int = 64 * 1024,
) -> Answer:
    """The whole answer: a success's body within `limit` (Unusable past it), an error status's first
    `error_limit` bytes (enough for its message)."""
    with open_answer(method, url, deadline, limit, headers, body, context, use_proxy) as opened:
        content = opened.read_all() if opened.status < 400 else opened.read_some(error_limit)
        return Answer(url, opened.status, opened.headers, content)


def _size(limit: int) -> str:
    return f"{limit / (1024 * 1024):.1f} MiB"
