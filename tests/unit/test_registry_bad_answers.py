"""The registry client `gpuhost layers` uses, against registries on 127.0.0.1 that answer badly: each
bad answer is a RegistryError naming the registry, within the total deadline, in bounded memory, and
`gpuhost layers` reports it as `pull.registry_error` (never a traceback)."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from gpuhost.cli import app
from gpuhost.comfyui.registry import (
    INDEX_TYPES,
    MANIFEST_TYPES,
    LayerDescriptor,
    Platform,
    RegistryError,
    fetch_layer_descriptors,
)
from tests.support.bad_servers import BadServer, Script, docker_with_image, hostile_answers, http_response

ANY_DIGEST = "sha256:" + "0" * 64
DEADLINE_S = 1.5
EXPECTED = {
    "not-http": "not an HTTP answer",
    "bad-status-line": "not an HTTP answer",
    "huge-header": "not an HTTP answer",
    "too-many-headers": "not an HTTP answer",
    "endless-headers": "not an HTTP answer",
    "trickled-headers": r"no complete answer within 1\.5 s",
    "trickled-body": r"no complete answer within 1\.5 s",
    "endless-body": "larger than 4.0 MiB",
    "declared-huge": "larger than 4.0 MiB",
    "premature-close": "cut short",
    "invalid-chunked": "cut short",
    "closed-without-answer": "closed without an answer",
    "silent": r"no complete answer within 1\.5 s",
    "wrong-content-type": "is not the manifest with that digest",
    "deep-json": "is not the manifest with that digest",
}


def digest_of(body: bytes) -> str:
    return "sha256:" + hashlib.sha256(body).hexdigest()


def repo_digest(server: BadServer, digest: str = ANY_DIGEST) -> str:
    return f"{server.url[len('http://'):]}/comfyui@{digest}"


def manifest_answer(manifest: Any, media_type: str = MANIFEST_TYPES[0]) -> tuple[bytes, Script]:
    body = json.dumps(manifest).encode() if not isinstance(manifest, bytes) else manifest
    return body, Script.body(body, content_type=media_type)


def layer(size: Any = 1234, media_type: str = "application/vnd.docker.image.rootfs.diff.tar.gzip") -> dict[str, Any]:
    return {"mediaType": media_type, "digest": "sha256:" + "1" * 64, "size": size}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_bad_answer_is_a_registry_error_within_the_deadline(name: str) -> None:
    assert set(EXPECTED) == set(hostile_answers())
    with BadServer(hostile_answers()[name]) as server:
        started = time.monotonic()
        with pytest.raises(RegistryError, match=EXPECTED[name]) as caught:
            fetch_layer_descriptors(repo_digest(server), deadline_s=DEADLINE_S)
        elapsed = time.monotonic() - started
    assert elapsed < DEADLINE_S + 0.5, elapsed
    assert server.url in str(caught.value)
    assert server.bytes_sent < 64 * 1024 * 1024  # the endless answers were not read to the end


BAD_MANIFESTS = {
    "size-as-string": ({"layers": [layer("1234")]}, "size '1234' is not a whole number of bytes"),
    "negative-size": ({"layers": [layer(-1)]}, "size '-1' is not a whole number"),
    "fractional-size": ({"layers": [layer(1.5)]}, "size '1.5' is not a whole number"),
    "bool-size": ({"layers": [layer(True)]}, "size 'True' is not a whole number"),
    "null-size": ({"layers": [layer(None)]}, "size 'None' is not a whole number"),
    "size-beyond-an-exbibyte": ({"layers": [layer(2**70)]}, "is not a whole number of bytes"),
    "layers-not-a-list": ({"layers": {"a": 1}}, "lists no layers"),
    "layer-not-an-object": ({"layers": ["sha256:ab"]}, "layer 1 of the manifest is not an object"),
    "digest-not-a-string": ({"layers": [{**layer(), "digest": 7}]}, "no mediaType or digest string"),
    "a-list": ([layer()], "not a JSON object"),
    "unknown-media-type": ({"mediaType": "text/plain", "config": {}}, "not an image manifest"),
}
RAW_MANIFESTS = {
    "size-beyond-float-range": (b'{"layers": [{"mediaType": "x", "digest": "y", "size": 1e400}]}', "not valid JSON"),
    "size-nan": (b'{"layers": [{"mediaType": "x", "digest": "y", "size": NaN}]}', "not valid JSON"),
    "size-infinity": (b'{"layers": [{"mediaType": "x", "digest": "y", "size": -Infinity}]}', "not valid JSON"),
    "nested-100k-deep": (b'{"layers": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "not valid JSON"),
    "not-json": (b"<html>It works!</html>", "not valid JSON"),
    "not-utf8": (b'{"layers": "\xff\xfe"}', "not valid JSON"),
}


@pytest.mark.parametrize("name", sorted(BAD_MANIFESTS) + sorted(RAW_MANIFESTS))
def test_a_manifest_of_the_wrong_shape_is_a_registry_error(name: str) -> None:
    manifest, expected = BAD_MANIFESTS[name] if name in BAD_MANIFESTS else RAW_MANIFESTS[name]
    body, script = manifest_answer(manifest)
    with BadServer(script) as server, pytest.raises(RegistryError, match=expected):
        fetch_layer_descriptors(repo_digest(server, digest_of(body)), deadline_s=DEADLINE_S)


def test_a_good_manifest_gives_its_layers() -> None:
    body, script = manifest_answer({"schemaVersion": 2, "mediaType": MANIFEST_TYPES[0], "layers": [layer(0), layer()]})
    with BadServer(script) as server:
        layers = fetch_layer_descriptors(repo_digest(server, digest_of(body)))
    assert [d.size for d in layers] == [0, 1234]
    assert server.requests == [f"GET /v2/comfyui/manifests/{digest_of(body)} HTTP/1.1"]


def index_of(*entries: tuple[str, str]) -> bytes:
    manifests = [{"mediaType": MANIFEST_TYPES[1], "digest": digest, "size": 1,
                  "platform": {"os": "linux", "architecture": arch}} for arch, digest in entries]
    return json.dumps({"schemaVersion": 2, "mediaType": INDEX_TYPES[1], "manifests": manifests}).encode()


def by_digest(answers: dict[str, tuple[bytes, str]]) -> Any:
    def answer(line: str) -> Script:
        for digest, (body, media_type) in answers.items():
            if digest in line:
                return Script.body(body, content_type=media_type)
        return Script.body(b'{"errors": [{"code": "MANIFEST_UNKNOWN", "message": "manifest unknown"}]}',
                           status="404 Not Found")

    return answer


def test_a_manifest_list_leads_to_the_images_platform() -> None:
    arm = json.dumps({"mediaType": MANIFEST_TYPES[1], "layers": [layer(7)]}).encode()
    amd = json.dumps({"mediaType": MANIFEST_TYPES[1], "layers": [layer(9), layer(10)]}).encode()
    index = index_of(("arm64", digest_of(arm)), ("amd64", digest_of(amd)))
    answers = {digest_of(index): (index, INDEX_TYPES[1]), digest_of(arm): (arm, MANIFEST_TYPES[1]),
               digest_of(amd): (amd, MANIFEST_TYPES[1])}
    with BadServer(by_digest(answers)) as server:
        pinned = repo_digest(server, digest_of(index))
        assert [d.size for d in fetch_layer_descriptors(pinned, image_platform=Platform("linux", "amd64"))] == [9, 10]
        assert fetch_layer_descriptors(pinned, image_platform=Platform("linux", "arm64")) == [
            LayerDescriptor(layer()["mediaType"], layer()["digest"], 7)]
        with pytest.raises(RegistryError, match="no manifest for linux/riscv64"):
            fetch_layer_descriptors(pinned, image_platform=Platform("linux", "riscv64"))


def test_manifest_lists_cannot_loop() -> None:
    # a list whose platform entry names another list: refused after two requests, as Docker refuses it
    inner = index_of(("amd64", ANY_DIGEST))
    outer = index_of(("amd64", digest_of(inner)))
    answers = {digest_of(outer): (outer, INDEX_TYPES[1]), digest_of(inner): (inner, INDEX_TYPES[1])}
    amd64 = Platform("linux", "amd64")
    with BadServer(by_digest(answers)) as server, pytest.raises(RegistryError, match="names another manifest list"):
        fetch_layer_descriptors(repo_digest(server, digest_of(outer)), image_platform=amd64)
    assert len(server.requests) == 2
    # a registry that answers the same list whatever digest is asked for: the second answer is not
    # the manifest that was named, so the walk stops there
    same = index_of(("amd64", ANY_DIGEST))
    with BadServer(Script.body(same, content_type=INDEX_TYPES[1])) as server, pytest.raises(
        RegistryError, match="is not the manifest with that digest"
    ):
        fetch_layer_descriptors(repo_digest(server, digest_of(same)), image_platform=amd64)
    assert len(server.requests) == 2


def test_redirects_are_bounded() -> None:
    loop = Script(prefix=b"HTTP/1.1 307 Temporary Redirect\r\nLocation: /v2/again\r\nContent-Length: 0\r\n\r\n")
    with BadServer(loop) as server, pytest.raises(RegistryError, match="more than 3 redirects"):
        fetch_layer_descriptors(repo_digest(server), deadline_s=DEADLINE_S)
    assert len(server.requests) == 4
    elsewhere = Script(prefix=b"HTTP/1.1 302 Found\r\nLocation: file:///etc/passwd\r\nContent-Length: 0\r\n\r\n")
    with BadServer(elsewhere) as server, pytest.raises(RegistryError, match="not an http"):
        fetch_layer_descriptors(repo_digest(server), deadline_s=DEADLINE_S)


def test_error_statuses_say_what_the_registry_said() -> None:
    unknown = Script.body(b'{"errors": [{"code": "MANIFEST_UNKNOWN", "message": "manifest unknown"}]}',
                          status="404 Not Found")
    with BadServer(unknown) as server, pytest.raises(RegistryError, match="HTTP 404: manifest unknown"):
        fetch_layer_descriptors(repo_digest(server))
    endless_error = Script(prefix=b"HTTP/1.1 500 Oops\r\nConnection: close\r\n\r\n", filler_bytes=1024**3)
    with BadServer(endless_error) as server, pytest.raises(RegistryError, match=r"HTTP 500$"):
        fetch_layer_descriptors(repo_digest(server), deadline_s=DEADLINE_S)
    assert server.bytes_sent < 64 * 1024 * 1024
    plain_realm = Script(prefix=b'HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer realm="http://x/token"\r\n'
                                b"Content-Length: 0\r\n\r\n")
    with BadServer(plain_realm) as server, pytest.raises(RegistryError, match="token realm is not an https URL"):
        fetch_layer_descriptors(repo_digest(server))


def test_https_registries_meet_the_deadline_and_refuse_plain_answers() -> None:
    # 127.0.0.2 is not a localhost name: the client speaks TLS to it
    plain = Script(prefix=http_response(b"{}"), answer_before_request=True)
    with BadServer(plain, host="127.0.0.2") as server, pytest.raises(RegistryError, match="not a TLS answer"):
        fetch_layer_descriptors(repo_digest(server), deadline_s=DEADLINE_S)
    with BadServer(hostile_answers()["silent"], host="127.0.0.2") as server:
        started = time.monotonic()
        with pytest.raises(RegistryError, match=r"within 1\.5 s"):
            fetch_layer_descriptors(repo_digest(server), deadline_s=DEADLINE_S)
        assert time.monotonic() - started < DEADLINE_S + 0.5


def test_a_name_that_is_not_a_repository_digest_is_refused() -> None:
    for bad in ("comfyui:0.3.64", "127.0.0.1:1/x@sha256:abc", "x@sha256:" + "A" * 64):
        with pytest.raises(RegistryError, match="not a repository digest"):
            fetch_layer_descriptors(bad)


# --- through `gpuhost layers`: a stand-in Docker whose image came from the bad registry ----------


@pytest.mark.parametrize("name", ["trickled-body", "endless-body", "bad-status-line", "size-beyond-float-range"])
def test_layers_reports_a_bad_registry_as_its_registry_error(name: str, tmp_path: Path) -> None:
    script = manifest_answer(RAW_MANIFESTS[name][0])[1] if name in RAW_MANIFESTS else hostile_answers()[name]
    with BadServer(script) as registry, BadServer(docker_with_image(repo_digest(registry)), str(tmp_path)) as docker:
        started = time.monotonic()
        result = CliRunner().invoke(app, ["layers", "comfyui:0.3.64", "--docker-host", docker.address, "--json"])
        elapsed = time.monotonic() - started
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert registry.url[len("http://"):] in payload["pull"]["registry_error"]
    assert payload["pull"]["registry_layers"] == []
    assert elapsed < 5.0 + 2.0, elapsed  # the registry's 5 s deadline, and the rest of the command
