"""The front door's health: gpuhost's readiness verdict on each ComfyUI instance behind it, as the JSON
its health endpoint serves, and the `ready` marker that makes nginx answer 200 (503 without it).

Each round judges every instance at once (one thread each, the snapshot verdict `gpuhost check` gives:
the log up to the GUI line, the state, one GET /system_stats), writes health.json (a temporary file
renamed over it) and then makes or removes the marker. The endpoint needs no credentials, so the JSON
holds no log line, message or address: per instance its name, number, path and verdict.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

from gpuhost.comfyui.container import check_container_ref
from gpuhost.comfyui.readiness import Phase
from gpuhost.comfyui.snapshot import snapshot_verdict
from gpuhost.engine import (
    DOCKER_HOST_OPTION,
    EngineClient,
    EngineError,
    EnginePermissionDenied,
    EngineUnavailable,
    quote_ref,
)
from gpuhost.model import UsageError
from gpuhost.options import Command, Option, json_flag
from gpuhost.units import parse_duration

HEALTH_SCHEMA = "gpuhost.door-health/v1"
HEALTH_FILE = "health.json"
READY_MARKER = "ready"
MAX_INSTANCES = 64
# one instance's verdict may take the log's deadline (5 s) and a probe; a round never waits longer
ROUND_DEADLINE_S = 20.0
PROBE_TIMEOUT_S = 2.0
DEFAULT_EVERY = "10s"


@dataclass(frozen=True)
class InstanceRef:
    number: int
    name: str

    @classmethod
    def parse(cls, text: str) -> InstanceRef:
        """NUMBER:NAME, e.g. 0:comfyui-0."""
        number, sep, name = text.partition(":")
        if not sep or not number.isdigit() or len(number) > 3:
            raise UsageError(f"--instance {text[:80]!r} is not NUMBER:CONTAINER", "Example: --instance 0:comfyui-0")
        return cls(int(number), check_container_ref(name, "--instance"))


@dataclass(frozen=True)
class HealthOptions:
    directory: str
    instances: tuple[InstanceRef, ...]
    every: float = 10.0
    once: bool = False

    @classmethod
    def parse(
        cls, directory: str, instances: list[str], every: str = DEFAULT_EVERY, once: bool = False
    ) -> HealthOptions:
        if not instances:
            raise UsageError("no --instance given", "Example: --instance 0:comfyui-0 --instance 1:comfyui-1")
        if len(instances) > MAX_INSTANCES:
            raise UsageError(f"more than {MAX_INSTANCES} instances", "One --instance per ComfyUI container.")
        refs = tuple(InstanceRef.parse(text) for text in instances)
        if len({r.number for r in refs}) != len(refs) or len({r.name for r in refs}) != len(refs):
            raise UsageError("an instance number or container is given twice", "One --instance per container.")
        if not os.path.isabs(directory) or ".." in directory.split("/") or not os.path.isdir(directory):
            raise UsageError(f"--write {directory[:200]!r} is not an existing absolute directory without `..`",
                             "Create it first (the comfyui_door role does).")
        interval = parse_duration(every, "--every")
        if not 1 <= interval <= 3600:
            raise UsageError(f"--every {every!r} is outside 1 s to 1 h", "Example: --every 10s")
        return cls(directory, refs, interval, once)


DOOR_HEALTH = Command(
    cli="",
    agent="door-health",
    summary="judge the front door's ComfyUI instances and write its health JSON",
    options=(
        Option("--write", "Where health.json and the ready marker go.", kind="place", metavar="DIR", required=True,
               dest="directory"),
        Option("--instance", "An instance behind the door (repeat for each).", metavar="NUMBER:CONTAINER",
               repeat=True, dest="instances", example="--instance 0:comfyui-0"),
        Option("--every", "How often the instances are judged.", default=DEFAULT_EVERY, metavar="DURATION",
               example="--every 10s"),
        Option("--once", "Judge and write once, then exit (0: some instance ready).", kind="flag", default=False),
        DOCKER_HOST_OPTION,
        json_flag("the health document"),
    ),
    parsers=(HealthOptions.parse,),
)


@dataclass
class InstanceHealth:
    number: int
    name: str
    ready: bool
    verdict: str  # ready, starting, failed, stalled, missing or unknown
    reason: str
    gpu: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"instance": self.number, "name": self.name, "path": f"/i/{self.number}/", "ready": self.ready,
                "verdict": self.verdict, "reason": self.reason, "gpu": self.gpu}


def judge(client: EngineClient, ref: InstanceRef, probe_timeout: float = PROBE_TIMEOUT_S) -> InstanceHealth:
    """One instance's snapshot verdict; a container that is gone, or Docker not answering, is not ready."""
    try:
        inspect = client.get(f"/containers/{quote_ref(ref.name)}/json")
    except EngineError as exc:
        if exc.status == 404:
            return InstanceHealth(ref.number, ref.name, False, "missing", "no such container")
        return InstanceHealth(ref.number, ref.name, False, "unknown", "docker-error")
    except (EngineUnavailable, EnginePermissionDenied, OSError, ValueError):
        return InstanceHealth(ref.number, ref.name, False, "unknown", "docker-unreachable")
    labels = (inspect.get("Config") or {}).get("Labels") or {}
    gpu = str(labels.get("gpuhost.comfyui.gpu") or "") if isinstance(labels, dict) else ""
    try:
        _, verdict = snapshot_verdict(client, inspect, probe_timeout=probe_timeout)
    except (EngineError, EngineUnavailable, EnginePermissionDenied, OSError, ValueError):
        return InstanceHealth(ref.number, ref.name, False, "unknown", "log-unreadable", gpu)
    return InstanceHealth(ref.number, ref.name, verdict.phase is Phase.READY, verdict.phase.value, verdict.reason, gpu)


