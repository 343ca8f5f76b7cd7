"""The fleet report: one gpuhost.check/v1 report per host plus the fleet's verdict and summary."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gpuhost.check import REPORT_SCHEMA, CheckReport
from gpuhost.hostfacts import SCHEMA_VERSION
from gpuhost.model import ExitCode, Finding, Severity, to_jsonable, worst

FLEET_SCHEMA = f"gpuhost.fleet/v{SCHEMA_VERSION}"
FLEET_AREA = "fleet"


@dataclass
class HostResult:
    """One host's outcome: its check report, or the fleet finding that says why there is none."""

    name: str
    address: str
    report: CheckReport | None = None
    failure: Finding | None = None
    agent: str = ""  # "installed", "shipped", "shipped-compiled", "local" or "" when the host was not reached
    transfer: str = ""  # how a shipped agent got there: "sftp" or "pipe" (no SFTP on the host)
    duration_ms: float = 0.0

    @property
    def findings(self) -> list[Finding]:
        if self.report is not None:
            return self.report.findings
        return [self.failure] if self.failure is not None else []

    @property
    def verdict(self) -> Severity:
        return self.report.verdict if self.report is not None else Severity.FAIL

    @property
    def exit_code(self) -> ExitCode:
        return self.report.exit_code if self.report is not None else ExitCode.FAILING

    @property
    def failing(self) -> list[str]:
        return sorted({f.id for f in self.findings if f.severity is Severity.FAIL})

    @property
    def reached(self) -> bool:
        return self.report is not None

    def to_dict(self) -> dict[str, Any]:
        if self.report is not None:
            data = self.report.to_dict()
            remote_hostname = self.report.facts.hostname
        else:
            findings = self.findings
            data = {
                "schema": REPORT_SCHEMA,
                "host": self.name,
                "verdict": self.verdict.value,
                "exit_code": int(self.exit_code),
                "summary": {s.value: sum(1 for f in findings if f.severity is s) for s in Severity},
                "failing": self.failing,
                "unreadable_sources": [],
                "duration_ms": self.duration_ms,
                "findings": [f.to_dict() for f in findings],
                "instances": [],
                "facts": None,
            }
            remote_hostname = ""
        data["host"] = self.name
        data["duration_ms"] = self.duration_ms
        data["fleet"] = {
            "address": self.address,
            "agent": self.agent,
            "transfer": self.transfer,
            "hostname": remote_hostname,
        }
        return data


def host_failure(finding_id: str, message: str, remedy: str = "", evidence: dict[str, Any] | None = None) -> Finding:
    return Finding(finding_id, FLEET_AREA, Severity.FAIL, message, remedy, to_jsonable(evidence or {}))


@dataclass
class FleetReport:
    hosts: list[HostResult] = field(default_factory=list)
    strict: bool = False
    forks: int = 5
    duration_ms: float = 0.0

    @property
    def verdict(self) -> Severity:
        return worst(f for host in self.hosts for f in host.findings) if self.hosts else Severity.OK

    @property
    def failing_hosts(self) -> list[str]:
        return [host.name for host in self.hosts if host.exit_code is not ExitCode.OK]

    @property
    def exit_code(self) -> ExitCode:
        return ExitCode.FAILING if self.failing_hosts else ExitCode.OK

    def summary(self) -> dict[str, int]:
        counts = {"hosts": len(self.hosts), "ok": 0, "warn": 0, "fail": 0, "unreached": 0}
        for host in self.hosts:
            counts[host.verdict.value] += 1
            counts["unreached"] += 0 if host.reached else 1
        return counts

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": FLEET_SCHEMA,
            "verdict": self.verdict.value,
            "exit_code": int(self.exit_code),
            "summary": self.summary(),
            "failing_hosts": self.failing_hosts,
            "forks": self.forks,
            "duration_ms": self.duration_ms,
            "hosts": [host.to_dict() for host in self.hosts],
        }
