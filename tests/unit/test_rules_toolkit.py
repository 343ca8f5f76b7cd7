"""The NVIDIA Container Toolkit: its version, its runtime mode, no-cgroups and the ldconfig it runs."""

from __future__ import annotations

from gpuhost.hostfacts import HostFacts
from gpuhost.model import Severity
from gpuhost.rules import evaluate
from tests.support.recorded_facts import found, one, only, seed_facts


def test_old_toolkit_and_cdi_mode_warn() -> None:
    facts = seed_facts()
    facts.toolkit.version = "1.17.8"
    facts.toolkit.mode = "cdi"
    findings = evaluate(facts)
    assert one(findings, "toolkit.installed").severity is Severity.WARN
    assert "1.18" in one(findings, "toolkit.installed").message
    assert one(findings, "toolkit.mode").severity is Severity.WARN
    assert "#1246" in one(findings, "toolkit.mode").message


def test_toolkit_no_cgroups_and_ldconfig(h100: HostFacts) -> None:
    h100.toolkit.no_cgroups = True
    assert only(h100, "toolkit.no-cgroups").severity is Severity.FAIL
    h100.docker.rootless = True
    assert found(h100, "toolkit.no-cgroups") == []
    h100.toolkit.ldconfig, h100.toolkit.ldconfig_exists = "@/sbin/ldconfig.real", False
    finding = only(h100, "toolkit.ldconfig")
    assert "ldcache error: open failed: /sbin/ldconfig.real" in finding.message
    assert "@/sbin/ldconfig`" in finding.remedy  # Amazon Linux: no ldconfig.real
    h100.toolkit.ldconfig, h100.toolkit.ldconfig_exists = "/sbin/ldconfig", True
    assert only(h100, "toolkit.ldconfig").severity is Severity.WARN
    h100.toolkit.ldconfig = "@/sbin/ldconfig"
    assert found(h100, "toolkit.ldconfig") == []
