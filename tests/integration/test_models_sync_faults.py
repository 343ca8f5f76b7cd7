"""`gpuhost models sync` when the world moves under it: objects replaced, shrunk or deleted mid-copy
(moto's S3 server and the Range server), SIGINT/SIGTERM to the CLI and the agent, two syncs on one
directory, and sources that are wrong as a whole (no bucket, nothing under the prefix, not S3,
access refused, a base URL that answers 404 for everything).

Syncs that must stop or must not crash run as real subprocesses, every wait bounded: a regression
fails a test instead of hanging the suite.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import pytest

from gpuhost.agent import main as agent_main
from gpuhost.comfyui.models.sync import SyncOptions, run
from tests.support.paths import REPO
from tests.support.s3 import RangeServer, S3Proxy, fill_bucket, model_bytes, s3_client, s3_server

BIG = "checkpoints/big.safetensors"
FILES = {BIG: model_bytes(8 * 1024 * 1024 + 99, 7), "loras/mid.safetensors": model_bytes(1024 * 1024 + 5, 8),
         "vae/small.safetensors": model_bytes(50_000, 9)}
PREFIX = "comfyui"
AGENT = "import sys; from gpuhost.agent import main; sys.exit(main())"
DEADLINE_S = 90


@pytest.fixture(scope="module")
def moto() -> Iterator[str]:
    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE")}
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
    os.environ.pop("AWS_PROFILE", None)
    with s3_server() as endpoint:
        yield endpoint
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture
def bucket(moto: str) -> dict[str, Any]:
    """A bucket of its own for each test (tests change objects), holding FILES under PREFIX."""
    name = f"models-{uuid.uuid4().hex[:12]}"
    client = s3_client(moto)
    fill_bucket(client, name, FILES, PREFIX)
    return {"endpoint": moto, "client": client, "name": name, "source": f"s3://{name}/{PREFIX}"}


@pytest.fixture
def served(tmp_path: Path) -> Iterator[dict[str, Any]]:
    root = tmp_path / "served"
    for key, data in FILES.items():
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        (root / key).write_bytes(data)
    with RangeServer(root) as server:
        yield {"server": server, "root": root}


def manifest(tmp_path: Path, files: dict[str, bytes] = FILES) -> str:
    path = tmp_path / "models.manifest.json"
    path.write_text(json.dumps({"models": [
        {"path": key, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()} for key, data in files.items()]}))
    return str(path)


def sync_command(source: str, tmp_path: Path, *extra: str, agent: bool = False) -> list[str]:
    front = [sys.executable, "-c", AGENT, "models-sync"] if agent else [sys.executable, "-m", "gpuhost", "models",
                                                                         "sync"]
    return [*front, source, "--manifest", manifest(tmp_path), "--to", str(tmp_path / "models"), "--part-size", "1MiB",
            "--concurrency", "2", "--region", "us-east-1", "--json", *extra]


def finished(process: subprocess.Popen[str], timeout: float = DEADLINE_S) -> tuple[int, dict[str, Any], str]:
    out, err = process.communicate(timeout=timeout)
    assert "Traceback" not in err, err
    return process.returncode, json.loads(out), err


def run_sync(command: list[str]) -> tuple[int, dict[str, Any]]:
    code, answer, _ = finished(subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                                text=True))
    return code, answer


def by_name(answer: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f"{f['folder']}/{f['name']}": f for f in answer["files"]}


def assert_rest_synced(tmp_path: Path, answer: dict[str, Any], but: str = BIG) -> None:
    for key, data in FILES.items():
        if key != but:
            assert by_name(answer)[key]["action"] == "fetched", answer["message"]
            assert (tmp_path / "models" / key).read_bytes() == data


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.05)


def parts_done(tmp_path: Path) -> int:
    state = tmp_path / "models" / f"{BIG}.part.json"
    try:
        return len(json.loads(state.read_text()).get("done", []))
    except (OSError, ValueError):
        return 0


# --- objects that change while they are copied ---------------------------------------------------------


S3_CHANGES: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "replaced-same-size": (lambda b: b["client"].put_object(Bucket=b["name"], Key=f"{PREFIX}/{BIG}",
                                                            Body=model_bytes(len(FILES[BIG]), 70)),
                           "changed while it was being copied"),
    "replaced-shorter": (lambda b: b["client"].put_object(Bucket=b["name"], Key=f"{PREFIX}/{BIG}",
                                                          Body=model_bytes(2 * 1024 * 1024, 71)),
                         "changed while it was being copied"),
    "deleted": (lambda b: b["client"].delete_object(Bucket=b["name"], Key=f"{PREFIX}/{BIG}"),
                "removed from the source while it was being copied"),
}


@pytest.mark.parametrize("strip_if_match", [False, True], ids=["s3", "store-ignoring-if-match"])
@pytest.mark.parametrize("change", sorted(S3_CHANGES))
def test_an_s3_object_changed_mid_copy_fails_alone_by_name(bucket: dict[str, Any], tmp_path: Path, change: str,
                                                           strip_if_match: bool) -> None:
    act, words = S3_CHANGES[change]
    with S3Proxy(bucket["endpoint"]) as proxy:
        proxy.server.strip_if_match = strip_if_match  # then only the answer's ETag and Content-Range tell
        # four parts stream at once, slowly: the change lands while other parts of the file are still
        # being written (their descriptor must stay open until they end)
        proxy.server.delay_per_chunk = 0.005
        proxy.server.hooks.add(f"/{bucket['name']}/{PREFIX}/{BIG}", 1536 * 1024, lambda: act(bucket))
        code, answer = run_sync(sync_command(bucket["source"], tmp_path, "--endpoint-url", proxy.endpoint,
                                             "--concurrency", "4"))
        assert proxy.server.hooks.fired, "the object was not changed mid-copy"
    assert code == 1 and answer["exit_code"] == 1
    problem = by_name(answer)[BIG]["problem"]
    assert by_name(answer)[BIG]["action"] == "failed" and words in problem and f"{PREFIX}/{BIG}" in problem
    assert BIG in answer["message"]
    assert_rest_synced(tmp_path, answer)
    # the parts of the old version are gone: the next run starts the new one over
    assert not (tmp_path / "models" / f"{BIG}.part").exists()
    assert not (tmp_path / "models" / f"{BIG}.part.json").exists()


def replace_file(path: Path, data: bytes) -> None:
    fresh = path.with_suffix(".new")
    fresh.write_bytes(data)
    os.replace(fresh, path)


HTTPS_CHANGES: dict[str, tuple[Callable[[Path], None], str, str]] = {
    # name: (change, how the server treats If-Range, words)
    "replaced-same-size": (lambda p: replace_file(p, model_bytes(len(FILES[BIG]), 80)), "honoured",
                           "answered the whole object to a Range request"),
    "replaced-412": (lambda p: replace_file(p, model_bytes(len(FILES[BIG]), 83)), "412",
                     "changed while it was being copied"),
    # the answer in flight is cut short (the server closes), the retry sees the new length
    "truncated-in-place-if-range-ignored": (lambda p: os.truncate(p, 2 * 1024 * 1024), "ignored",
                                            "changed while it was being copied"),
    "replaced-shorter-if-range-ignored": (lambda p: replace_file(p, model_bytes(3 * 1024 * 1024, 81)), "ignored",
                                          "changed while it was being copied"),
    "replaced-much-shorter-if-range-ignored": (lambda p: replace_file(p, model_bytes(100_000, 82)), "ignored",
                                               "HTTP 416"),
    "deleted": (lambda p: p.unlink(), "honoured", "removed from the source while it was being copied"),
}


@pytest.mark.parametrize("change", sorted(HTTPS_CHANGES))
def test_an_http_object_changed_mid_copy_fails_alone_by_name(served: dict[str, Any], tmp_path: Path,
                                                             change: str) -> None:
    act, if_range, words = HTTPS_CHANGES[change]
    server = served["server"]
    server.server.ignore_if_range = if_range == "ignored"
    server.server.changed_412 = if_range == "412"
    server.server.hooks.add(f"/{BIG}", 1536 * 1024, lambda: act(served["root"] / BIG))
    code, answer = run_sync(sync_command(server.url, tmp_path, agent=True))
    assert server.server.hooks.fired
    assert code == 1 and answer["exit_code"] == 1
    item = by_name(answer)[BIG]
    assert item["action"] == "failed" and words in item["problem"] and BIG in item["problem"]
    assert_rest_synced(tmp_path, answer)


# --- SIGINT and SIGTERM ------------------------------------------------------------------------------------


@pytest.mark.parametrize("agent", [False, True], ids=["cli", "agent"])
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_stops_the_sync_keeps_the_parts_and_the_next_run_resumes(
    bucket: dict[str, Any], tmp_path: Path, agent: bool, signum: int
) -> None:
    with S3Proxy(bucket["endpoint"]) as proxy:
        proxy.server.delay_per_chunk = 0.02  # about 3 MB/s a stream: slow enough to stop mid-file
        process = subprocess.Popen(sync_command(bucket["source"], tmp_path, "--endpoint-url", proxy.endpoint,
                                                agent=agent),
                                   cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wait_for(lambda: parts_done(tmp_path) >= 2, "two parts of the big file")
        process.send_signal(signum)
        # within seconds: the workers stop between chunks and the requests in flight are cut
        code, answer, _ = finished(process, timeout=15)
        held = parts_done(tmp_path)
        proxy.server.delay_per_chunk = 0.0

        assert code == 128 + signum and answer["exit_code"] == code
        name = signal.Signals(signum).name
        assert answer["message"].startswith(f"stopped by {name}:") and "the next sync resumes them" in answer["message"]
        big = by_name(answer)[BIG]
        assert big["action"] == "interrupted" and f"{BIG}.part" in big["problem"]
        assert 2 <= held < 9 and (tmp_path / "models" / f"{BIG}.part").exists()
        assert not (tmp_path / "models" / BIG).exists()

        resumed = run(SyncOptions.parse(source=bucket["source"], manifest=manifest(tmp_path),
                                        to=str(tmp_path / "models"), endpoint_url=proxy.endpoint, part_size="1MiB",
                                        region="us-east-1"))
    assert resumed.exit_code == 0, resumed.message
    big_again = next(f for f in resumed.files if f.relpath == BIG)
    assert big_again.action == "resumed" and big_again.bytes_resumed >= held * 1024 * 1024
    for key, data in FILES.items():
        assert (tmp_path / "models" / key).read_bytes() == data


@pytest.mark.parametrize("kind", ["s3", "http"])
def test_a_signal_stops_a_sync_whose_reads_are_stuck(bucket: dict[str, Any], served: dict[str, Any],
                                                     tmp_path: Path, kind: str) -> None:
    """Every stream stalls for 30 s between chunks (the read timeout is 60 s): the stop must cut them."""
    with S3Proxy(bucket["endpoint"]) as proxy:
        slow = proxy.server if kind == "s3" else served["server"].server
        slow.delay_per_chunk = 30.0
        source = bucket["source"] if kind == "s3" else served["server"].url
        extra = ("--endpoint-url", proxy.endpoint) if kind == "s3" else ()
        started = time.monotonic()
        process = subprocess.Popen(sync_command(source, tmp_path, *extra), cwd=REPO, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
        wait_for(lambda: sum(slow.sent.values()) > 0, "the first bytes")
        process.send_signal(signal.SIGTERM)
        code, answer, _ = finished(process, timeout=20)
        assert time.monotonic() - started < 30, "the stop waited for a stalled read"
    assert code == 143 and answer["exit_code"] == 143 and answer["message"].startswith("stopped by SIGTERM")


# --- two syncs on one directory -------------------------------------------------------------------------


def test_a_second_sync_waits_for_the_first_or_says_who_holds_the_directory(bucket: dict[str, Any],
                                                                           tmp_path: Path) -> None:
    lock = tmp_path / "models" / ".gpuhost-models-sync.lock"
    with S3Proxy(bucket["endpoint"]) as proxy:
        proxy.server.delay_per_chunk = 0.2  # about 300 kB/s a stream: the first sync takes a while
        first = subprocess.Popen(sync_command(bucket["source"], tmp_path, "--endpoint-url", proxy.endpoint),
                                 cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wait_for(lambda: lock.exists() and lock.read_text().startswith(f"pid {first.pid} "), "the first sync's lock")

        # a short wait runs out: exit 3, naming the holder
        code, answer = run_sync(sync_command(bucket["source"], tmp_path, "--endpoint-url", proxy.endpoint,
                                             "--lock-wait", "1s", agent=True))
        assert code == 3 and answer["exit_code"] == 3
        assert f"another models sync holds it (pid {first.pid} since " in answer["error"]
        assert str(tmp_path / "models") in answer["error"] and "--lock-wait 1 s" in answer["error"]

        # a waiting sync stops on a signal too
        waiting = subprocess.Popen(sync_command(bucket["source"], tmp_path, "--endpoint-url", proxy.endpoint,
                                                agent=True), cwd=REPO, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
        wait_for(lambda: holds_open(waiting.pid, lock), "the second sync to wait on the lock")
        waiting.send_signal(signal.SIGTERM)
        code, answer, _ = finished(waiting, timeout=15)
        assert code == 143 and {f["action"] for f in answer["files"]} == {"interrupted"}

        # one that may wait long enough finds the first one's work done
        patient = subprocess.Popen(sync_command(bucket["source"], tmp_path, "--endpoint-url", proxy.endpoint,
                                                agent=True), cwd=REPO, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
        wait_for(lambda: holds_open(patient.pid, lock), "the third sync to wait on the lock")
        proxy.server.delay_per_chunk = 0.0
        first_code, first_answer, _ = finished(first)
        code, answer, _ = finished(patient)
    assert first_code == 0, first_answer["message"]
    assert code == 0 and {f["action"] for f in answer["files"]} == {"skipped"}
    assert answer["totals"]["bytes_fetched"] == 0


def holds_open(pid: int, path: Path) -> bool:
    """Whether process `pid` has `path` open (a sync waiting for the lock holds it open)."""
    try:
        descriptors = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in descriptors:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") == str(path):
                return True
        except OSError:
            continue
    return False


@pytest.mark.parametrize("value", ["abc", "-1s", "nan", "inf", "25h", " 5m", "5m\n", "", "1e309s"])
def test_lock_wait_is_validated_before_anything_happens(tmp_path: Path, value: str,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    code = agent_main(["models-sync", "s3://models/x", "--manifest", manifest(tmp_path), "--to",
                       str(tmp_path / "models"), "--lock-wait", value])
    answer = json.loads(capsys.readouterr().out)
    assert code == 2 and answer["exit_code"] == 2 and "--lock-wait" in answer["error"]
    assert not (tmp_path / "models").exists()


# --- a source that is wrong as a whole --------------------------------------------------------------------


def agent_sync(source: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], *extra: str,
               files: dict[str, bytes] = FILES) -> tuple[int, dict[str, Any]]:
    code = agent_main(["models-sync", source, "--manifest", manifest(tmp_path, files), "--to",
                       str(tmp_path / "models"), "--region", "us-east-1", "--attempts", "2", "--timeout", "10s",
                       *extra])
    return code, json.loads(capsys.readouterr().out)


def test_a_bucket_that_does_not_exist_is_exit_3_naming_it(moto: str, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    code, answer = agent_sync("s3://no-such-bucket-here/comfyui", tmp_path, capsys, "--endpoint-url", moto)
    assert code == 3 and answer["exit_code"] == 3
    assert answer["error"].startswith("s3://no-such-bucket-here: no such bucket") and "NoSuchBucket" in answer["error"]


def test_an_empty_prefix_is_exit_3_naming_it(bucket: dict[str, Any], tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    code, answer = agent_sync(f"s3://{bucket['name']}/wrong-prefix", tmp_path, capsys, "--endpoint-url",
                              bucket["endpoint"])
    assert code == 3 and f"s3://{bucket['name']}/wrong-prefix/: the bucket holds nothing under this prefix" in \
        answer["error"]


def test_one_missing_key_in_a_bucket_that_exists_is_that_files_failure(bucket: dict[str, Any], tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    bucket["client"].delete_object(Bucket=bucket["name"], Key=f"{PREFIX}/vae/small.safetensors")
    code, answer = agent_sync(bucket["source"], tmp_path, capsys, "--endpoint-url", bucket["endpoint"])
    assert code == 1 and "not in the source" in by_name(answer)["vae/small.safetensors"]["problem"]
    assert_rest_synced(tmp_path, answer, but="vae/small.safetensors")


def test_an_endpoint_that_is_not_s3_is_exit_3(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    with RangeServer(tmp_path / "empty") as plain:  # a web server: 404 for everything, no S3 error document
        code, answer = agent_sync("s3://models/comfyui", tmp_path, capsys, "--endpoint-url", plain.url)
    assert code == 3 and "answers 404 for the bucket itself" in answer["error"] and plain.url in answer["error"]


ACCESS_DENIED = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code>'
                 b"<Message>Access Denied</Message><RequestId>0</RequestId></Error>")
REDIRECT = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>PermanentRedirect</Code><Message>The bucket '
            b"you are attempting to access must be addressed using the specified endpoint.</Message>"
            b"<Endpoint>models.s3.eu-west-1.amazonaws.com</Endpoint><Bucket>models</Bucket></Error>")


@pytest.mark.parametrize(("status", "body", "headers", "code", "words"), [
    (403, ACCESS_DENIED, {"Content-Type": "application/xml"}, 3, "access refused"),
    (403, b"", {}, 3, "access refused"),  # a HEAD's 403 has no body
    (301, REDIRECT, {"Content-Type": "application/xml", "x-amz-bucket-region": "eu-west-1"}, 2,
     "the bucket is in another region"),
], ids=["denied", "denied-no-body", "wrong-region"])
def test_a_bucket_refused_as_a_whole_is_one_error(moto: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                  status: int, body: bytes, headers: dict[str, str], code: int,
                                                  words: str) -> None:
    with S3Proxy(moto) as proxy:
        proxy.server.canned = (status, body, headers)
        exit_code, answer = agent_sync("s3://models/comfyui", tmp_path, capsys, "--endpoint-url", proxy.endpoint)
    assert exit_code == code and answer["exit_code"] == code and words in answer["error"], answer


def test_an_http_base_url_that_answers_404_for_everything_is_exit_3(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    with RangeServer(tmp_path / "empty") as server:
        code, answer = agent_sync(f"{server.url}/wrong", tmp_path, capsys)
        assert code == 3 and answer["error"].startswith(f"{server.url}/wrong: none of the 3 files is there")
        # one file of one: that file's failure, as before
        code, answer = agent_sync(f"{server.url}/wrong", tmp_path, capsys, files={BIG: FILES[BIG]})
    assert code == 1 and "not in the source (HTTP 404)" in by_name(answer)[BIG]["problem"]
