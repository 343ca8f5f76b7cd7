"""ComfyUI containers on this host and their readiness verdict (gpuhost.comfyui.readiness), for `check`.

Which containers: those roles/comfyui labels (`gpuhost.comfyui`) and those whose image name says
comfyui. Each gets a snapshot verdict: its log since it started (up to the GUI line), its
state and one GET /system_stats through its published port. Nothing waits. A ready one is also asked
for its queue (GET /prompt: the prompts running and waiting), within the same short deadline.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Optional

from gpuhost.comfyui.container import looks_like_comfyui
from gpuhost.comfyui.http import base_url, get_json
from gpuhost.comfyui.readiness import Phase, Verdict
from gpuhost.comfyui.snapshot import snapshot_verdict
from gpuhost.engine import EngineClient, EngineError, EnginePermissionDenied, EngineUnavailable
from gpuhost.facts.docker import DockerFacts
from gpuhost.facts.source import SourceStatus
from gpuhost.model import SourceError, UsageError

# GET /prompt answers {"exec_info": {"queue_remaining": N}}: a few dozen bytes
MAX_QUEUE_ANSWER_BYTES = 64 * 1024


@dataclass
class ComfyUIContainerFacts:
    id: str
    name: str
    image: str
    state: str
    restart_count: int = 0
    started_at: Optional[float] = None
    verdict: Verdict = field(default_factory=Verdict)
    # prompts running or waiting (GET /prompt), when the server is ready and answered; None otherwise
    queue_remaining: Optional[int] = None


@dataclass
class ComfyUIFacts:
    containers: list[ComfyUIContainerFacts] = field(default_factory=list)
    error: str = ""


def collect_comfyui(client: Optional[EngineClient], docker: DockerFacts, probe_timeout: float = 1.0) -> ComfyUIFacts:
    facts = ComfyUIFacts()
    if client is None or docker.status is not SourceStatus.OK:
        return facts
    now = time.time()
    for summary in docker.containers:
        if not looks_like_comfyui(summary.image, summary.labels):
            continue
        try:
            inspect = client.get(f"/containers/{summary.id}/json")
            container, verdict = snapshot_verdict(client, inspect, probe_timeout=probe_timeout, now=now)
        except (EngineError, EngineUnavailable, EnginePermissionDenied, OSError, ValueError) as exc:
            facts.error = "; ".join(filter(None, [facts.error, f"{summary.name}: {exc}"]))
            continue
        facts.containers.append(
            ComfyUIContainerFacts(
                id=container.id[:12],
                name=container.name,
                image=container.image,
                state=container.status,
                restart_count=container.restart_count,
                started_at=container.started_at,
                verdict=verdict,
                queue_remaining=queue_remaining(verdict, probe_timeout),
            )
        )
    return facts


def queue_remaining(verdict: Verdict, timeout: float = 1.0) -> Optional[int]:
    """The server's queue length (running + pending prompts) when it is ready and answers; None when it is
    not ready, cannot be reached from here, or answers something else."""
    if verdict.phase is not Phase.READY or not verdict.probe_url:
        return None
    try:
        answer = get_json(base_url(verdict.probe_url) + "/prompt", timeout=timeout, max_bytes=MAX_QUEUE_ANSWER_BYTES)
    except (OSError, UsageError):  # BadAnswer is an OSError: refused, reset, too slow, too large, not JSON
        return None
    return parse_queue_remaining(answer)


def parse_queue_remaining(answer: object) -> Optional[int]:
    info = answer.get("exec_info") if isinstance(answer, dict) else None
    value = info.get("queue_remaining") if isinstance(info, dict) else None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return value


def ready_comfyui_url(facts: ComfyUIFacts) -> str:
    """The probe URL of the first ready ComfyUI container: where `check --workflow` validates."""
    for container in facts.containers:
        if container.verdict.phase is Phase.READY and container.verdict.probe_url:
            return str(container.verdict.probe_url)
    raise SourceError(
        "ComfyUI",
        "no ready ComfyUI container found on this host to validate the workflow against",
        "Start one (roles/comfyui, `gpuhost wait-ready NAME`) or pass --comfyui-url http://127.0.0.1:8188.",
    )
