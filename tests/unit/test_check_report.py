"""The check's report over all rules: facts round-trip through JSON, --strict, and a healthy recorded
host that none of the host-failure rules flags."""

from __future__ import annotations

from gpuhost.check import report_for
from gpuhost.facts.docker import gpu_paths_of
from gpuhost.hostfacts import HostFacts
from gpuhost.model import ExitCode, Severity, from_jsonable, to_jsonable
from gpuhost.rules import RuleOptions, evaluate
from tests.support.recorded_facts import safe_container, seed_facts


def test_seed_facts_round_trip_through_json() -> None:
    facts = seed_facts()
    assert to_jsonable(from_jsonable(HostFacts, to_jsonable(facts))) == to_jsonable(facts)
    assert facts.docker.containers[0].uses_legacy_hook


def test_strict_turns_warnings_into_exit_1() -> None:
    facts = seed_facts()
    facts.docker.containers = []
    facts.docker.cdi_enabled = False
    report = report_for(facts, RuleOptions(), strict=False)
    assert report.verdict is Severity.WARN
    assert report.exit_code is ExitCode.OK
    assert report_for(facts, RuleOptions(), strict=True).exit_code is ExitCode.FAILING


HOST_FAILURE_IDS = (
    "docker.cgroup-reload", "gpu.fabric-manager", "storage.containerd-store", "gpu.upgrade-risk", "gpu.next-kernel",
    "gpu.persistence", "toolkit.no-cgroups", "toolkit.ldconfig", "cdi.spec-incomplete", "cdi.hook-missing",
    "cdi.refresh-failed", "gpu.gsp", "gpu.xid", "gpu.retired-pages-pending", "gpu.mig",
)


def test_the_recorded_h100_shows_no_host_failure_once_off_the_legacy_hook(h100: HostFacts) -> None:
    # the seed's --gpus container on the systemd cgroup driver is the one exposure it has
    found = {f.id: f for f in evaluate(h100, RuleOptions()) if f.id in HOST_FAILURE_IDS}
    assert list(found) == ["docker.cgroup-reload"]
    assert found["docker.cgroup-reload"].severity is Severity.WARN  # the /dev/char links are not known
    h100.docker.containers = [gpu_paths_of(safe_container(), h100.docker.runtimes)]
    found_ids = {f.id for f in evaluate(h100, RuleOptions())}
    assert found_ids.isdisjoint(HOST_FAILURE_IDS), found_ids & set(HOST_FAILURE_IDS)
