"""`gpuhost models sync` against moto's S3 server and a Range-capable https server on 127.0.0.1,
with generated safetensors files of several sizes (one above the 8 MiB part size)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gpuhost.agent import main as agent_main
from gpuhost.comfyui.models.sync import SyncOptions, run
from tests.support.paths import REPO
from tests.support.s3 import BUCKET, RangeServer, S3Proxy, model_bytes, s3_client, s3_server

SIZES = {"checkpoints/big.safetensors": 20 * 1024 * 1024 + 4321, "loras/mid.safetensors": 3 * 1024 * 1024,
         "vae/small.safetensors": 70_000}
PREFIX = "comfyui"


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE")}
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
    os.environ.pop("AWS_PROFILE", None)
    with s3_server() as endpoint:
        client = s3_client(endpoint)
        client.create_bucket(Bucket=BUCKET)
        files = {}
        for number, (key, size) in enumerate(SIZES.items()):
            files[key] = model_bytes(size, number)
            client.put_object(Bucket=BUCKET, Key=f"{PREFIX}/{key}", Body=files[key])
        root = tmp_path_factory.mktemp("models-source")
        for key, data in files.items():
            (root / key).parent.mkdir(parents=True, exist_ok=True)
            (root / key).write_bytes(data)
        yield {"endpoint": endpoint, "client": client, "files": files, "root": root}
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def manifest(tmp_path: Path, files: dict[str, bytes], hashes: bool = True) -> str:
    path = tmp_path / "models.manifest.json"
    path.write_text(json.dumps({"models": [
        {"path": key, "size": len(data), **({"sha256": hashlib.sha256(data).hexdigest()} if hashes else {})}
        for key, data in files.items()]}))
    return str(path)


def sync(endpoint: str, tmp_path: Path, files: dict[str, bytes], **extra: Any) -> Any:
    options = SyncOptions.parse(source=f"s3://{BUCKET}/{PREFIX}", manifest=manifest(tmp_path, files),
                                to=str(tmp_path / "models"), endpoint_url=endpoint, part_size="8MiB",
                                region="us-east-1", **extra)
    return run(options)


def assert_synced(directory: Path, files: dict[str, bytes]) -> None:
    for key, data in files.items():
        assert (directory / key).read_bytes() == data
        assert not (directory / f"{key}.part").exists() and not (directory / f"{key}.part.json").exists()


def test_full_sync_then_nothing_to_fetch(s3: dict[str, Any], tmp_path: Path) -> None:
    with S3Proxy(s3["endpoint"]) as proxy:
        first = sync(proxy.endpoint, tmp_path, s3["files"], record=str(tmp_path / "record.json"))
        assert int(first.exit_code) == 0, first.message
        assert_synced(tmp_path / "models", s3["files"])
        assert {f.relpath: f.action for f in first.files} == dict.fromkeys(SIZES, "fetched")
        assert first.fetched_bytes == sum(SIZES.values())
        assert sum(proxy.sent.values()) == sum(SIZES.values())  # each byte crossed the wire once
        record = json.loads((tmp_path / "record.json").read_text())
        assert record["directory"] == str(tmp_path / "models") and len(record["files"]) == 3

        proxy.sent.clear()
        second = sync(proxy.endpoint, tmp_path, s3["files"])
        assert [f.action for f in second.files] == ["skipped"] * 3 and sum(proxy.sent.values()) == 0
        dry = sync(proxy.endpoint, tmp_path, s3["files"], dry_run=True)
        assert [f.action for f in dry.files] == ["present"] * 3 and dry.prediction is not None
        assert dry.prediction.bytes == 0


def test_a_killed_sync_resumes_with_the_remainder_only(s3: dict[str, Any], tmp_path: Path) -> None:
    big = "checkpoints/big.safetensors"
    files = {big: s3["files"][big]}
    path = manifest(tmp_path, files)
    target = tmp_path / "models"
    with S3Proxy(s3["endpoint"]) as proxy:
        proxy.server.delay_per_chunk = 0.02  # ~3 MB/s per stream: slow enough to kill mid-file
        command = [sys.executable, "-m", "gpuhost", "models", "sync", f"s3://{BUCKET}/{PREFIX}", "--manifest", path,
                   "--to", str(target), "--endpoint-url", proxy.endpoint, "--part-size", "1MiB", "--concurrency",
                   "2", "--region", "us-east-1", "--json"]
        process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        state = target / f"{big}.part.json"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if state.exists() and len(json.loads(state.read_text() or "{}").get("done", [])) >= 3:
                break
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        held = len(json.loads(state.read_text())["done"])
        assert 3 <= held < 21 and not (target / big).exists()

        proxy.server.delay_per_chunk = 0.0
        # the killed process's streams may still be draining through the proxy: let them end first
        settle = time.monotonic() + 10
        while time.monotonic() < settle:
            before = dict(proxy.sent)
            time.sleep(0.3)
            if dict(proxy.sent) == before:
                break
        proxy.sent.clear()
        resumed = run(SyncOptions.parse(source=f"s3://{BUCKET}/{PREFIX}", manifest=path, to=str(target),
                                        endpoint_url=proxy.endpoint, part_size="1MiB", region="us-east-1"))
    [result] = resumed.files
    assert result.action == "resumed", resumed.message
    assert result.bytes_resumed >= held * 1024 * 1024
    assert result.bytes_fetched == len(files[big]) - result.bytes_resumed
    assert proxy.sent[f"/{BUCKET}/{PREFIX}/{big}"] == result.bytes_fetched  # what S3 sent: the remainder
    assert_synced(target, files)


def test_corrupt_local_files_are_fetched_again(s3: dict[str, Any], tmp_path: Path) -> None:
    target = tmp_path / "models"
    assert int(sync(s3["endpoint"], tmp_path, s3["files"]).exit_code) == 0
    flipped = bytearray((target / "loras/mid.safetensors").read_bytes())
    flipped[-10] ^= 0xFF  # same size, same header: only the hash tells
    (target / "loras/mid.safetensors").write_bytes(bytes(flipped))
    (target / "vae/small.safetensors").write_bytes(b"<!DOCTYPE html><html>Error</html>")
    again = sync(s3["endpoint"], tmp_path, s3["files"])
    assert {f.relpath: f.action for f in again.files} == {
        "checkpoints/big.safetensors": "skipped", "loras/mid.safetensors": "fetched",
        "vae/small.safetensors": "fetched",
    }
    assert_synced(target, s3["files"])


def test_an_html_page_in_the_source_is_refused_not_installed(s3: dict[str, Any], tmp_path: Path) -> None:
    page = b"<html><head><title>403 Forbidden</title></head><body>Forbidden</body></html>\n"
    s3["client"].put_object(Bucket=BUCKET, Key=f"{PREFIX}/loras/page.safetensors", Body=page)
    result = sync(s3["endpoint"], tmp_path, {"loras/page.safetensors": page})
    [item] = result.files
    assert item.action == "failed" and "header too large" in item.problem and "HTML page" in item.problem
    assert int(result.exit_code) == 1
    assert not (tmp_path / "models/loras/page.safetensors").exists()
    assert not (tmp_path / "models/loras/page.safetensors.part").exists()


def test_a_wrong_hash_in_the_source_and_a_missing_key_fail_by_name(s3: dict[str, Any], tmp_path: Path) -> None:
    data = s3["files"]["vae/small.safetensors"]
    path = tmp_path / "m.json"
    path.write_text(json.dumps({"models": [
        {"path": "vae/small.safetensors", "size": len(data), "sha256": "0" * 64},
        {"path": "vae/absent.safetensors", "size": 100}]}))
    result = run(SyncOptions.parse(source=f"s3://{BUCKET}/{PREFIX}", manifest=str(path), to=str(tmp_path / "m"),
                                   endpoint_url=s3["endpoint"], region="us-east-1"))
    problems = {f.name: f.problem for f in result.files}
    assert "sha256" in problems["small.safetensors"] and "not in the source" in problems["absent.safetensors"]
    assert int(result.exit_code) == 1 and not (tmp_path / "m/vae/small.safetensors").exists()


def test_slowdown_answers_are_retried(s3: dict[str, Any], tmp_path: Path) -> None:
    with S3Proxy(s3["endpoint"]) as proxy:
        proxy.slow_down_next(4)
        result = sync(proxy.endpoint, tmp_path, s3["files"])
        assert proxy.server.slowdowns_sent == 4
    assert int(result.exit_code) == 0, result.message
    assert_synced(tmp_path / "models", s3["files"])


def test_the_agent_reports_an_unreachable_source_as_exit_3(s3: dict[str, Any], tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    code = agent_main(["models-sync", f"s3://{BUCKET}/{PREFIX}", "--manifest", manifest(tmp_path, s3["files"]),
                       "--to", str(tmp_path / "m"), "--endpoint-url", "http://127.0.0.1:9", "--attempts", "1",
                       "--timeout", "5s"])
    answer = json.loads(capsys.readouterr().out)
    assert code == 3 and answer["exit_code"] == 3 and "cannot reach S3" in answer["error"]
    code = agent_main(["models-verify", str(tmp_path / "m"), "--manifest", manifest(tmp_path, s3["files"])])
    assert code == 1 and json.loads(capsys.readouterr().out)["totals"]["failed"] == 3


def test_an_https_source_with_its_own_ca_and_a_redirect(s3: dict[str, Any], tmp_path: Path) -> None:
    with RangeServer(s3["root"], tls_dir=tmp_path / "tls") as server:
        assert server.ca_file is not None
        options = SyncOptions.parse(source=f"{server.url}/redirect", manifest=manifest(tmp_path, s3["files"]),
                                    to=str(tmp_path / "models"), part_size="1MiB", concurrency=4,
                                    ca_bundle=str(server.ca_file))
        result = run(options)
        assert int(result.exit_code) == 0, result.message
        assert sum(server.sent.values()) == sum(SIZES.values())
        assert_synced(tmp_path / "models", s3["files"])
        # without the CA the server is not trusted: exit 3 for the whole run, nothing written
        untrusted = SyncOptions.parse(source=server.url, manifest=manifest(tmp_path, s3["files"]),
                                      to=str(tmp_path / "other"))
        with pytest.raises(Exception, match="certificate not trusted"):
            run(untrusted)
