#!/usr/bin/env python3
"""Wall time of `gpuhost check` against gathering the same facts by hand, in one run, and the CPU time
of the metrics timer's run (roles/gpuhost_metrics).

The manual path is what a person types: nvidia-smi -q, docker info, docker inspect of every
container, sysctl for the BPF JIT settings, nvidia-ctk --version and a look at the CDI
directories. Each path runs `--runs` times as a fresh process; one JSON line is printed.
Target: gpuhost check under 1 s, and faster than the manual path.

The timer's run is what gpuhost-metrics.service starts every minute: the agent zipapp on the host's
python3, `check --format prometheus --textfile-directory DIR`. Its CPU time (user + system, the
process and its children, from getrusage) per run, divided by the 60 s between two runs, is its
share of one core. Target: under 1 %.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def timed(command: list[str]) -> tuple[float, int]:
    start = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, check=False, cwd=REPO)
    return time.perf_counter() - start, proc.returncode


def manual_commands() -> list[list[str]]:
    commands: list[list[str]] = [
        ["nvidia-smi", "-q"],
        ["docker", "info"],
        ["sysctl", "net.core.bpf_jit_harden", "net.core.bpf_jit_enable"],
        ["nvidia-ctk", "--version"],
        ["ls", "-l", "/etc/cdi", "/var/run/cdi"],
        ["stat", "-c", "%n %U:%G %a", "/dev/nvidiactl"],
    ]
    ids = subprocess.run(["docker", "ps", "-aq"], capture_output=True, text=True, check=False).stdout.split()
    commands.append(["docker", "ps", "-aq"])
    commands.extend(["docker", "inspect", container] for container in ids)
    return commands


def manual_once(commands: list[list[str]]) -> tuple[float, dict[str, str]]:
    total = 0.0
    outcome: dict[str, str] = {}
    for command in commands:
        if shutil.which(command[0]) is None:
            outcome[command[0]] = "not installed"
            continue
        seconds, rc = timed(command)
        total += seconds
        outcome.setdefault(command[0], f"rc={rc}")
    return total, outcome


TIMER_PERIOD_S = 60.0
HOST_PYTHON = "/usr/bin/python3"


def cpu_of(command: list[str]) -> tuple[float, int]:
    """CPU seconds (user + system) a fresh process and its children spent, and its exit code."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(command, capture_output=True, check=False, cwd=REPO)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), proc.returncode


def timer_runs(runs: int) -> dict[str, object]:
    sys.path.insert(0, str(REPO))
    from gpuhost.ship import build_zipapp

    with tempfile.TemporaryDirectory(prefix="gpuhost-bench-timer-") as work:
        agent, _ = build_zipapp(Path(work) / "gpuhost-agent.pyz")
        textfile = Path(work) / "textfile"
        textfile.mkdir()
        python = HOST_PYTHON if Path(HOST_PYTHON).exists() else sys.executable
        command = [python, str(agent), "check", "--format", "prometheus", "--textfile-directory", str(textfile)]
        cpu_of(command)  # warm the page cache
        measured = [cpu_of(command) for _ in range(runs)]
    seconds = [cpu for cpu, _ in measured]
    median = statistics.median(seconds)
    return {
        "timer_cpu_s_per_run": {"median": round(median, 3), "max": round(max(seconds), 3)},
        "timer_exit_codes": sorted({rc for _, rc in measured}),
        "timer_core_share_pct_at_1_per_min": round(100 * median / TIMER_PERIOD_S, 3),
        "timer_under_1pct_of_a_core": median / TIMER_PERIOD_S < 0.01,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    check_cmd = [sys.executable, "-m", "gpuhost", "check", "--json"]
    timed(check_cmd)  # warm the page cache once, for both paths alike
    check_times = [timed(check_cmd)[0] for _ in range(args.runs)]

    sys.path.insert(0, str(REPO))
    from gpuhost.check import run_check

    in_process = []
    for _ in range(args.runs):
        start = time.perf_counter()
        run_check()
        in_process.append(time.perf_counter() - start)

    commands = manual_commands()
    manual_once(commands)
    manual = []
    outcome: dict[str, str] = {}
    for _ in range(args.runs):
        seconds, outcome = manual_once(commands)
        manual.append(seconds)

    median_check = statistics.median(check_times)
    median_manual = statistics.median(manual)
    print(
        json.dumps(
            {
                "bench": "check_latency",
                "runs": args.runs,
                "gpuhost_check_s": {"median": round(median_check, 3), "max": round(max(check_times), 3)},
                "gpuhost_check_in_process_s": {"median": round(statistics.median(in_process), 3)},
                "manual_cli_s": {"median": round(median_manual, 3), "max": round(max(manual), 3)},
                "manual_commands": len(commands),
                "manual_outcome": outcome,
                "speedup": round(median_manual / median_check, 2) if median_check else None,
                "target_under_1s": median_check < 1.0,
                "faster_than_manual": median_check < median_manual,
                **timer_runs(args.runs),
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
