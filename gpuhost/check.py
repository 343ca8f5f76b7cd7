"""`gpuhost check` on one host: collect facts, run rules, build the report."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Optional

from gpuhost.comfyui.instances import discover_gpus, instance_list
from gpuhost.engine import DOCKER_HOST_OPTION, docker_address
from gpuhost.facts.docker import DAEMON_JSON, DAEMON_JSON_OPTION
from gpuhost.facts.source import SourceStatus
from gpuhost.hostfacts import SCHEMA_VERSION, CollectOptions, HostFacts, collect_host_facts
from gpuhost.model import ExitCode, Finding, Severity, UsageError, exit_code_for, to_jsonable, worst
from gpuhost.options import AGENT, CLI, Command, Option, json_flag
from gpuhost.rules import RuleOptions, RunAs, evaluate

REPORT_SCHEMA = f"gpuhost.check/v{SCHEMA_VERSION}"
DEFAULT_MIN_FREE_GB = 20.0
MAX_FREE_GB = 1e9  # a GiB figure past any disk: larger is a typo
FACT_AREAS = ("gpu", "docker", "toolkit", "cdi", "boot")


@dataclass
class CheckOptions:
    """What one host's check reads (collect) and how it judges (rules), from the options as typed."""

    collect: CollectOptions = field(default_factory=CollectOptions)
    rules: RuleOptions = field(default_factory=RuleOptions)
    strict: bool = False

    @classmethod
    def parse(
        cls,
        *,
        root: str = "/",
        dev_root: str = "/dev",
        docker_host: Optional[str] = None,
        daemon_json: str = DAEMON_JSON,
        min_free_gb: float = DEFAULT_MIN_FREE_GB,
        run_as: Optional[str] = None,
        strict: bool = False,
        fleet: bool = False,
    ) -> CheckOptions:
        """The options as typed. --docker-host is checked always; $DOCKER_HOST when this host is
        checked (a fleet check runs on other hosts, with their own environment)."""
        if not math.isfinite(min_free_gb) or min_free_gb < 0:
            raise UsageError(f"--min-free-gb must be a finite number of GiB, 0 or more, got {min_free_gb}",
                             "Example: --min-free-gb 200")
        try:
            identity = RunAs.parse(run_as) if run_as else None
        except ValueError as exc:
            raise UsageError(str(exc), "Example: --run-as 1000:1000,44") from exc
        if docker_host is not None or not fleet:
            docker_address(docker_host)  # a DockerAddressError is a UsageError
        return cls(
            collect=CollectOptions(root=root, dev_root=dev_root, docker_host=docker_host, daemon_json=daemon_json),
            rules=RuleOptions(min_free_gib=min_free_gb, run_as=identity),
            strict=strict,
        )


# --- the options, declared once (gpuhost.options): this host's check, and the agent's `facts` ---------------

COLLECT_OPTIONS = (
    Option("--root", "Read /proc, /sys and /etc under this directory (a captured tree).", kind="path", default="/"),
    Option("--dev-root", "Where the /dev/nvidia* nodes are.", kind="path", default="/dev"),
    DOCKER_HOST_OPTION,
    DAEMON_JSON_OPTION,
)
RULE_OPTIONS = (
    Option("--strict", "Exit 1 on warnings too.", kind="flag", default=False),
    Option("--min-free-gb", "Fail when Docker's data-root has less free space than this (GiB).", kind="number",
           default=DEFAULT_MIN_FREE_GB, minimum=0, maximum=MAX_FREE_GB, example="--min-free-gb 200"),
    Option("--run-as", "Also check that a container running as this identity can open /dev/nvidia*.",
           metavar="UID[:GID[,GID...]]", example="--run-as 1000:1000,44"),
)
OUTPUT_OPTIONS = (
    json_flag("the report (schema gpuhost.check/v1)"),
    Option("--format", "table (default), json (as --json) or prometheus: this host's metrics in Prometheus' text "
           "format (docs/monitoring.md).", default="table", choices=("table", "json", "prometheus"), fronts=(CLI,)),
    Option("--format", "json: the report (default); prometheus: the text exposition format (docs/monitoring.md).",
           default="json", choices=("json", "prometheus"), fronts=(AGENT,)),
    Option("--textfile-directory", "With --format prometheus: write gpuhost.prom and gpuhost-run.prom atomically "
           "into node_exporter's textfile directory DIR and print a JSON summary; exit 0 when the check ran.",
           kind="place", metavar="DIR", fronts=(AGENT,)),
)
FACTS = Command(
    cli="",
    agent="facts",
    summary="collect this host's facts as JSON",
    options=(
        *COLLECT_OPTIONS,
        Option("--area", "Collect only these areas (repeatable); the output is then {area: facts}.",
               choices=FACT_AREAS, repeat=True),
        Option("--proc-driver-version", "Read the loaded driver's version from FILE instead of "
               "/proc/driver/nvidia/version (--area gpu).", kind="path", metavar="FILE"),
        json_flag("the facts"),
    ),
    parsers=(CheckOptions.parse,),
)


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
            "instances": instances_of_facts(self.facts),
            "facts": to_jsonable(self.facts),
        }


def instances_of_facts(facts: HostFacts) -> list[dict[str, Any]]:
    """The ComfyUI instances roles/comfyui made, each with its GPU and readiness (gpuhost.comfyui.instances)."""
    return instance_list(facts.docker.containers, facts.comfyui, discover_gpus(facts.gpu, facts.cdi, facts.devices))


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
