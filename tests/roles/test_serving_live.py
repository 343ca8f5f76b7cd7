"""Two real ComfyUI instances behind the front door, on this machine: the comfyui role (the real
ComfyUI 0.3.64 image, `comfyui_cpu_mode`, `comfyui_instances: 2`) and the comfyui_door role run for real
in one play; nginx from Debian on the configuration the role rendered, the health service's command as
the role's unit has it (this machine has no systemd: tests/support/serving.py), headless Chromium from
Debian. Everything listens on 127.0.0.1; the instances' ports are published there.

The play runs once for the module (a few minutes on two busy cores); the tests after it read, then
break and mend, in this order: the browser, the API clients, the bad input, the health endpoint (which
stops and kills instances last)."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gpuhost.facts.docker import DockerFacts
from gpuhost.facts.nginx import collect_nginx
from gpuhost.hostfacts import HostFacts
from gpuhost.rules import RuleOptions
from gpuhost.rules import door as door_rules
from tests.support.ansible import PlaybookRun, local_play, run_playbook
from tests.support.comfyui_real import IMAGE, ensure_image, free_port
from tests.support.paths import REPO
from tests.support.serving import Answer, DoorClient, chromium, nginx, running, unit_exec_start

pytestmark = [pytest.mark.docker, pytest.mark.slow]

NAME = "gpuhost-serving-live"
HOST_USER = "gpuhost-serving"
TOKEN = "serving-live-" + uuid.uuid4().hex
USER, PASSWORD = "alice", "wonder land: " + uuid.uuid4().hex[:8]
HEADER_TIMEOUT_S = 5
MAX_UPLOAD = "1m"
ARTEFACTS = Path(os.environ.get("GPUHOST_TEST_ARTEFACTS", REPO / ".cache" / "artefacts")) / "serving"
PLAYBOOK = local_play("Serve ComfyUI on every GPU behind one door", "comfyui", "comfyui_door")


@dataclass
class Door:
    run: PlaybookRun
    variables: dict[str, Any]
    work: Path
    port: int
    ports: list[int]
    certificate: Path
    state: Path
    access_log: Path
    data: Path
    client: DoorClient

    def get(self, path: str, **headers: str) -> Answer:
        return self.client.request("GET", path, headers=headers)

    def api(self, method: str, path: str, body: Any = None, **headers: str) -> Answer:
        data = json.dumps(body).encode() if body is not None else None
        return self.client.request(method, path, body=data, headers={
            "Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json", **headers})

    def health(self) -> tuple[int, dict[str, Any]]:
        answer = self.get("/gpuhost/health")
        return answer.status, json.loads(answer.body)


def two_free_ports() -> int:
    for _ in range(50):
        base = free_port()
        if base < 65535:
            with socket.socket() as probe:
                try:
                    probe.bind(("127.0.0.1", base + 1))
                except OSError:
                    continue
            return base
    raise RuntimeError("no two free ports in a row")


def wait_for(check: Any, timeout: float, interval: float = 1.0, what: str = "") -> float:
    """Seconds until check() is true; fails after `timeout`."""
    start = time.monotonic()
    while True:
        if check():
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            pytest.fail(f"not within {timeout:.0f} s: {what}")
        time.sleep(interval)


@pytest.fixture(scope="module")
def door() -> Iterator[Door]:
    ensure_image()
    # nginx's workers (www-data) read the users' hashes and the health document: no 0700 directory above them
    work = Path(tempfile.mkdtemp(prefix="gpuhost-serving-", dir="/var/tmp"))
    work.chmod(0o755)
    base, port = two_free_ports(), free_port()
    variables = {
        "comfyui_image": IMAGE,
        "comfyui_image_source": "pull",  # present already: pull: not_present asks no registry
        "comfyui_container_name": NAME,
        "comfyui_host_user": HOST_USER,
        "comfyui_require_gpu": False,
        "comfyui_cpu_mode": True,
        "comfyui_instances": 2,
        "comfyui_host_port": base,
        "comfyui_data_dir": str(work / "data"),
        "comfyui_wait_timeout": "5m",
        "comfyui_wait_stall_timeout": "3m",
        "gpuhost_agent_path": str(work / "agent" / "gpuhost-agent.pyz"),
        "gpuhost_agent_bin": str(work / "agent" / "gpuhost-agent"),
        "gpuhost_agent_python": sys.executable,
        "comfyui_door_port": port,
        "comfyui_door_token": TOKEN,
        "comfyui_door_users": [{"name": USER, "password": PASSWORD}],
        "comfyui_door_max_upload": MAX_UPLOAD,
        "comfyui_door_header_timeout": f"{HEADER_TIMEOUT_S}s",
        "comfyui_door_health_interval": "5s",
        "comfyui_door_config_dir": str(work / "nginx" / "conf.d"),
        "comfyui_door_secrets_dir": str(work / "nginx" / "gpuhost"),
        "comfyui_door_state_dir": str(work / "state"),
        "comfyui_door_log_dir": str(work / "log"),
        "comfyui_door_unit_dir": str(work / "systemd"),
        "comfyui_door_manage_service": False,
        "comfyui_door_disable_default_site": False,
    }
    for folder in ("nginx/conf.d", "log", "systemd"):
        (work / folder).mkdir(parents=True)
    names = [f"{NAME}-0", f"{NAME}-1"]
    try:
        run = run_playbook(work, PLAYBOOK, "-i", "localhost,", "-e", json.dumps(variables))
        assert run.returncode == 0, run.output[-6000:]
        certificate = work / "nginx" / "gpuhost" / "comfyui-door-selfsigned.crt"
        health = unit_exec_start(work / "systemd" / "gpuhost-door-health.service")
        with nginx(work / "ngx", work / "nginx" / "conf.d", port), running(health, work / "health.log"):
            yield Door(run, variables, work, port, [base, base + 1], certificate, work / "state",
                       work / "log" / "gpuhost-comfyui-door.access.log", work / "data", DoorClient(port, certificate))
    finally:
        for name in names:
            subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False, timeout=120)
        subprocess.run(["userdel", HOST_USER], capture_output=True, check=False)
        shutil.rmtree(work, ignore_errors=True)


def test_the_play_runs_two_instances_and_the_door(door: Door) -> None:
    flat = door.run.flat
    assert "2 ComfyUI instances:" in flat
    assert f"ComfyUI in {NAME}-0 is ready after" in flat and f"ComfyUI in {NAME}-1 is ready after" in flat
    assert f"The ComfyUI front door: https://127.0.0.1:{door.port}/ (2 instances" in flat
    for secret in (TOKEN, PASSWORD):
        assert secret not in door.run.output
    secrets = door.work / "nginx" / "gpuhost"
    modes = {p.name: (p.stat().st_mode & 0o777, p.group()) for p in secrets.iterdir()}
    assert modes == {"comfyui-door-auth.conf": (0o600, "root"), "comfyui-door-selfsigned.key": (0o600, "root"),
                     "comfyui-door-selfsigned.crt": (0o644, "root"), "comfyui-door.htpasswd": (0o640, "www-data")}
    htpasswd = (secrets / "comfyui-door.htpasswd").read_text()
    assert re.fullmatch(rf"{USER}:\$6\$[./0-9A-Za-z]{{16}}\$[./0-9A-Za-z]{{86}}\n", htpasswd)
    # both instances ready, as the door's health says
    wait_for(lambda: door.health()[0] == 200 and door.health()[1]["ready"] == 2, 60,
             what="the health endpoint says both instances are ready")


def test_a_second_run_changes_nothing(door: Door) -> None:
    again = run_playbook(door.work, PLAYBOOK, "-i", "localhost,", "-e", json.dumps(door.variables))
    assert again.returncode == 0, again.output[-5000:]
    assert again.recap()["changed"] == 0, again.output[-5000:]
    # the self-signed certificate is kept across runs
    assert (door.work / "nginx" / "gpuhost" / "comfyui-door-selfsigned.crt").read_bytes() == (
        door.certificate.read_bytes())


def test_gpuhost_reads_the_door_as_loopback_only(door: Door) -> None:
    """The rendered configuration read back by gpuhost's nginx reader: a front door to both instances."""
    root = door.work / "root"
    (root / "etc" / "nginx").mkdir(parents=True, exist_ok=True)
    main = f"events {{}}\nhttp {{ include {door.work}/nginx/conf.d/*.conf; }}\n"
    (root / "etc" / "nginx" / "nginx.conf").write_text(main)
    shutil.copytree(door.work / "nginx", root / str(door.work / "nginx").lstrip("/"), dirs_exist_ok=True)
    facts = HostFacts(nginx=collect_nginx(str(root)), docker=DockerFacts(containers=_instances_as_docker_sees(door)))
    (server,) = facts.nginx.servers
    assert [(x.address, x.ssl) for x in server.listens] == [(f"127.0.0.1:{door.port}", True)]
    assert {p for location in server.locations for p in location.proxies} == {
        f"127.0.0.1:{door.ports[0]}", f"127.0.0.1:{door.ports[1]}"}
    assert [loc.path for loc in server.locations if not loc.auth] == ["= /gpuhost/health", "@gpuhost_door_health_down"]
    (finding,) = door_rules.exposure(facts, RuleOptions())
    assert (finding.id, finding.severity.value) == ("door.tls", "ok") and "loopback only" in finding.message


