#!/usr/bin/env python3
"""What a hostile server costs `check --workflow` and the Engine API client, in one run.

Each case runs `gpuhost check --workflow` (or an Engine API call) in a fresh process against a
server on 127.0.0.1: a 100 MB /object_info, one that trickles a byte every 0.2 s, an SSH banner on
the Docker address. Printed as one JSON line: per case the exit code, the wall time and the peak
resident memory of the process (its VmHWM).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.support.bad_servers import SSH_BANNER, BadServer, Script, http_response  # noqa: E402

WORKFLOW = {"9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "x"}}}


# the child reports its own peak resident memory (VmHWM) on stderr as it exits
PEAK_REPORTER = (
    "import atexit, runpy, sys\n"
    "def peak():\n"
    "    for line in open('/proc/self/status'):\n"
    "        if line.startswith('VmHWM'):\n"
    "            sys.stderr.write('PEAK ' + line.split()[1] + '\\n')\n"
    "atexit.register(peak)\n"
    "sys.argv = ['gpuhost', *sys.argv[1:]]\n"
    "runpy.run_module('gpuhost', run_name='__main__')\n"
)


def run(args: list[str]) -> dict[str, float]:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", PEAK_REPORTER, *args], capture_output=True, text=True, cwd=REPO,
                          check=False)
    elapsed = time.perf_counter() - start
    peaks = [int(line.split()[1]) for line in proc.stderr.splitlines() if line.startswith("PEAK ")]
    return {"exit_code": proc.returncode, "seconds": round(elapsed, 2),
            "peak_rss_mib": round(peaks[-1] / 1024, 1) if peaks else -1.0}


def main() -> None:
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        workflow = Path(tmp) / "w.json"
        workflow.write_text(json.dumps(WORKFLOW))
        check = ["check", "--workflow", str(workflow), "--docker-host", "unix:///nonexistent/docker.sock", "--json"]
        huge = Script(prefix=b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{",
                      filler_bytes=100 * 1024 * 1024)
        with BadServer(huge) as server:
            results["object_info_100mb"] = run([*check, "--comfyui-url", server.url])
        slow = Script(prefix=http_response(b"", length=10_000), trickle=b"{" * 10_000, interval=0.2)
        with BadServer(slow, max_seconds=120) as server:
            results["object_info_trickle"] = run([*check, "--comfyui-url", server.url])
        with BadServer(Script(prefix=SSH_BANNER, answer_before_request=True), tmp) as server:
            results["layers_ssh_banner"] = run(["layers", "comfyui:0.3.64", "--docker-host", server.address, "--json"])
    print(json.dumps({"bench": "bad_answers", **results}))


if __name__ == "__main__":
    main()
