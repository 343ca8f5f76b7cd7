"""gpuhost.exchange, the bounded HTTP exchange the registry, EC2 and instance metadata clients share:
servers on 127.0.0.1 that answer badly, and proxies from the environment."""

from __future__ import annotations

import socket
import time

import pytest

from gpuhost.exchange import Deadline, TooSlow, Unreachable, Unusable, exchange, open_answer, where_of
from tests.support.bad_servers import BadServer, Script, hostile_answers, http_response

UNUSABLE = {"not-http", "bad-status-line", "huge-header", "too-many-headers", "endless-headers", "endless-body",
            "declared-huge", "premature-close", "invalid-chunked", "closed-without-answer"}
TOO_SLOW = {"trickled-headers", "trickled-body", "silent"}
USABLE = {"wrong-content-type", "deep-json"}  # HTTP is fine: the caller judges the body


@pytest.mark.parametrize("name", sorted(hostile_answers()))
def test_every_hostile_answer_ends_within_the_deadline_and_the_cap(name: str) -> None:
    assert set(hostile_answers()) == UNUSABLE | TOO_SLOW | USABLE
    with BadServer(hostile_answers()[name]) as server:
        started = time.monotonic()
        if name in USABLE:
            assert exchange("GET", server.url + "/x", Deadline(1.0), 4 * 1024 * 1024).status == 200
        else:
            with pytest.raises(TooSlow if name in TOO_SLOW else Unusable) as caught:
                exchange("GET", server.url + "/x", Deadline(1.0), 4 * 1024 * 1024)
            assert str(caught.value).startswith(server.url + ": ")
        assert time.monotonic() - started < 1.5
    assert server.bytes_sent < 64 * 1024 * 1024


def test_an_error_status_keeps_only_the_start_of_its_body() -> None:
    endless = Script(prefix=b"HTTP/1.1 503 Busy\r\nConnection: close\r\n\r\n", filler_bytes=1024**3, filler=b"e")
    with BadServer(endless) as server:
        answer = exchange("GET", server.url, Deadline(2.0), 1024, error_limit=100)
    assert answer.status == 503 and answer.body == b"e" * 100


def test_the_body_is_read_in_pieces_within_the_cap() -> None:
    with BadServer(Script.body(b"x" * 300_000)) as server, open_answer(
        "GET", server.url, Deadline(2.0), 300_000
    ) as got:
        pieces = []
        while chunk := got.read(100_000):
            pieces.append(chunk)
    assert b"".join(pieces) == b"x" * 300_000


def test_nothing_listening_is_unreachable() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(Unreachable, match="connection refused"):
        exchange("GET", f"http://127.0.0.1:{port}/", Deadline(2.0), 1024)


def test_credentials_in_a_url_never_reach_a_message() -> None:
    assert where_of("http://user:secret@127.0.0.1:8080/path?q=1") == "http://127.0.0.1:8080"
    assert where_of("https://[::1]:5000/v2/") == "https://[::1]:5000"
    with BadServer(hostile_answers()["bad-status-line"]) as server:
        url = server.url.replace("http://", "http://user:secret@") + "/x"
        with pytest.raises(Unusable) as caught:
            exchange("GET", url, Deadline(2.0), 1024)
    assert "secret" not in str(caught.value)


def test_an_http_request_goes_through_the_proxy_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    with BadServer(Script.body(b"{}")) as proxy:
        monkeypatch.setenv("http_proxy", proxy.url.replace("http://", "http://me:pw@"))
        monkeypatch.delenv("no_proxy", raising=False)
        monkeypatch.delenv("NO_PROXY", raising=False)
        answer = exchange("GET", "http://registry.example:5000/v2/", Deadline(2.0), 1024)
    assert answer.body == b"{}"
    assert proxy.requests == ["GET http://registry.example:5000/v2/ HTTP/1.1"]


def test_an_https_request_tunnels_through_the_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    refusal = Script(prefix=http_response(b"", status="403 Forbidden"))
    with BadServer(refusal) as proxy:
        monkeypatch.setenv("https_proxy", proxy.url)
        monkeypatch.delenv("no_proxy", raising=False)
        monkeypatch.delenv("NO_PROXY", raising=False)
        with pytest.raises(Unreachable, match=r"refused the tunnel to ec2\.example:443: HTTP 403"):
            exchange("GET", "https://ec2.example/", Deadline(2.0), 1024)
    assert proxy.requests == ["CONNECT ec2.example:443 HTTP/1.1"]


def test_no_proxy_and_use_proxy_false_go_direct(monkeypatch: pytest.MonkeyPatch) -> None:
    with BadServer(Script.body(b"direct")) as server:
        monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")  # nothing listens there
        monkeypatch.setenv("no_proxy", "127.0.0.1")
        assert exchange("GET", server.url, Deadline(2.0), 1024).body == b"direct"
        monkeypatch.delenv("no_proxy")
        monkeypatch.delenv("NO_PROXY", raising=False)
        assert exchange("GET", server.url, Deadline(2.0), 1024, use_proxy=False).body == b"direct"
        with pytest.raises(Unreachable, match=r"127\.0\.0\.1:9: connection refused"):
            exchange("GET", server.url, Deadline(2.0), 1024)


def test_the_answer_to_head_declares_a_length_it_does_not_send() -> None:
    head = Script(prefix=b"HTTP/1.1 200 OK\r\nContent-Length: 20000000000\r\nAccept-Ranges: bytes\r\n\r\n")
    with BadServer(head) as server:
        answer = exchange("HEAD", server.url, Deadline(2.0), 1024)
    assert answer.status == 200 and answer.body == b""
    assert answer.headers["Content-Length"] == "20000000000"