def _instances_as_docker_sees(door: Door) -> list[Any]:
    from gpuhost.engine import EngineClient
    from gpuhost.facts.docker import collect_docker

    facts = collect_docker(EngineClient(timeout=10.0))
    return [c for c in facts.containers if c.name.startswith(NAME)]


# --- the browser ---------------------------------------------------------------------------------------


def test_a_browser_with_credentials_renders_the_app_through_the_door(door: Door, tmp_path: Path) -> None:
    url = f"https://{USER}:{PASSWORD.replace(' ', '%20').replace(':', '%3A')}@127.0.0.1:{door.port}/"
    raw = door.get("/", Authorization=f"Bearer {TOKEN}")
    assert raw.status == 200 and b"graph-canvas" not in raw.body  # the page as served: the app is not drawn yet
    seen = door.access_log.stat().st_size
    dom = chromium(url, door.certificate, tmp_path / "profile", dump_dom=True)
    assert dom.returncode == 0, dom.stderr[-2000:]
    for drawn in ('id="graph-canvas"', 'id="comfyui-body-top"', ">Run</span>", "Unsaved Workflow"):
        assert drawn in dom.stdout, f"{drawn} not in the rendered page ({len(dom.stdout)} bytes)"
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    (ARTEFACTS / "ui.html").write_text(dom.stdout)
    session_stayed_on_one_instance(door, seen)
    seen = door.access_log.stat().st_size
    shot = chromium(url, door.certificate, tmp_path / "profile-shot", screenshot=ARTEFACTS / "ui.png")
    assert shot.returncode == 0 and (ARTEFACTS / "ui.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", shot.stderr[-2000:]
    assert (ARTEFACTS / "ui.png").stat().st_size > 20000  # a drawn graph, not a blank page
    session_stayed_on_one_instance(door, seen)


def session_stayed_on_one_instance(door: Door, since: int) -> None:
    """One browser session (a profile of its own) got its UI, API calls and websocket from one instance."""
    lines = door.access_log.read_bytes()[since:].decode().splitlines()
    served = [line.rsplit("instance=", 1)[1] for line in lines if " 200 " in line or " 101 " in line]
    assert len(served) > 20 and len(set(served)) == 1, sorted(set(served))
    assert any('"GET /ws" 101' in line for line in lines), lines[-20:]
    assert any('"GET /api/object_info" 200' in line or '"GET /object_info" 200' in line for line in lines)


def test_a_browser_without_credentials_is_refused(door: Door, tmp_path: Path) -> None:
    seen = door.access_log.stat().st_size
    dom = chromium(f"https://127.0.0.1:{door.port}/", door.certificate, tmp_path / "profile", dump_dom=True,
                   budget_ms=5000)
    assert "graph-canvas" not in dom.stdout and "Unsaved Workflow" not in dom.stdout
    lines = door.access_log.read_bytes()[seen:].decode().splitlines()
    assert [line for line in lines if '"GET /"' in line and " 401 " in line], lines


@pytest.mark.parametrize("path", ["/", "/prompt", "/queue", "/history", "/view?filename=x.png&type=output",
                                  "/system_stats", "/object_info", "/ws?clientId=x", "/upload/image", "/i/0/",
                                  "/i/1/system_stats", "/api/userdata?dir=workflows", "/gpuhost/health/",
                                  "/gpuhost/healthx", "/gpuhost/health-ready", "/favicon.ico"])
def test_every_path_but_the_health_endpoint_answers_401_without_credentials(door: Door, path: str) -> None:
    answer = door.get(path)
    assert answer.status == 401, (path, answer.status, answer.body[:200])
    assert answer.headers.get("www-authenticate") == 'Basic realm="ComfyUI"'
    assert "x-gpuhost-instance" not in answer.headers or path.startswith("/i/")
    assert "set-cookie" not in answer.headers


# --- API clients -----------------------------------------------------------------------------------------


def workflow(prefix: str, color: int) -> dict[str, Any]:
    return {"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": color}},
            "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": prefix}}}


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return int(width), int(height)


