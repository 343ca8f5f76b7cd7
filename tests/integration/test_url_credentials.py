"""Credentials inside URLs never show: every command and option that takes a URL, given one with a user
and password, a password alone, a token as the user, percent-encoded characters or query-string tokens,
on the way that works (real servers on 127.0.0.1: a ComfyUI stand-in, a Range server, moto's S3 and
EC2) and on the ways that fail (nothing listening, a bad scheme, a bad port, a refused address).
Neither stdout nor stderr, as text or as JSON, holds any part of a credential."""

from __future__ import annotations

import http.server
import json
import os
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gpuhost.agent import main as agent_main
from gpuhost.cli import app
from tests.support.aws import Ec2Server, make_volume
from tests.support.paths import FIXTURES, REPO, SHARED
from tests.support.s3 import BUCKET, RangeServer, model_bytes, s3_client, s3_server

pytestmark = pytest.mark.docker
TAG = secrets.token_hex(3)
MARK = f"Cr{TAG}"  # every credential below holds it; none of stdout or stderr may
# (user information, query string) as a user may write them
VARIANTS = {
    "user-password": (f"comfy:pw{MARK}@", f"X-Amz-Signature=sig{MARK}&token=tok{MARK}"),
    "password-only": (f":pw{MARK}@", ""),
    "token-as-user": (f"hf_{MARK}@", f"sig={MARK}"),
    "encoded": (f"us%40er:p%40ss%2Fw%3Ard%20{MARK}@", ""),
}
UNREACHABLE = "127.0.0.1:9"
MODEL = model_bytes(70_000, 7)


def with_credentials(base: str, variant: str, path: str = "", query: bool = True) -> str:
    """`base` (scheme://host:port) with the variant's credentials, then `path` and its query string."""
    userinfo, params = VARIANTS[variant]
    scheme, _, host = base.partition("://")
    url = f"{scheme}://{userinfo}{host}{path}"
    return f"{url}?{params}" if params and query else url


def assert_no_credentials(*texts: str) -> None:
    for text in texts:
        assert MARK not in text, text
        assert "pw" + MARK not in text


class _ComfyUIStandIn(http.server.BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        return

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/system_stats":
            body = b'{"system": {"comfyui_version": "0.3.64"}, "devices": []}'
        elif path == "/object_info":
            body = (FIXTURES / "comfyui" / "object_info.json").read_bytes()
        elif path.startswith("/models/"):
            body = json.dumps(["model.safetensors"]).encode()
        else:
            self.send_response(404)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def comfyui() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _ComfyUIStandIn)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def gui_container() -> Iterator[str]:
    """A container whose log says ComfyUI listens: wait-ready then probes --url."""
    import docker

    client = docker.from_env()
    name = f"gpuhost-secrets-gui-{TAG}"
    client.containers.run(
        "local/debian-systemd:bookworm", name=name, network_mode="none", detach=True,
        entrypoint=["/bin/sh", "-c", "printf 'To see the GUI go to: http://0.0.0.0:8188\\n'; exec sleep 600"],
    )
    try:
        deadline = time.monotonic() + 20
        while b"GUI" not in client.containers.get(name).logs() and time.monotonic() < deadline:
            time.sleep(0.2)
        yield name
    finally:
        client.containers.get(name).remove(force=True)


