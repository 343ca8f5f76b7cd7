"""boto3 clients whose every request has a total deadline and a size cap.

botocore's own sender (urllib3) has per-socket-operation timeouts only: an endpoint (`--endpoint-url`,
AWS_ENDPOINT_URL_EC2, a proxy in between) that trickles a byte a second, or sends headers or a body
without end, holds a call and its memory as long as it likes. `bound(client, ...)` sends the
client's requests itself through botocore's public `before-send` event, with gpuhost.exchange:
connect, proxy tunnel, TLS, status line, headers and body within the request's deadline, the body
within a size cap (a streaming body, S3's GetObject, is read in pieces by a caller that stops at
what it asked for), and each call (retries included) within the call's deadline. The proxy variables
and the CA bundle (AWS_CA_BUNDLE, the profile's ca_bundle) count as they do for botocore.

Imported only where botocore already is (it does not travel in the agent zipapp).
"""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Iterator
from typing import Any, Optional

from botocore.awsrequest import AWSResponse
from botocore.compat import HTTPHeaders
from botocore.exceptions import BotoCoreError, EndpointConnectionError, HTTPClientError, ReadTimeoutError

from gpuhost.exchange import (
    Deadline,
    ExchangeError,
    Opened,
    TooSlow,
    Unreachable,
    Untrusted,
    open_answer,
    where_of,
)

MAX_ERROR_BYTES = 64 * 1024
# a streaming answer (S3 GetObject) is read in pieces: its reader stops at the bytes it asked for
STREAM_LIMIT = 2**62


class EndpointUnusable(HTTPClientError):
    """The endpoint answered, but not usably: not HTTP, cut short or too large (retried as transient)."""

    fmt = "{endpoint_url}: {error}"


class EndpointTooSlow(ReadTimeoutError):
    """No complete answer within the request's deadline (retried as transient)."""

    fmt = "{endpoint_url}: no complete answer within {seconds:g} s"


class EndpointUnreachable(EndpointConnectionError):
    """No connection to the endpoint (or its proxy)."""

    fmt = "{endpoint_url}: {error}"


class CallDeadlinePassed(BotoCoreError):
    """The call's own deadline passed: not retried."""

    fmt = "{endpoint_url}: no complete answer within {seconds:g} s (the call's time, retries included)"


class _Buffered:
    """The raw body of an answer read whole: what AWSResponse.content streams from."""

    def __init__(self, body: bytes) -> None:
        self.body = body

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self.body

    def read(self, amt: Optional[int] = None) -> bytes:
        body, self.body = (self.body, b"") if amt is None else (self.body[:amt], self.body[amt:])
        return body

    def close(self) -> None:
        self.body = b""


class _Streamed:
    """The raw body of a streaming answer (S3 GetObject), read as the caller asks, within the
    request's deadline; the caller bounds how much it reads."""

    def __init__(self, opened: Opened) -> None:
        self._opened = opened

    def read(self, amt: Optional[int] = None) -> bytes:
        chunk = self._opened.read_all() if amt is None else self._opened.read(amt)
        if amt is None or not chunk:
            self.close()
        return chunk

    def stream(self, amt: int = 65536, **_: Any) -> Iterator[bytes]:
        while True:
            chunk = self.read(amt)
            if not chunk:
                return
            yield chunk

    def close(self) -> None:
        self._opened.close()


class BoundedSender:
    """The `before-send` and `before-call` handlers of one client."""

    def __init__(
        self, request_s: float, call_s: float, max_bytes: int, connect_s: Optional[float], ca_bundle: Optional[str]
    ) -> None:
        self.request_s = request_s
        self.call_s = call_s
        self.max_bytes = max_bytes
        self.connect_s = connect_s
        self.context = ssl.create_default_context(cafile=ca_bundle) if ca_bundle else ssl.create_default_context()
        self._call = threading.local()  # a client may be shared between threads

    def start_call(self, **_: Any) -> None:
        self._call.until = time.monotonic() + self.call_s

    def send(self, request: Any, **_: Any) -> AWSResponse:
        where = where_of(request.url)
        now = time.monotonic()
        call_until = getattr(self._call, "until", None) or now + self.call_s
        if call_until <= now:
            raise CallDeadlinePassed(endpoint_url=where, seconds=self.call_s)
        seconds = min(self.request_s, call_until - now)
        body = request.body.encode() if isinstance(request.body, str) else request.body
        if body is not None and not isinstance(body, bytes):
            body = body.read()  # botocore's file-like bodies (uploads): gpuhost sends none of any size
        headers = {str(k): v.decode() if isinstance(v, bytes) else str(v) for k, v in request.headers.items()}
        streamed = bool(getattr(request, "stream_output", False))
        try:
            opened = open_answer(
                request.method, request.url, Deadline(seconds), STREAM_LIMIT if streamed else self.max_bytes,
                headers, body, self.context, connect_s=self.connect_s,
            )
            headers_in = HTTPHeaders.from_pairs(list(opened.headers.items()))
            if streamed and opened.status < 300:
                return AWSResponse(request.url, opened.status, headers_in, _Streamed(opened))
            with opened:
                content = opened.read_all() if opened.status < 300 else opened.read_some(MAX_ERROR_BYTES)
            return AWSResponse(request.url, opened.status, headers_in, _Buffered(content))
        except TooSlow as exc:
            if call_until - time.monotonic() <= 0.05:
                raise CallDeadlinePassed(endpoint_url=where, seconds=self.call_s) from exc
            raise EndpointTooSlow(endpoint_url=where, seconds=seconds) from exc
        except Untrusted as exc:
            raise EndpointUnusable(endpoint_url=where, error=exc.reason) from exc
        except Unreachable as exc:
            raise EndpointUnreachable(endpoint_url=exc.where, error=exc.reason) from exc
        except ExchangeError as exc:
            raise EndpointUnusable(endpoint_url=where, error=exc.reason) from exc


def bound(
    client: Any,
    request_s: float,
    call_s: float,
    max_bytes: int,
    connect_s: Optional[float] = None,
    ca_bundle: Optional[str] = None,
) -> Any:
    """`client`, its requests sent by a BoundedSender: each request within `request_s` seconds
    (connecting within `connect_s`), each call within `call_s`, each answer at most `max_bytes`."""
    sender = BoundedSender(request_s, call_s, max_bytes, connect_s, ca_bundle)
    client.meta.events.register_first("before-call", sender.start_call)
    client.meta.events.register_first("before-send", sender.send)
    return client