def test_twenty_prompts_through_one_address_all_complete_on_both_instances(door: Door) -> None:
    prefix = f"door-{uuid.uuid4().hex[:8]}"

    def queue(number: int) -> tuple[str, str]:
        answer = door.api("POST", "/prompt", {"prompt": workflow(prefix, number), "client_id": "api"})
        assert answer.status == 200, answer.body[:500]
        assert "set-cookie" in answer.headers  # offered, never needed: this client keeps no cookie
        return answer.headers["x-gpuhost-instance"], json.loads(answer.body)["prompt_id"]

    with ThreadPoolExecutor(max_workers=20) as pool:
        queued = list(pool.map(queue, range(20)))
    instances = [instance for instance, _ in queued]
    assert len({prompt for _, prompt in queued}) == 20
    assert sorted(set(instances)) == ["0", "1"], instances

    outputs: dict[str, tuple[str, dict[str, Any]]] = {}

    def done() -> bool:
        for instance, prompt in queued:
            if prompt in outputs:
                continue
            answer = door.api("GET", f"/i/{instance}/history/{prompt}")
            entry = json.loads(answer.body).get(prompt) if answer.status == 200 else None
            if entry and entry.get("status", {}).get("completed"):
                (image,) = entry["outputs"]["2"]["images"]
                outputs[prompt] = (instance, image)
        return len(outputs) == 20

    wait_for(done, 300, what=f"all 20 prompts complete ({len(outputs)} did)")
    fetched = set()
    for instance, image in outputs.values():
        view = door.api("GET", f"/i/{instance}/view?filename={image['filename']}&type=output&subfolder=")
        assert view.status == 200 and png_size(view.body) == (8, 8)
        fetched.add((instance, image["filename"]))
    assert len(fetched) == 20  # none lost, none fetched twice
    on_disk = {(str(number), path.name) for number in (0, 1)
               for path in (door.data / "instances" / f"{NAME}-{number}" / "output").glob(f"{prefix}_*.png")}
    assert on_disk == fetched
    # ComfyUI numbers files by scanning its folder: each instance counted from 1 in its own, none overwrote
    for number in ("0", "1"):
        mine = sorted(name for instance, name in fetched if instance == number)
        assert mine == [f"{prefix}_{n:05d}_.png" for n in range(1, len(mine) + 1)]


