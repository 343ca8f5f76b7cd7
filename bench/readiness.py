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

With --real, the real ComfyUI instead (gpuhost-comfyui:0.3.64, built by scripts/build-comfyui-image;
tests/support/comfyui_real.py starts it on 127.0.0.1, on the CPU): --starts fresh containers one after
another, each timed from Docker's own start time to the first HTTP 200 on /system_stats (a poller of
the bench's own, every --poll-interval s), to the GUI line (its log timestamp) and to gpuhost's ready
verdict; the medians, and each start's figures. Target: each verdict within 0.5 s of the first 200.

  GPUHOST_SHARED=../shared python bench/readiness.py
  GPUHOST_SHARED=../shared python bench/readiness.py --real [--starts 5]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import shutil
import statistics
import subprocess
import sys
import tempfile
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


def docker_time(stamp: str) -> float:
    """Docker's RFC 3339 time with nanoseconds (State.StartedAt) as a Unix time."""
    head, _, fraction = stamp.rstrip("Z").partition(".")
    moment = dt.datetime.strptime(head, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=dt.timezone.utc)
    return moment.timestamp() + (float(f"0.{fraction}") if fraction else 0.0)


def real_start(poll_interval: float) -> dict[str, Any]:
    """One start of the real ComfyUI: seconds from Docker's start to the first 200, the GUI line and
    gpuhost's verdict."""
    from tests.support.comfyui_real import FirstOK, real_comfyui

    with tempfile.TemporaryDirectory(prefix="gpuhost-bench-readiness-") as tmp, real_comfyui(Path(tmp)) as server:
        poller = FirstOK(f"{server.url}/system_stats", interval=poll_interval).start()
        try:
            result = wait_ready(EngineClient(), server.name, WaitOptions(timeout=300, stall_timeout=180))
            first_200 = poller.join(30)
        finally:
            poller.stop()
        server.container.reload()
        started = docker_time(server.container.attrs["State"]["StartedAt"])
        verdict = result.verdict
        if verdict.phase.value != "ready" or first_200 is None:
            raise RuntimeError(f"not ready: {verdict.phase.value}/{verdict.reason}: {verdict.message}")
        return {
            "first_200_s": round(first_200 - started, 3),
            "gui_line_s": round(verdict.gui_line_at - started, 3) if verdict.gui_line_at else None,
            "verdict_s": round(result.reached_at - started, 3),
            "verdict_after_first_200_s": round(result.reached_at - first_200, 3),
        }


def real_main(options: argparse.Namespace) -> int:
    from tests.support.comfyui_real import IMAGE, ensure_image

    ensure_image()
    started = time.time()
    runs = [real_start(options.poll_interval) for _ in range(options.starts)]

    def median(key: str) -> float | None:
        values = [run[key] for run in runs if run[key] is not None]
        return round(statistics.median(values), 3) if values else None

    summary: dict[str, Any] = {
        "bench": "readiness-real",
        "image": IMAGE,
        "starts": options.starts,
        "poll_interval_s": options.poll_interval,
        "target_s": TARGET_S,
        "median_first_200_s": median("first_200_s"),
        "median_gui_line_s": median("gui_line_s"),
        "median_verdict_s": median("verdict_s"),
        "median_verdict_after_first_200_s": median("verdict_after_first_200_s"),
        "max_abs_verdict_after_first_200_s": max(abs(run["verdict_after_first_200_s"]) for run in runs),
        "runs": runs,
        "wall_s": round(time.time() - started, 1),
    }
    summary["pass"] = summary["max_abs_verdict_after_first_200_s"] < TARGET_S
    print(json.dumps(summary, separators=(",", ":"), allow_nan=False))
    return 0 if summary["pass"] else 1


def positive(limit: float) -> Any:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not math.isfinite(value) or value <= 0 or value > limit:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number above 0 and at most {limit:g}")
        return value

    return parse


def starts_count(text: str) -> int:
    if not text.strip().isdigit() or text != text.strip() or not 1 <= int(text) <= 50:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number from 1 to 50")
    return int(text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--naive-interval", type=positive(60), default=5.0)
    parser.add_argument("--naive-timeout", type=positive(600), default=60.0)
    parser.add_argument("--real", action="store_true", help="the real ComfyUI image instead of the replays")
    parser.add_argument("--starts", type=starts_count, default=5,
                        help="--real: fresh starts, one after another (default 5; the medians count)")
    parser.add_argument("--poll-interval", type=positive(1), default=0.02,
                        help="--real: the bench's own poller of /system_stats, in seconds (default 0.02)")
    options = parser.parse_args()
    if options.real:
        return real_main(options)
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
