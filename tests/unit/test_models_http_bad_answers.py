"""The http(s) and s3 models sources and `models verify --url`'s GET against servers on 127.0.0.1 that
answer badly: a source error (or a transient one the sync retries) within the deadline, in bounded
memory."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from gpuhost.comfyui.models.https import HttpSource, get_json
from gpuhost.comfyui.models.s3 import S3Source
from gpuhost.comfyui.models.source import RemoteObject, TransientError
from gpuhost.model import SourceError, UsageError
from tests.support.bad_servers import BadServer, Script, hostile_answers, http_response

NOT_JSON = {"wrong-content-type", "deep-json"}


@pytest.mark.parametrize("name", sorted(hostile_answers()))
def test_stat_ends_within_the_deadline(name: str) -> None:
    with BadServer(hostile_answers()[name]) as server:
        started = time.monotonic()
        with pytest.raises((SourceError, TransientError)) as caught:
            HttpSource(server.url, timeout_s=1.0).stat("model.safetensors")
        assert time.monotonic() - started < 1.5
    assert server.url in str(caught.value)


@pytest.mark.parametrize("name", sorted(hostile_answers()))
def test_models_verify_get_is_a_source_error(name: str) -> None:
    with BadServer(hostile_answers()[name]) as server:
        started = time.monotonic()
        with pytest.raises(SourceError, match="not JSON" if name in NOT_JSON else None) as caught:
            get_json(server.url + "/models/checkpoints", timeout_s=1.0, max_bytes=1024 * 1024)
        assert time.monotonic() - started < 1.5
    assert server.url in str(caught.value)
    assert server.bytes_sent < 64 * 1024 * 1024


def ranged(body: bytes, total: int, trickle: bytes = b"", interval: float = 1.0) -> Script:
    head = (f"HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 0-{total - 1}/{total}\r\n"
            f"Content-Length: {total}\r\nConnection: close\r\n\r\n").encode()
    return Script(prefix=head + body, trickle=trickle, interval=interval)


def test_a_range_that_trickles_meets_the_deadline() -> None:
    with BadServer(ranged(b"x" * 10, 1000, trickle=b"x" * 990, interval=0.05)) as server:
        obj = RemoteObject(key=server.url + "/model.safetensors", size=1000, version="")
        started = time.monotonic()
        received = 0
        with pytest.raises(TransientError, match=r"no complete answer within 1 s"):
            for chunk in HttpSource(server.url, timeout_s=1.0).read_range(obj, 0, 1000):
                received += len(chunk)
        assert time.monotonic() - started < 1.5
    assert 10 <= received < 1000


def test_a_range_never_reads_more_than_it_asked_for() -> None:
    # the server says 100 bytes and sends a GiB
    endless = Script(prefix=http_response(b"", status="206 Partial Content", length=100).replace(
        b"Content-Length", b"Content-Range: bytes 0-99/100\r\nContent-Length"), filler_bytes=1024**3, filler=b"m")
    with BadServer(endless) as server:
        obj = RemoteObject(key=server.url + "/model.safetensors", size=100, version="")
        data = b"".join(HttpSource(server.url, timeout_s=2.0).read_range(obj, 0, 100))
    assert data == b"m" * 100
    assert server.bytes_sent < 64 * 1024 * 1024


@pytest.mark.parametrize("name", sorted(hostile_answers()))
def test_an_s3_endpoint_that_answers_badly_meets_the_deadline(
    name: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for variable in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_CA_BUNDLE"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "aws-config"))
    with BadServer(hostile_answers()[name]) as server:
        source = S3Source("s3://models/comfyui", region="us-east-1", endpoint_url=server.url, timeout_s=1.0,
                          attempts=2)
        started = time.monotonic()
        if name in NOT_JSON:
            # HTTP is fine and S3's answers are not JSON: the bytes come as served, and the sync's
            # format check refuses them (test_models_sync: an HTML page in the source)
            obj = source.stat("checkpoints/model.safetensors")
            assert b"".join(source.read_range(obj, 0, obj.size)).startswith((b"<html>", b"[[["))
        else:
            with pytest.raises((SourceError, TransientError, UsageError)):
                obj = source.stat("checkpoints/model.safetensors")  # a HEAD reads no body: it may pass
                for _ in source.read_range(obj, 0, min(obj.size, 4 * 1024 * 1024) or 1):
                    pass
        # a HEAD and a GET, each two attempts and the back-off between them
        assert time.monotonic() - started < 2 * (2 * 1.0 + 1.0), name
        source.close()
    assert server.bytes_sent < 200 * 1024 * 1024