def test_a_cookie_keeps_a_client_on_its_instance_websocket_included(door: Door) -> None:
    for instance in ("0", "1"):
        cookie = f"gpuhost_instance={instance}"
        for _ in range(4):
            answer = door.api("GET", "/queue", Cookie=cookie)
            assert answer.status == 200 and answer.headers["x-gpuhost-instance"] == instance
        status, headers = websocket_handshake(door, f"/ws?clientId=sticky{instance}", cookie)
        assert status == 101 and headers["x-gpuhost-instance"] == instance
    # a cookie naming no instance counts as none
    assert door.api("GET", "/queue", Cookie="gpuhost_instance=7").status == 200


def websocket_handshake(door: Door, path: str, cookie: str = "") -> tuple[int, dict[str, str]]:
    raw = socket.create_connection(("127.0.0.1", door.port), timeout=10)
    with door.client.context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        request = (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{door.port}\r\nUpgrade: websocket\r\n"
                   "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                   f"Authorization: Bearer {TOKEN}\r\n" + (f"Cookie: {cookie}\r\n" if cookie else "") + "\r\n")
        tls.sendall(request.encode())
        head = b""
        while b"\r\n\r\n" not in head and len(head) < 65536:
            chunk = tls.recv(4096)
            if not chunk:
                break
            head += chunk
    lines = head.split(b"\r\n\r\n", 1)[0].decode().split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers


# --- bad input ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"Authorization": "Bearer wrong-token-0123456789"}, 401),
        ({"Authorization": "Bearer "}, 401),
        ({"Authorization": "Bearer"}, 401),
        ({"Authorization": f"Bearer {TOKEN.upper()}"}, 401),
        ({"Authorization": f"Bearer {TOKEN}x"}, 401),
        ({"Authorization": f"Bearer {TOKEN[:10]} {TOKEN[10:]}"}, 401),
        ({"Authorization": f"Bearer  {TOKEN} "}, 200),  # 1*SP after the scheme, the header's own space trimmed
        ({"Authorization": f"Basic {TOKEN}"}, 401),
        ({"Authorization": "Basic YWxpY2U6d3Jvbmc="}, 401),  # alice:wrong
        ({"Authorization": f"bearer {TOKEN}"}, 200),  # the scheme is case-insensitive (RFC 7235)
        ({"Authorization": f"Bearer {TOKEN}", "X-Long": "x" * 20000}, 400),
        ({"Authorization": f"Bearer {TOKEN}", "Cookie": "c=" + "y" * 20000}, 400),
    ],
    ids=["wrong", "empty", "no-token", "case-changed", "longer", "split", "spaces", "basic-token", "wrong-password",
         "lowercase-scheme", "long-header", "long-cookie"],
)
def test_credentials_and_headers(door: Door, headers: dict[str, str], status: int) -> None:
    assert door.get("/system_stats", **headers).status == status


