"""ComfyUI containers: is each one really serving (the readiness verdict), and which nodes failed."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gpuhost.comfyui.readiness import Phase
from gpuhost.model import Finding, Severity

if TYPE_CHECKING:
    from gpuhost.comfyui.facts import ComfyUIContainerFacts
    from gpuhost.hostfacts import HostFacts
    from gpuhost.rules.options import RuleOptions


def _evidence(container: ComfyUIContainerFacts) -> dict[str, object]:
    verdict = container.verdict
    return {
        "container": container.name,
        "image": container.image,
        "state": container.state,
        **verdict.summary(),
        "restart_count": container.restart_count,
        "exit_code": verdict.exit_code,
        "tail": verdict.tail[-10:],
    }


def readiness(facts: HostFacts, options: RuleOptions) -> list[Finding]:
    findings: list[Finding] = []
    if facts.comfyui.error:
        findings.append(
            Finding(
                "comfyui.ready",
                "comfyui",
                Severity.WARN,
                f"could not judge a ComfyUI container: {facts.comfyui.error}",
                "Readiness reads the container's log through the Engine API: use a log driver `docker logs` can "
                "read (json-file, local, journald).",
                {"error": facts.comfyui.error},
            )
        )
    for container in facts.comfyui.containers:
        verdict = container.verdict
        subject = f"ComfyUI container {container.name}"
        evidence = _evidence(container)
        if verdict.phase is Phase.READY:
            restarts = f" (restarted {container.restart_count} times)" if container.restart_count else ""
            findings.append(
                Finding(
                    "comfyui.ready",
                    "comfyui",
                    Severity.WARN if container.restart_count else Severity.OK,
                    f"{subject} is serving at {verdict.probe_url}{restarts}",
                    "A restart count above 0 hides a crash: read `docker logs` of the earlier runs."
                    if container.restart_count
                    else "",
                    evidence,
                )
            )
        elif verdict.phase is Phase.STARTING:
            if verdict.gui_url:
                message = (
                    f"{subject} printed {verdict.gui_url} but {verdict.probe_url or '/system_stats'} does not answer "
                    f"200 ({verdict.last_probe or 'no probe'})"
                )
                remedy = f"Check the port mapping and whether the server hangs: `gpuhost wait-ready {container.name}`."
            else:
                message = f"{subject} is still starting; last line: {verdict.last_line or '(no output yet)'}"
                remedy = f"Follow it with `gpuhost wait-ready {container.name}`."
            findings.append(Finding("comfyui.ready", "comfyui", Severity.WARN, message, remedy, evidence))
        else:
            stopped = verdict.reason == "stopped" or (verdict.reason == "exited" and verdict.exit_code == 0)
            findings.append(
                Finding(
                    "comfyui.ready",
                    "comfyui",
                    Severity.WARN if stopped else Severity.FAIL,
                    f"{subject}: {verdict.message}",
                    verdict.remedy,
                    evidence,
                )
            )
    return findings


def import_failures(facts: HostFacts, options: RuleOptions) -> list[Finding]:
    findings: list[Finding] = []
    for container in facts.comfyui.containers:
        warnings = container.verdict.warnings
        if not warnings:
            continue
        custom = [w.node for w in warnings if w.kind == "custom-node"]
        extras = [w.node for w in warnings if w.kind == "comfy-extras"]
        parts = []
        if custom:
            parts.append("custom nodes " + ", ".join(custom))
        if extras:
            parts.append("comfy_extras " + ", ".join(extras))
        reasons = sorted({w.reason for w in warnings if w.reason})
        findings.append(
            Finding(
                "comfyui.import-failed",
                "comfyui",
                Severity.WARN,
                f"ComfyUI container {container.name}: {' and '.join(parts)} failed to import (the server still "
                "serves; their nodes are missing)" + (f": {'; '.join(reasons)}" if reasons else ""),
                "Install what they need into the image (the reasons name the missing modules) or remove the "
                "broken custom node; workflows using them are refused (invalid_prompt: the node does not exist).",
                {"container": container.name, "nodes": [{"kind": w.kind, "node": w.node, "path": w.path,
                                                        "reason": w.reason} for w in warnings]},
            )
        )
    return findings


def models(facts: HostFacts, options: RuleOptions) -> list[Finding]:
    """The configured models (gpuhost models sync --record) present and whole on this host."""
    record = facts.models
    if not record.record:
        return []
    if record.error:
        return [Finding("comfyui.models", "comfyui", Severity.FAIL, f"cannot read the models record: {record.error}",
                        "Run the comfyui role again (it writes the record when it syncs the models).",
                        {"record": record.record})]
    bad = [f for f in record.files if f.status != "ok"]
    evidence = {"record": record.record, "directory": record.directory, "source": record.source,
                "files": len(record.files),
                "bad": [{"file": f"{f.folder}/{f.name}", "status": f.status, "problem": f.problem} for f in bad]}
    if not bad:
        return [Finding("comfyui.models", "comfyui", Severity.OK,
                        f"all {len(record.files)} configured model files are present and whole in {record.directory}",
                        "", evidence)]
    names = ", ".join(f"{f.folder}/{f.name} ({f.status}: {f.problem})" for f in bad[:5])
    more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
    return [Finding(
        "comfyui.models", "comfyui", Severity.FAIL,
        f"{len(bad)} of {len(record.files)} configured model files are missing, short or corrupt in "
        f"{record.directory}: {names}{more}",
        f"Fetch them again: `gpuhost models sync {record.source or 'SOURCE'} --manifest MANIFEST --to "
        f"{record.directory}` (the gpuhost-models-sync unit does it at boot); workflows using them fail.",
        evidence,
    )]
