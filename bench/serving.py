#!/usr/bin/env python3
"""Prompts per minute of one small workflow with one and with two ComfyUI instances behind the front
door, and what the door adds to a request's latency. Prints one JSON line.

Two real ComfyUI 0.3.64 servers on the CPU (gpuhost-comfyui:0.3.64, tests/support/comfyui_real.py, on
127.0.0.1) behind the door the comfyui_door role renders (run for real, its files in a temporary
directory; nginx from Debian started on them, tests/support/serving.py).

- throughput: --prompts prompts of one workflow (EmptyImage WxH -> SaveImage, each with its own colour so
  none is served from ComfyUI's cache), all queued at once through the door, timed from the first POST to
  the last one's completion (polled on /history through the door): once all on one instance (its path
  /i/0/), once over both (the default route, each request to the next instance);
- latency: --requests sequential GET /system_stats, each on a kept-alive connection, straight to an
  instance and through the door (TLS, the bearer token); the median and p99 of each, and their difference.

  python bench/serving.py [--prompts 40] [--size 8] [--requests 200]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.support.ansible import run_playbook  # noqa: E402
from tests.support.comfyui_real import IMAGE, ensure_image, free_port, real_comfyui  # noqa: E402
from tests.support.serving import DoorClient, nginx  # noqa: E402

TOKEN = "bench-" + uuid.uuid4().hex
PLAYBOOK = """---
- name: The front door
  hosts: localhost
  connection: local
  gather_facts: false
  roles:
    - role: comfyui_door