@pytest.fixture(scope="module")
def models_root(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    root = tmp_path_factory.mktemp("models-source")
    (root / "checkpoints").mkdir()
    (root / "checkpoints" / "model.safetensors").write_bytes(MODEL)
    manifest = root.parent / f"{root.name}.manifest.json"
    manifest.write_text(json.dumps({"models": [{"path": "checkpoints/model.safetensors", "size": len(MODEL)}]}))
    return root, str(manifest)


@pytest.fixture(scope="module")
def s3_endpoint(models_root: tuple[Path, str]) -> Iterator[str]:
    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE")}
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
    os.environ.pop("AWS_PROFILE", None)
    try:
        with s3_server() as endpoint:
            client = s3_client(endpoint)
            client.create_bucket(Bucket=BUCKET)
            client.put_object(Bucket=BUCKET, Key="comfyui/checkpoints/model.safetensors", Body=MODEL)
            yield endpoint
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def cli(*args: str) -> tuple[int, str]:
    """The CLI in this process: (exit code, stdout and stderr); under --json, stdout is strict JSON."""
    result = CliRunner().invoke(app, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    if "--json" in args:
        json.loads(result.stdout)
    return result.exit_code, result.stdout + result.stderr


def both(*args: str) -> list[tuple[int, str]]:
    """The command as text and as --json."""
    return [cli(*args), cli(*args, "--json")]


def agent(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = agent_main(list(args))
    out = capsys.readouterr()
    json.loads(out.out)
    return code, out.out + out.err


@pytest.mark.parametrize("variant", VARIANTS)
def test_check_comfyui_url(variant: str, comfyui: str) -> None:
    workflow = str(SHARED / "fixtures/comfyui/prompt-missing-model.request.json")
    for code, output in both("check", "--workflow", workflow, "--comfyui-url", with_credentials(comfyui, variant)):
        assert code == 1 and "ckpt_name" in output, output  # validated against the stand-in
        assert_no_credentials(output)
    for url, expected in ((with_credentials(f"http://{UNREACHABLE}", variant), 3),
                          (with_credentials("ftp://127.0.0.1:21", variant), 2),
                          (with_credentials("http://127.0.0.1:99999", variant), 2)):
        for code, output in both("check", "--workflow", workflow, "--comfyui-url", url):
            assert code == expected, output
            assert_no_credentials(output)


@pytest.mark.parametrize("variant", VARIANTS)
def test_wait_ready_url(variant: str, comfyui: str, gui_container: str, capsys: pytest.CaptureFixture[str]) -> None:
    url = with_credentials(comfyui, variant, "/system_stats")
    for code, output in both("wait-ready", gui_container, "--url", url, "--timeout", "20s"):
        assert code == 0 and ("READY" in output or '"verdict": "ready"' in output), output
        assert_no_credentials(output)
    code, output = agent(capsys, "wait-ready", gui_container, "--url", url, "--timeout", "20s")
    assert code == 0
    assert_no_credentials(output)
    refused = with_credentials(f"http://{UNREACHABLE}", variant, "/system_stats")
    for code, output in both("wait-ready", gui_container, "--url", refused, "--timeout", "2s"):
        assert code == 1 and "connection refused" in output, output
        assert_no_credentials(output)
    for bad in (with_credentials("ftp://127.0.0.1:21", variant, "/x"), with_credentials("http://h:0", variant)):
        for code, output in both("wait-ready", gui_container, "--url", bad):
            assert code == 2, output
            assert_no_credentials(output)
        code, output = agent(capsys, "wait-ready", gui_container, "--url", bad)
        assert code == 2
        assert_no_credentials(output)
    # a URL typed without --url is an extra argument: typer's own error repeats it
    for code, output in both("wait-ready", gui_container, url):
        assert code == 2, output
        assert_no_credentials(output)


@pytest.mark.parametrize("variant", VARIANTS)
def test_models_sync_and_verify_urls(variant: str, models_root: tuple[Path, str], comfyui: str, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    root, manifest = models_root
    with RangeServer(root) as server:
        source = with_credentials(server.url, variant, query=False)
        record = tmp_path / "record.json"
        code, output = cli("models", "sync", source, "--manifest", manifest, "--to", str(tmp_path / "a"),
                           "--record", str(record), "--json")
        assert code == 0 and json.loads(output)["totals"]["failed"] == 0, output
        assert_no_credentials(output, record.read_text())
        code, output = cli("models", "sync", source, "--manifest", manifest, "--to", str(tmp_path / "b"))
        assert code == 0, output
        assert_no_credentials(output)
    directory = str(tmp_path / "a")
    for code, output in both("models", "verify", directory, "--manifest", manifest,
                             "--url", with_credentials(comfyui, variant, query=False)):
        assert code == 0, output
        assert_no_credentials(output)
    for code, output in both("models", "verify", directory, "--manifest", manifest,
                             "--url", with_credentials(f"http://{UNREACHABLE}", variant), "--timeout", "2s"):
        assert code == 3, output
        assert_no_credentials(output)
    for source, expected in ((with_credentials(f"http://{UNREACHABLE}", variant, "/m"), (1, 3)),
                             (with_credentials("ftp://127.0.0.1:21", variant, "/m"), (2,)),
                             (with_credentials("s3://bucket", variant, "/m"), (2,))):
        for code, output in both("models", "sync", source, "--manifest", manifest, "--to", str(tmp_path / "c"),
                                 "--attempts", "1", "--timeout", "2s"):
            assert code in expected, output
            assert_no_credentials(output)
        code, output = agent(capsys, "models-sync", source, "--manifest", manifest, "--to", str(tmp_path / "c"),
                             "--attempts", "1", "--timeout", "2s")
        assert code in expected
        assert_no_credentials(output)


@pytest.mark.parametrize("variant", VARIANTS)
def test_models_sync_endpoint_url(variant: str, models_root: tuple[Path, str], s3_endpoint: str, tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    _, manifest = models_root
    source = f"s3://{BUCKET}/comfyui"
    endpoint = with_credentials(s3_endpoint, variant, query=False)
    code, output = cli("models", "sync", source, "--manifest", manifest, "--to", str(tmp_path / "a"),
                       "--endpoint-url", endpoint, "--region", "us-east-1", "--json")
    assert code == 0, output
    assert_no_credentials(output)
    for code, output in both("models", "sync", source, "--manifest", manifest, "--to", str(tmp_path / "b"),
                             "--endpoint-url", with_credentials(f"http://{UNREACHABLE}", variant, query=False),
                             "--region", "us-east-1", "--attempts", "1", "--timeout", "2s"):
        assert code == 3 and "cannot reach S3" in output, output
        assert_no_credentials(output)
    code, output = agent(capsys, "models-sync", source, "--manifest", manifest, "--to", str(tmp_path / "b"),
                         "--endpoint-url", with_credentials(f"http://{UNREACHABLE}", variant), "--region",
                         "us-east-1", "--attempts", "1", "--timeout", "2s")
    assert code == 3
    assert_no_credentials(output)
    for code, output in both("models", "sync", source, "--manifest", manifest, "--to", str(tmp_path / "b"),
                             "--endpoint-url", with_credentials("ftp://127.0.0.1:21", variant)):
        assert code == 2, output
        assert_no_credentials(output)


@pytest.mark.parametrize("variant", VARIANTS)
def test_tune_ebs_endpoint_url(variant: str, aws_env: dict[str, str], ec2_server: Ec2Server,
                               capsys: pytest.CaptureFixture[str]) -> None:
    volume_id = make_volume(ec2_server.client(), size_gib=100)
    base = ("tune-ebs", "--volume-id", volume_id, "--region", "us-east-1", "--preset", "pull", "--dry-run")
    for code, output in both(*base, "--endpoint-url", with_credentials(ec2_server.endpoint, variant, query=False)):
        assert code == 0 and volume_id in output, output
        assert_no_credentials(output)
    for url, expected in ((with_credentials(f"http://{UNREACHABLE}", variant), 3),
                          (with_credentials("ftp://127.0.0.1:21", variant), 2),
                          (with_credentials("http://127.0.0.1:99999", variant), 2)):
        for code, output in both(*base, "--endpoint-url", url):
            assert code == expected, output
            assert_no_credentials(output)
        code, output = agent(capsys, "tune-ebs", *base[1:], "--endpoint-url", url)
        assert code == expected
        assert_no_credentials(output)


def _docker_commands(name: str) -> list[tuple[str, ...]]:
    return [("check",), ("wait-ready", name), ("layers", "local/debian-systemd:bookworm"),
            ("storage", "probe", "--path", "/tmp", "--size-mib", "16")]


@pytest.mark.parametrize("variant", VARIANTS)
def test_docker_host(variant: str, gui_container: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Docker takes no credentials in its address: refused (exit 2) before anything is read, without
    repeating them; from $DOCKER_HOST too."""
    address = with_credentials("tcp://127.0.0.1:2375", variant, query=False)
    for command in _docker_commands(gui_container):
        for code, output in both(*command, "--docker-host", address):
            assert code == 2, (command, output)
            assert_no_credentials(output)
    for args in (["facts", "--docker-host", address], ["wait-ready", gui_container, "--docker-host", address]):
        code, output = agent(capsys, *args)
        assert code == 2
        assert_no_credentials(output)
    env = {**os.environ, "DOCKER_HOST": address}
    for command in (("check", "--json"), ("wait-ready", gui_container, "--json")):
        result = subprocess.run([sys.executable, "-m", "gpuhost", *command], cwd=REPO, capture_output=True,
                                text=True, timeout=120, env=env, check=False)
        assert_no_credentials(result.stdout, result.stderr)
        json.loads(result.stdout)


def test_fleet_host_spec() -> None:
    """SSH logs in with keys: a password in --host is refused (exit 2) and not repeated."""
    with_password = [userinfo for userinfo, _ in VARIANTS.values() if ":" in userinfo]
    assert len(with_password) == 3
    for userinfo in with_password:
        for spec in (f"{userinfo}127.0.0.1:9", f"{userinfo}bad host", f"{userinfo}127.0.0.1:99999"):
            for code, output in both("check", "--host", spec):
                assert code == 2, output
                assert_no_credentials(output)


def test_every_url_option_is_covered() -> None:
    """The options above are all of them: a new URL option needs its case here."""
    import re

    options: set[str] = set()
    for path in (REPO / "gpuhost").rglob("*.py"):
        text = path.read_text()
        options.update(re.findall(r'"(--[a-z-]*(?:url|host))"', text))
    assert options == {"--comfyui-url", "--url", "--endpoint-url", "--docker-host", "--host"}, options

