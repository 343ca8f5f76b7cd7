"""`gpuhost check` on one host: collect facts, run rules, build the report."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from gpuhost.facts import SCHEMA_VERSION, CollectOptions, HostFacts, collect_host_facts
from gpuhost.facts.source import SourceStatus
from gpuhost.model import ExitCode, Finding, Severity, exit_code_for, to_jsonable, worst
from gpuhost.rules import RuleOptions, evaluate

REPORT_SCHEMA = f"gpuhost.check/v{SCHEMA_VERSION}"


@dataclass
class CheckReport:
    host: str
    verdict: Severity
    exit_code: ExitCode
    findings: list[Finding]
    facts: HostFacts
    unreadable_sources: list[str] = field(default_factory=list)
    duration_ms: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        counts = {s.value: 0 for s in Severity}
        for finding in self.findings:
            counts[finding.severity.value] += 1
        return {
            "schema": REPORT_SCHEMA,
            "host": self.host,
            "verdict": self.verdict.value,
            "exit_code": int(self.exit_code),
            "summary": counts,
            "failing": sorted({f.id for f in self.findings if f.severity is Severity.FAIL}),
            "unreadable_sources": self.unreadable_sources,
            "duration_ms": self.duration_ms,
            "findings": [f.to_dict() for f in self.findings],
            "facts": to_jsonable(self.facts),
        }


def unreadable_sources(facts: HostFacts) -> list[str]:
    sources = {"kernel": facts.kernel.status, "gpu": facts.gpu.status, "docker": facts.docker.status}
    return [name for name, status in sources.items() if status is SourceStatus.UNREADABLE]


def report_for(facts: HostFacts, rule_options: RuleOptions, strict: bool = False) -> CheckReport:
    findings = evaluate(facts, rule_options)
    unreadable = unreadable_sources(facts)
    code = ExitCode.SOURCE_UNREADABLE if unreadable else exit_code_for(findings, strict)
    return CheckReport(
        host=facts.hostname,
        verdict=worst(findings),
        exit_code=code,
        findings=findings,
        facts=facts,
        unreadable_sources=unreadable,
    )


def add_findings(report: CheckReport, findings: list[Finding], strict: bool = False) -> CheckReport:
    """Findings gathered after the check (e.g. `--workflow`), folded into its verdict and exit code."""
    report.findings.extend(findings)
    report.verdict = worst(report.findings)
    if not report.unreadable_sources:
        report.exit_code = exit_code_for(report.findings, strict)
    return report


def run_check(
    collect_options: CollectOptions | None = None,
    rule_options: RuleOptions | None = None,
    strict: bool = False,
) -> CheckReport:
    start = time.perf_counter()
    facts = collect_host_facts(collect_options)
    report = report_for(facts, rule_options or RuleOptions(), strict)
    report.duration_ms = round((time.perf_counter() - start) * 1000, 1)
    return report