def judge_all(make_client: Callable[[], EngineClient], refs: tuple[InstanceRef, ...],
              deadline_s: float = ROUND_DEADLINE_S) -> list[InstanceHealth]:
    """Every instance at once, each with a client of its own; one not judged by the deadline is not ready."""
    results: dict[int, InstanceHealth] = {}

    def run(ref: InstanceRef) -> None:
        results[ref.number] = judge(make_client(), ref)

    threads = [threading.Thread(target=run, args=(ref,), daemon=True) for ref in refs]
    for thread in threads:
        thread.start()
    end = time.monotonic() + deadline_s
    for thread in threads:
        thread.join(max(0.0, end - time.monotonic()))
    return [results.get(ref.number) or InstanceHealth(ref.number, ref.name, False, "unknown", "judge-timeout")
            for ref in refs]


def health_document(instances: list[InstanceHealth], written_at: float, interval_s: float) -> dict[str, Any]:
    ready = sum(1 for i in instances if i.ready)
    return {
        "schema": HEALTH_SCHEMA,
        "status": "ready" if ready else "down",
        "ready": ready,
        "total": len(instances),
        "instances": [i.to_dict() for i in sorted(instances, key=lambda i: i.number)],
        "written_at": round(written_at, 3),
        "interval_s": interval_s,
    }


def write_health(directory: str, document: dict[str, Any]) -> None:
    """health.json replaced whole, then the marker made (some instance ready) or removed."""
    import json

    text = json.dumps(document, allow_nan=False, sort_keys=True) + "\n"
    handle, temporary = tempfile.mkstemp(prefix=".health-", dir=directory)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
        os.chmod(temporary, 0o644)
        os.replace(temporary, os.path.join(directory, HEALTH_FILE))
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    marker = os.path.join(directory, READY_MARKER)
    if document["ready"]:
        with open(marker, "a", encoding="utf-8"):
            pass
    else:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(marker)


def run_health(options: HealthOptions, make_client: Callable[[], EngineClient],
               clock: Callable[[], float] = time.time, sleep: Callable[[float], None] = time.sleep,
               rounds: Optional[int] = None) -> dict[str, Any]:
    """Judge and write every `options.every` seconds (once with options.once); the last document."""
    done = 0
    while True:
        started = time.monotonic()
        document = health_document(judge_all(make_client, options.instances), clock(), options.every)
        write_health(options.directory, document)
        done += 1
        if options.once or (rounds is not None and done >= rounds):
            return document
        sleep(max(0.0, options.every - (time.monotonic() - started)))
