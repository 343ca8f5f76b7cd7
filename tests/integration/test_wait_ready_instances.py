"""`gpuhost wait-ready` and `gpuhost-agent wait-ready` on several containers at once (a host's instances):
each judged in its own thread, one verdict each, exit 0 only when all are ready. Replay containers on
this machine's dockerd, in the host network on 127.0.0.1 (the ready start and the missing-module failure,
played four times faster)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.comfyui_replay import NAME_PREFIX, build_image, remove, run_capture
from tests.support.paths import REPO

pytestmark = [pytest.mark.docker]


@pytest.fixture(scope="module")
def started(shared_dir: Path) -> Iterator[dict[str, str]]:
    import docker

    build_image(shared_dir)
    client = docker.from_env()
    names = {"ready-a": f"{NAME_PREFIX}instances-a", "ready-b": f"{NAME_PREFIX}instances-b",
             "failed": f"{NAME_PREFIX}instances-failed"}
    for name in names.values():
        remove(client, name)
    try:
        run_capture(client, "startup-cpu", names["ready-a"], host_network=True, extra_args=("--speed", "4"))
        run_capture(client, "startup-cpu", names["ready-b"], host_network=True, extra_args=("--speed", "4"))
        run_capture(client, "failure-missing-module", names["failed"], host_network=True,
                    extra_args=("--speed", "4"))
        yield names
    finally:
        for name in names.values():
            remove(client, name)


def gpuhost(*args: str, agent: bool = False) -> tuple[int, Any, float]:
    command = ([sys.executable, "-c", "import sys, gpuhost.agent; sys.exit(gpuhost.agent.main(sys.argv[1:]))"]
               if agent else [sys.executable, "-m", "gpuhost"])
    start = time.monotonic()
    done = subprocess.run([*command, *args], cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
    return done.returncode, json.loads(done.stdout), time.monotonic() - start


@pytest.mark.parametrize("agent", [False, True], ids=["cli", "agent"])
def test_every_instance_ready_is_exit_0_with_a_verdict_each(started: dict[str, str], agent: bool) -> None:
    extra = [] if agent else ["--json"]
    code, answer, _ = gpuhost("wait-ready", started["ready-a"], started["ready-b"], "--timeout", "2m", *extra,
                              agent=agent)
    assert code == 0, answer
    assert answer["schema"] == "gpuhost.wait-ready.instances/v1" and (answer["ready"], answer["total"]) == (2, 2)
    assert [(c["container"], c["verdict"]) for c in answer["containers"]] == [
        (started["ready-a"], "ready"), (started["ready-b"], "ready")]


def test_one_failed_instance_is_exit_1_naming_it(started: dict[str, str]) -> None:
    code, answer, _ = gpuhost("wait-ready", started["ready-a"], started["failed"], "--timeout", "2m", "--json")
    assert code == 1 and answer["exit_code"] == 1 and answer["ready"] == 1
    failed = answer["containers"][1]
    assert (failed["container"], failed["verdict"], failed["reason"]) == (started["failed"], "failed", "missing-module")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["ready-a", "gpuhost-absent-instance"], "no container named 'gpuhost-absent-instance'"),
        (["ready-a", "../info"], "is not a container name or id"),
        (["ready-a", "ready-a"], "a container is named twice"),
        (["ready-a", "ready-b", "--url", "http://127.0.0.1:1/system_stats"], "--url probes one server"),
    ],
    ids=["missing", "bad-name", "twice", "url"],
)
def test_bad_usage_is_exit_2_before_any_wait(started: dict[str, str], args: list[str], message: str) -> None:
    code, answer, took = gpuhost("wait-ready", *[started.get(arg, arg) for arg in args], "--timeout", "2m", "--json")
    assert code == 2 and message in answer["error"], answer
    assert took < 30
