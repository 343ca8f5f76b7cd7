"""`gpuhost-agent facts` and `gpuhost-agent check`: what roles and fleet checks read from a host."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

from gpuhost import userfile
from gpuhost.agent.common import Handlers, add_command, print_json
from gpuhost.check import FACTS, CheckOptions, run_check
from gpuhost.engine import EngineClient
from gpuhost.facts.boot import collect_boot
from gpuhost.facts.cdi import collect_cdi
from gpuhost.facts.docker import collect_docker
from gpuhost.facts.gpu import collect_gpu, parse_proc_driver_version
from gpuhost.facts.kernel import collect_kernel
from gpuhost.facts.toolkit import collect_toolkit
from gpuhost.fleet.options import CHECK
from gpuhost.hostfacts import collect_host_facts
from gpuhost.metrics.report import render_report
from gpuhost.metrics.textfile import (
    CHECK_FILE,
    check_directory_option,
    require_writable_directory,
    write_atomically,
    write_run,
)
from gpuhost.model import ExitCode, GpuhostError, UsageError, failure_of, for_humans, to_jsonable
from gpuhost.options import Values


def _collect_area(area: str, values: Values) -> Any:
    """One collector alone: what a role needs without the cost of the whole host."""
    if area == "gpu":
        gpu = collect_gpu(values.root)
        if values.proc_driver_version:
            try:
                text = userfile.read_text(values.proc_driver_version, "--proc-driver-version", userfile.PROC_MAX,
                                          errors="replace")
            except userfile.UserFileError as exc:
                if not exc.missing:  # a FIFO, a device, a directory, a huge file: exit 2, named
                    raise
                gpu.proc_driver = None  # no such file: no module loaded
            else:
                gpu.proc_driver = parse_proc_driver_version(text)
        return gpu
    if area == "docker":
        return collect_docker(EngineClient(values.docker_host, timeout=5.0), values.daemon_json, values.root)
    if area == "toolkit":
        return collect_toolkit(values.root)
    if area == "boot":
        return collect_boot(values.root, collect_kernel(values.root).release)
    return collect_cdi(values.root)


def cmd_facts(values: Values) -> int:
    options = CheckOptions.parse(**values.for_call(CheckOptions.parse))
    if values.area:
        print_json({area: to_jsonable(_collect_area(area, values)) for area in values.area})
    else:
        print_json(to_jsonable(collect_host_facts(options.collect)))
    return int(ExitCode.OK)


def cmd_check(values: Values) -> int:
    if values.json and values.format != "json":
        raise UsageError(f"--json and --format {values.format} ask for two outputs: give one")
    if values.textfile_directory is not None:
        if values.format != "prometheus":
            raise UsageError("--textfile-directory writes Prometheus metrics: add --format prometheus")
        return write_textfile(values)
    options = CheckOptions.parse(**values.for_call(CheckOptions.parse))
    report = run_check(options.collect, options.rules, strict=options.strict)
    if values.format == "prometheus":
        sys.stdout.write(render_report(report))
    else:
        print_json(report.to_dict())
    return int(report.exit_code)


def write_textfile(values: Values) -> int:
    """The metrics timer's run: the check into gpuhost.prom, the run's outcome into gpuhost-run.prom.

    Exit 0 when the check ran, whatever it found (the findings are the metrics); a check that fails to run
    keeps the previous gpuhost.prom, exports its failure and exits 1, 2 or 3 as the check would."""
    directory = check_directory_option(values.textfile_directory)
    require_writable_directory(directory)
    try:
        options = CheckOptions.parse(**values.for_call(CheckOptions.parse))
        report = run_check(options.collect, options.rules, strict=options.strict)
        text = render_report(report)
    except Exception as exc:  # whatever stopped the check, the textfile says it failed
        return _did_not_run(directory, exc)
    path = write_atomically(directory, CHECK_FILE, text)
    write_run(directory, success=True, exit_code=int(report.exit_code))
    print_json({
        "written": path,
        "host": report.host,
        "verdict": report.verdict.value,
        "check_exit_code": int(report.exit_code),
        "duration_ms": report.duration_ms,
    })
    return int(ExitCode.OK)


def check_refused(typed: Mapping[str, Any], exc: GpuhostError) -> int:
    """An option value the table refused is, for the metrics timer (--format prometheus
    --textfile-directory), a check that did not run: gpuhost-run.prom says so, gpuhost.prom stays."""
    if typed.get("textfile_directory") is None or typed.get("format") != "prometheus" or typed.get("json"):
        raise exc
    directory = check_directory_option(typed["textfile_directory"])
    require_writable_directory(directory)
    return _did_not_run(directory, exc)


def _did_not_run(directory: str, exc: Exception) -> int:
    failure = failure_of(exc)
    write_run(directory, success=False, exit_code=failure.exit_code)
    kept = "The previous check's metrics stay in place; see the message."
    print_json({
        "error": for_humans(f"gpuhost check did not run: {type(exc).__name__}: {exc}"),
        "remedy": failure.remedy if isinstance(exc, GpuhostError) and failure.remedy else kept,
        "exit_code": failure.exit_code,
        "kept": CHECK_FILE,
    })
    return failure.exit_code


def add_commands(sub: Any, handlers: Handlers) -> None:
    add_command(sub, FACTS, cmd_facts, handlers)
    add_command(sub, CHECK, cmd_check, handlers, refused=check_refused)