"""


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * len(ordered)) - 1))]


def door_files(work: Path, ports: list[int], door_port: int) -> None:
    for folder in ("conf.d", "log", "systemd"):
        (work / folder).mkdir(parents=True, exist_ok=True)
    variables = {
        "comfyui_door_instances": [{"name": f"bench-{n}", "number": n, "host_port": port, "address": "127.0.0.1"}
                                   for n, port in enumerate(ports)],
        "comfyui_door_port": door_port, "comfyui_door_token": TOKEN,
        "comfyui_door_config_dir": str(work / "conf.d"), "comfyui_door_secrets_dir": str(work / "secrets"),
        "comfyui_door_state_dir": str(work / "state"), "comfyui_door_log_dir": str(work / "log"),
        "comfyui_door_unit_dir": str(work / "systemd"), "comfyui_door_manage_service": False,
        "comfyui_door_disable_default_site": False,
        "gpuhost_agent_path": str(work / "agent" / "gpuhost-agent.pyz"),
        "gpuhost_agent_bin": str(work / "agent" / "gpuhost-agent"), "gpuhost_agent_python": sys.executable,
    }
    run = run_playbook(work, PLAYBOOK, "-i", "localhost,", "-e", json.dumps(variables))
    if run.returncode != 0:
        raise SystemExit(f"the comfyui_door role failed:\n{run.output[-3000:]}")


def throughput(door: DoorClient, prefix: str, count: int, size: int, path: str) -> dict[str, Any]:
    """Queue `count` prompts at once through `path` ("" default route, "/i/0" one instance); the rate."""
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    tag = uuid.uuid4().hex[:6]

    def queue(number: int) -> tuple[str, str]:
        prompt = {"1": {"class_type": "EmptyImage", "inputs": {"width": size, "height": size, "batch_size": 1,
                                                                "color": (hash(tag) + number) % 0xFFFFFF}},
                  "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0],
                                                              "filename_prefix": f"{prefix}-{tag}"}}}
        answer = door.request("POST", f"{path}/prompt", json.dumps({"prompt": prompt}).encode(), headers)
        if answer.status != 200:
            raise SystemExit(f"POST {path}/prompt: {answer.status} {answer.body[:300]!r}")
        return answer.headers["x-gpuhost-instance"], json.loads(answer.body)["prompt_id"]

    start = time.monotonic()
    with ThreadPoolExecutor(max_workers=min(count, 32)) as pool:
        queued = list(pool.map(queue, range(count)))
    pending = dict((prompt, instance) for instance, prompt in queued)
    deadline = start + 600
    while pending and time.monotonic() < deadline:
        for prompt, instance in list(pending.items()):
            answer = door.request("GET", f"/i/{instance}/history/{prompt}", headers=headers)
            entry = json.loads(answer.body).get(prompt) if answer.status == 200 else None
            if entry and entry.get("status", {}).get("completed"):
                del pending[prompt]
        time.sleep(0.05)
    elapsed = time.monotonic() - start
    if pending:
        raise SystemExit(f"{len(pending)} of {count} prompts did not complete in 600 s")
    spread = {instance: sum(1 for i, _ in queued if i == instance) for instance in sorted({i for i, _ in queued})}
    return {"seconds": round(elapsed, 2), "prompts_per_minute": round(count / elapsed * 60, 1), "spread": spread}


def latency(port: int, door: DoorClient, requests: int) -> dict[str, Any]:
    direct_connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    door_connection = door.connect()
    headers = {"Authorization": f"Bearer {TOKEN}"}

    def timed(connection: http.client.HTTPConnection, path: str, extra: dict[str, str]) -> float:
        begin = time.perf_counter()
        connection.request("GET", path, headers=extra)
        response = connection.getresponse()
        response.read()
        if response.status != 200:
            raise SystemExit(f"GET {path}: {response.status}")
        return (time.perf_counter() - begin) * 1000

    for _ in range(10):  # warm both: connections open, TLS done, workers awake
        timed(direct_connection, "/system_stats", {})
        timed(door_connection, "/i/0/system_stats", headers)
    direct, through = [], []
    for _ in range(requests):  # interleaved: both see the same load on the machine
        direct.append(timed(direct_connection, "/system_stats", {}))
        through.append(timed(door_connection, "/i/0/system_stats", headers))
    direct_connection.close()
    door_connection.close()
    added = [b - a for a, b in zip(direct, through)]
    return {
        "requests": requests,
        "direct_ms": {"median": round(statistics.median(direct), 2), "p99": round(percentile(direct, 0.99), 2)},
        "door_ms": {"median": round(statistics.median(through), 2), "p99": round(percentile(through, 0.99), 2)},
        "added_ms": {"median": round(statistics.median(added), 2), "p99": round(percentile(added, 0.99), 2)},
    }


def bounded(low: int, high: int) -> Any:
    def parse(text: str) -> int:
        if not text.isdigit() or not low <= int(text) <= high:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number from {low} to {high}")
        return int(text)
    return parse


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=bounded(2, 500), default=40)
    parser.add_argument("--size", type=bounded(8, 2048), default=8, help="the EmptyImage's width and height")
    parser.add_argument("--requests", type=bounded(10, 10000), default=200)
    options = parser.parse_args()
    ensure_image()
    work = Path(tempfile.mkdtemp(prefix="gpuhost-bench-serving-", dir="/var/tmp"))
    work.chmod(0o755)
    try:
        with ExitStack() as stack:
            servers = [stack.enter_context(real_comfyui(work / f"instance-{n}")) for n in range(2)]
            for server in servers:
                server.wait_ready()
            door_port = free_port()
            door_files(work / "door", [s.port for s in servers], door_port)
            stack.enter_context(nginx(work / "ngx", work / "door" / "conf.d", door_port))
            door = DoorClient(door_port, work / "door" / "secrets" / "comfyui-door-selfsigned.crt", timeout=60)
            # warm-up: each instance loads its nodes once before anything is timed
            throughput(door, "warm", 4, options.size, "")
            one = throughput(door, "one", options.prompts, options.size, "/i/0")
            two = throughput(door, "two", options.prompts, options.size, "")
            measured = latency(servers[0].port, door, options.requests)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps({
        "bench": "serving",
        "workflow": f"EmptyImage {options.size}x{options.size} -> SaveImage, CPU",
        "image": IMAGE,
        "cpus": os.cpu_count(),
        "prompts": options.prompts,
        "one_instance": one,
        "two_instances": two,
        "speedup": round(two["prompts_per_minute"] / one["prompts_per_minute"], 2),
        "latency": measured,
    }, separators=(",", ":"), allow_nan=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