@pytest.mark.parametrize(
    "path",
    ["/../etc/passwd", "/%2e%2e/etc/passwd", "/%2E%2e/etc/passwd", "/.%2e/etc/passwd", "/i/0/../1/system_stats",
     "/i/0/%2e%2e/%2e%2e/etc/passwd", "/view/..%2f..%2fetc%2fpasswd", "/api/userdata/..%2F..%2Fetc%2Fpasswd",
     "/x/..%5c..%5cetc/passwd", "/i/1/..?x=1"],
)
def test_dot_dot_paths_are_refused(door: Door, path: str) -> None:
    answer = door.client.request("GET", path, headers={"Authorization": f"Bearer {TOKEN}"})
    assert answer.status == 400, (path, answer.status)
    assert b"root:" not in answer.body


def test_dot_dot_in_a_view_filename_reaches_no_file(door: Door) -> None:
    for query in ("filename=../../../../etc/passwd&type=output", "filename=..%2F..%2Fetc%2Fpasswd&type=input",
                  "filename=passwd&subfolder=../../../../etc&type=output"):
        for prefix in ("", "/i/0", "/i/1"):
            answer = door.api("GET", f"{prefix}/view?{query}")
            assert answer.status in (400, 403, 404) and b"root:" not in answer.body, (prefix, query, answer.status)


def test_uploads_over_the_limit_are_refused_with_413_and_under_it_pass(door: Door) -> None:
    boundary = "gpuhost" + uuid.uuid4().hex

    def upload(name: str, size: int) -> Answer:
        png = bytes.fromhex("89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489"
                            "0000000d4944415478da63f8cfc0f01f0005000201a1e8e3330000000049454e44ae426082")
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{name}\"\r\n"
                "Content-Type: image/png\r\n\r\n").encode() + png + b"\0" * size + f"\r\n--{boundary}--\r\n".encode()
        return door.client.request("POST", "/upload/image", body=body, headers={
            "Authorization": f"Bearer {TOKEN}", "Content-Type": f"multipart/form-data; boundary={boundary}"})

    assert upload("big.png", 1536 * 1024).status == 413
    small = upload(f"small-{boundary}.png", 1024)
    assert small.status == 200, small.body[:300]
    assert (door.data / "input" / json.loads(small.body)["name"]).is_file()  # the shared input folder


