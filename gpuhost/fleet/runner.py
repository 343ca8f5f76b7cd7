"""Check many hosts at once: bounded parallelism, per-host time limits, never a crash for one host."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from gpuhost.check import CheckOptions, report_for, run_check
from gpuhost.fleet.options import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_FORKS,
    DEFAULT_TIMEOUT,
    MAX_CONNECT_TIMEOUT,
    MAX_FORKS,
    MAX_TIMEOUT,
)
from gpuhost.fleet.remote import Agent, collect_remote_facts, facts_arguments
from gpuhost.fleet.report import FleetReport, HostResult, host_failure
from gpuhost.fleet.ssh import ConnectFailure, Connector, load_ssh_config, ssh_config_name
from gpuhost.fleet.targets import Target
from gpuhost.hostfacts import HostFacts
from gpuhost.model import UsageError, from_jsonable
from gpuhost.units import positive_number


@dataclass
class FleetOptions:
    """How to reach the hosts, and the check to run on each of them."""

    forks: int = DEFAULT_FORKS
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    timeout: float = DEFAULT_TIMEOUT
    accept_new_host_keys: bool = False
    become: bool = False
    ssh_config: str | None = None
    check: CheckOptions = field(default_factory=CheckOptions)

    @classmethod
    def parse(
        cls,
        *,
        forks: int = DEFAULT_FORKS,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        timeout: float = DEFAULT_TIMEOUT,
        accept_new_host_keys: bool = False,
        become: bool = False,
        ssh_config: str | None = None,
        check: CheckOptions | None = None,
    ) -> FleetOptions:
        if isinstance(forks, bool) or not isinstance(forks, int) or not 1 <= forks <= MAX_FORKS:
            raise UsageError(
                f"--forks must be a whole number from 1 to {MAX_FORKS}, got {forks!r}", "Example: --forks 20"
            )
        return cls(
            forks=forks,
            connect_timeout=positive_number(connect_timeout, "--connect-timeout", maximum=MAX_CONNECT_TIMEOUT),
            timeout=positive_number(timeout, "--timeout", maximum=MAX_TIMEOUT),
            accept_new_host_keys=accept_new_host_keys,
            become=become,
            ssh_config=ssh_config,
            check=check or CheckOptions(),
        )


def unique_targets(targets: list[Target]) -> list[Target]:
    seen: dict[str, Target] = {}
    for target in targets:
        seen.setdefault(target.name, target)
    return list(seen.values())


def run_fleet(targets: list[Target], options: FleetOptions | None = None) -> FleetReport:
    """Check every target; the result has one entry per target, in the order given."""
    options = options or FleetOptions()
    start = time.perf_counter()
    targets = unique_targets(targets)
    if options.become:
        for target in targets:
            target.become = True
    # every ssh config file is read (and a missing one refused) before any host is contacted
    config = load_ssh_config(options.ssh_config)
    configs = {t.ssh_config_file: load_ssh_config(t.ssh_config_file) for t in targets if t.ssh_config_file}
    connector = Connector(config, options.accept_new_host_keys, options.connect_timeout, configs)
    for target in targets:
        if target.is_ssh and not target.unsupported:
            try:
                connector.validate(target)
            except UsageError as exc:
                name = ssh_config_name(target.ssh_config_file or options.ssh_config)
                raise UsageError(f"ssh config {name}: {exc}", exc.remedy) from None
    agent = Agent.build() if any(t.is_ssh and not t.unsupported for t in targets) else None
    args = facts_arguments(options.check.collect)
    try:
        workers = max(1, min(options.forks, len(targets)))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="gpuhost-fleet") as pool:
            hosts = list(pool.map(lambda t: check_target(t, connector, agent, args, options), targets))
    finally:
        connector.close()
    return FleetReport(
        hosts=hosts,
        strict=options.check.strict,
        forks=options.forks,
        duration_ms=round((time.perf_counter() - start) * 1000, 1),
    )


def check_target(
    target: Target, connector: Connector, agent: Agent | None, args: list[str], options: FleetOptions
) -> HostResult:
    """One host, start to finish. Whatever happens becomes this host's result."""
    start = time.monotonic()
    deadline = start + options.timeout
    result = HostResult(name=target.name, address=_address(target, connector))
    try:
        if target.unsupported:
            raise ConnectFailure(
                "fleet.connection-unsupported",
                f"{target.name}: cannot check over {target.unsupported}",
                "Use playbooks/check.yml for hosts reached another way.",
            )
        if target.is_local:
            check = options.check
            result.report = run_check(check.collect, check.rules, check.strict)
            result.agent = "local"
        else:
            assert agent is not None
            facts = _remote_facts(target, connector, agent, args, deadline, result)
            result.report = report_for(facts, options.check.rules, options.check.strict)
    except ConnectFailure as failure:
        result.failure = host_failure(failure.finding_id, failure.message, failure.remedy, failure.evidence)
    except Exception as exc:  # one host's surprise must not end the fleet's run
        result.failure = host_failure(
            "fleet.agent-failed", f"{target.name}: unexpected {type(exc).__name__}: {exc}", "", {}
        )
    result.duration_ms = round((time.monotonic() - start) * 1000, 1)
    if result.report is not None:
        result.report.duration_ms = result.duration_ms
    return result


def _remote_facts(
    target: Target, connector: Connector, agent: Agent, args: list[str], deadline: float, result: HostResult
) -> HostFacts:
    client = connector.connect(target, deadline)
    try:
        remote = collect_remote_facts(client, target, agent, args, deadline)
    finally:
        client.close()
    result.agent = remote.agent
    result.transfer = remote.transfer
    try:
        return from_jsonable(HostFacts, remote.facts)
    except (TypeError, ValueError, KeyError) as exc:
        raise ConnectFailure("fleet.agent-failed", f"the agent's facts do not fit this gpuhost: {exc}") from None


def _address(target: Target, connector: Connector) -> Any:
    if target.is_local:
        return "local"
    if target.unsupported:
        return target.hostname
    try:
        return connector.settings_for(target).address
    except Exception:
        return target.hostname
