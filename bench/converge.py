#!/usr/bin/env python3
"""Wall time of the default scenario's first converge (bare instances) and second (nothing to do).

Creates the molecule default scenario's instances (and prepares them), converges site.yml twice and
destroys them. The second converge is what every later run of site.yml costs; its changed count
must be 0. Prints one JSON line. Run from the repository root, as root, with GPUHOST_SHARED set
when ../shared is elsewhere:
    GPUHOST_SHARED=/work/shared .venv/bin/python bench/converge.py
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ANSI = re.compile(r"\x1b\[[0-9;]*m")
RECAP = re.compile(r"(gpuhost-roles-[\w-]+)\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)")


def molecule(action: str, *args: str) -> tuple[float, str, int]:
    binary = Path(sys.executable).with_name("molecule")
    start = time.perf_counter()
    proc = subprocess.run(
        [str(binary), action, "-s", "default", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "ANSIBLE_NOCOLOR": "1", "PY_COLORS": "0"},
    )
    return time.perf_counter() - start, ANSI.sub("", proc.stdout + proc.stderr), proc.returncode


def recap(output: str) -> dict[str, dict[str, int]]:
    hosts: dict[str, dict[str, int]] = {}
    for name, ok, changed, unreachable, failed in RECAP.findall(output):
        hosts[name] = {"ok": int(ok), "changed": int(changed), "unreachable": int(unreachable), "failed": int(failed)}
    return hosts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep", action="store_true", help="leave the instances running afterwards")
    args = parser.parse_args()

    figures: dict[str, object] = {"bench": "converge", "scenario": "default"}
    molecule("destroy")
    try:
        # molecule create also runs the scenario's prepare playbook
        seconds, output, rc = molecule("create")
        figures["create_and_prepare_s"] = round(seconds, 1)
        if rc != 0:
            raise RuntimeError(f"molecule create failed:\n{output[-3000:]}")
        for run in ("first", "second"):
            seconds, output, rc = molecule("converge")
            hosts = recap(output)
            figures[f"{run}_converge_s"] = round(seconds, 1)
            figures[f"{run}_changed"] = sum(h["changed"] for h in hosts.values())
            figures[f"{run}_per_host"] = hosts
            if rc != 0 or not hosts:
                raise RuntimeError(f"{run} converge failed:\n{output[-3000:]}")
        figures["idempotent"] = figures["second_changed"] == 0
        figures["second_vs_first"] = round(float(figures["second_converge_s"]) / float(figures["first_converge_s"]), 2)  # type: ignore[arg-type]
    except RuntimeError as exc:
        figures["error"] = str(exc)
        print(json.dumps(figures))
        return 1
    finally:
        if not args.keep:
            molecule("destroy")
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
