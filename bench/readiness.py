#!/usr/bin/env python3
"""How long after ComfyUI writes its ready or failure line gpuhost gives the verdict, against a
naive poller that curls /system_stats every 5 s, on every real capture, in one run.

Each capture runs in the replay image (tests/replay: the recorded lines at their recorded times,
the recorded HTTP bodies, the recorded exit; the port-in-use capture with a first instance holding
the port). All captures run at once; for each, `gpuhost wait-ready` (the library call the CLI and
the agent make) and the naive poller start when the container starts. The delay is measured from
the decisive line's own log timestamp (Docker's, taken when the line was written): the GUI line
for a ready start, the failing line for a failed one, the exit for an exit. The naive poller
stops at its first HTTP 200 ("ready") or after --naive-timeout without one ("not ready").
Target: every gpuhost verdict right and within 0.5 s. Prints one JSON line.

  GPUHOST_SHARED=../shared python bench/readiness.py
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from gpuhost.comfyui.wait import WaitOptions, wait_ready  # noqa: E402
from gpuhost.engine import EngineClient  # noqa: E402
from tests.support.comfyui_replay import (  # noqa: E402
    CAPTURES,
    NAME_PREFIX,
    build_image,
    ensure_network,
    free_port,
    remove,
    remove_network,
    run_capture,
    run_holder,
)

TARGET_S = 0.5


def naive_poll(url: str, interval: float, timeout: float) -> tuple[str, float]:
    """`until curl -sf URL; do sleep 5; done` with a time limit: (verdict, when)."""
    start = time.time()
    curl = shutil.which("curl")
    while time.time() - start < timeout:
        if curl:
            code = subprocess.run(
                [curl, "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "2", url],
                capture_output=True, text=True, check=False,
            ).stdout.strip()
        else:
            try:
                with urllib.request.urlopen(url, timeout=2) as answer:
                    code = str(answer.status)
            except OSError:
                code = "000"
        if code == "200":
            return "ready", time.time()
        time.sleep(max(0.0, interval - (time.time() - start) % interval))
    return "not ready", time.time()


def run_one(client: Any, capture: str, options: argparse.Namespace, out: dict[str, Any]) -> None:
    name = f"{NAME_PREFIX}bench-{capture}"
    holder = f"{name}-holder"
    remove(client, name)
    remove(client, holder)
    try:
        if capture == "failure-port-in-use":
            port = free_port()
            run_holder(client, holder, port)
            container = run_capture(client, capture, name, host_port=port, host_network=True)
            url = f"http://127.0.0.1:{port}/system_stats"
        else:
            container = run_capture(client, capture, name)
            container.reload()
            host_port = container.attrs["NetworkSettings"]["Ports"]["8188/tcp"][0]["HostPort"]
            url = f"http://127.0.0.1:{host_port}/system_stats"
        naive: dict[str, Any] = {}
        poller = threading.Thread(
            target=lambda: naive.update(zip(("verdict", "at"), naive_poll(url, options.naive_interval,
                                                                          options.naive_timeout)))
        )
        poller.start()
        result = wait_ready(EngineClient(), name, WaitOptions(timeout=120, stall_timeout=60))
        poller.join()
        verdict = result.verdict
        line_at = verdict.gui_line_at if verdict.phase.value == "ready" else verdict.decided_at
        expected = CAPTURES[capture]
        naive_right = (naive["verdict"] == "ready") == (expected.phase == "ready")
        out[capture] = {
            "expected": f"{expected.phase}/{expected.reason}",
            "gpuhost_verdict": f"{verdict.phase.value}/{verdict.reason}",
            "gpuhost_right": (verdict.phase.value, verdict.reason) == (expected.phase, expected.reason),
            "gpuhost_delay_s": round(result.reached_at - line_at, 3) if line_at else None,
            "naive_verdict": naive["verdict"],
            "naive_right": naive_right,
            "naive_delay_s": round(naive["at"] - line_at, 3) if line_at else None,
        }
    finally:
        remove(client, name)
        remove(client, holder)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--naive-interval", type=float, default=5.0)
    parser.add_argument("--naive-timeout", type=float, default=60.0)
    options = parser.parse_args()
    import docker

    client = docker.from_env()
    build_image()
    ensure_network(client)  # once, before the threads that use it
    results: dict[str, Any] = {}
    threads = [threading.Thread(target=run_one, args=(client, c, options, results)) for c in sorted(CAPTURES)]
    started = time.time()
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        remove_network(client)
    delays = [r["gpuhost_delay_s"] for r in results.values() if r["gpuhost_delay_s"] is not None]
    naive_ready = [r["naive_delay_s"] for c, r in results.items() if CAPTURES[c].phase == "ready"]
    summary = {
        "bench": "readiness",
        "target_s": TARGET_S,
        "captures": results,
        "gpuhost_max_delay_s": max(delays) if delays else None,
        "gpuhost_all_right": all(r["gpuhost_right"] for r in results.values()) and len(results) == len(CAPTURES),
        "naive_mean_ready_delay_s": round(sum(naive_ready) / len(naive_ready), 3) if naive_ready else None,
        "naive_wrong": sorted(c for c, r in results.items() if not r["naive_right"]),
        "naive_interval_s": options.naive_interval,
        "naive_timeout_s": options.naive_timeout,
        "wall_s": round(time.time() - started, 1),
    }
    summary["pass"] = bool(summary["gpuhost_all_right"] and delays and max(delays) < TARGET_S)
    print(json.dumps(summary, separators=(",", ":")))
    return 0 if summary["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