def test_a_client_that_never_finishes_its_headers_is_cut_off(door: Door) -> None:
    raw = socket.create_connection(("127.0.0.1", door.port), timeout=HEADER_TIMEOUT_S * 4)
    with door.client.context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        tls.sendall(f"GET /system_stats HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n".encode())
        start = time.monotonic()
        try:
            data = tls.recv(4096)
        except (ConnectionResetError, ssl.SSLError):
            data = b""
        elapsed = time.monotonic() - start
    assert not data.startswith(b"HTTP/1.1 200")
    assert HEADER_TIMEOUT_S - 1 <= elapsed <= HEADER_TIMEOUT_S + 5, elapsed


def test_the_instances_are_unaffected_by_the_bad_input(door: Door) -> None:
    for number in ("0", "1"):
        answer = door.api("GET", f"/i/{number}/system_stats")
        assert answer.status == 200 and json.loads(answer.body)["system"]["comfyui_version"] == "0.3.64"
    for name in (f"{NAME}-0", f"{NAME}-1"):
        state = json.loads(subprocess.run(["docker", "inspect", name], capture_output=True, text=True,
                                          check=True).stdout)[0]
        assert state["State"]["Status"] == "running" and state["RestartCount"] == 0
    status, body = door.health()
    assert status == 200 and body["ready"] == 2


# --- the health endpoint -----------------------------------------------------------------------------------


def comfyui_pid(name: str) -> int:
    import docker

    top = docker.from_env().containers.get(name).top(ps_args="-o pid,args")
    (pid,) = [int(row[0]) for row in top["Processes"] if "main.py" in row[-1]]
    return pid


def instance_ready(door: Door, number: int) -> bool | None:
    _, body = door.health()
    found = [i["ready"] for i in body["instances"] if i["instance"] == number]
    return found[0] if found else None


def test_a_stalled_instance_shows_within_60_s_and_both_stalled_is_503(door: Door) -> None:
    first, second = comfyui_pid(f"{NAME}-0"), comfyui_pid(f"{NAME}-1")
    os.kill(second, 19)  # SIGSTOP: the process hangs, the container still runs
    try:
        took = wait_for(lambda: instance_ready(door, 1) is False, 60, what="instance 1 not ready")
        status, body = door.health()
        assert status == 200 and body["ready"] == 1 and body["status"] == "ready", body
        print(f"stalled instance shown after {took:.1f} s")
        os.kill(first, 19)
        wait_for(lambda: door.health()[0] == 503, 60, what="503 with both stalled")
        status, body = door.health()
        assert body["status"] == "down" and [i["ready"] for i in body["instances"]] == [False, False]
        assert set(body["instances"][0]) == {"instance", "name", "path", "ready", "verdict", "reason", "gpu"}
    finally:
        os.kill(first, 18)  # SIGCONT
        os.kill(second, 18)
    wait_for(lambda: door.health()[0] == 200 and door.health()[1]["ready"] == 2, 60, what="both ready again")


def test_a_failed_instance_shows_within_60_s_and_the_door_routes_around_it(door: Door) -> None:
    subprocess.run(["docker", "stop", "-t", "5", f"{NAME}-1"], capture_output=True, check=True, timeout=60)
    try:
        wait_for(lambda: instance_ready(door, 1) is False, 60, what="instance 1 not ready once stopped")
        _, body = door.health()
        assert [(i["instance"], i["verdict"]) for i in body["instances"]][1] == (1, "failed")
        # new sessions and API requests go to the instance that serves; a session stuck to the stopped one
        # moves to it, and its cookie says so
        served = {door.api("GET", "/queue").headers["x-gpuhost-instance"] for _ in range(6)}
        assert served == {"0"}
        moved = door.api("GET", "/queue", Cookie="gpuhost_instance=1")
        assert moved.status == 200 and moved.headers["set-cookie"].startswith("gpuhost_instance=0;")
        assert door.api("GET", "/i/1/system_stats").status == 502  # its own path names it alone
    finally:
        subprocess.run(["docker", "start", f"{NAME}-1"], capture_output=True, check=True, timeout=60)
    wait_for(lambda: instance_ready(door, 1) is True, 240, interval=2.0, what="instance 1 ready again")
