"""The agent's storage commands: what the docker_storage role and its boot unit run on the host.

  storage-plan    which disks may be used and why the others are refused; data-root move plan
  storage-ensure  create (or find) the array and filesystem from the boot configuration
  storage-probe   measure the data-root filesystem's write throughput (and Docker's unpack rate)

Output is JSON. Exit codes: 0 done, 1 refused or failed (the JSON says why, nothing was
written), 2 bad usage.
"""

from __future__ import annotations

import sys
from typing import Any

from gpuhost import userfile
from gpuhost.agent.common import Handlers, add_command, print_json
from gpuhost.engine import EngineClient
from gpuhost.model import ExitCode, UsageError, for_humans, to_jsonable
from gpuhost.options import Values
from gpuhost.storage.ensure import STORAGE_ENSURE, StorageError, ensure_storage, load_config
from gpuhost.storage.plan import STORAGE_PLAN, StorageRequest, plan_docker_storage
from gpuhost.storage.probe import STORAGE_PROBE, measure_storage, probe_storage


def cmd_storage_plan(values: Values) -> int:
    request = StorageRequest.parse(**values.for_call(StorageRequest.parse))
    plan = plan_docker_storage(
        request, values.daemon_json, EngineClient(values.docker_host, timeout=30.0), move=not values.no_move,
        config_path=values.config,
    )
    print_json(plan.to_dict())
    return int(plan.exit_code)


def cmd_storage_ensure(values: Values) -> int:
    if values.config == "-":
        data = sys.stdin.buffer.read(userfile.STORAGE_CONFIG_MAX + 1)
        if len(data) > userfile.STORAGE_CONFIG_MAX:
            raise UsageError(f"standard input has more than the {userfile.STORAGE_CONFIG_MAX} bytes a configuration "
                             "may have")
        config = load_config(userfile.decode_text(data, "standard input", ""), "standard input")
    else:
        try:
            text = userfile.read_text(values.config, "--config", userfile.STORAGE_CONFIG_MAX)
        except userfile.UserFileError as exc:
            raise UsageError(str(exc), "Run the docker_storage role to write it.") from exc
        config = load_config(text, values.config)

    def log(message: str) -> None:
        sys.stderr.write(f"gpuhost-agent storage-ensure: {for_humans(message)}\n")
        sys.stderr.flush()

    try:
        result = ensure_storage(config, force=list(values.force or []), check=values.check, boot=values.boot, log=log)
    except StorageError as exc:
        log(f"error: {exc}")  # the journal's line; the JSON error (exit 1) is every command's
        raise
    if result.message:
        log(result.message)
    print_json(to_jsonable(result))
    return int(ExitCode.OK)


def cmd_storage_probe(values: Values) -> int:
    def progress(message: str) -> None:
        sys.stderr.write(f"gpuhost-agent storage-probe: {for_humans(message)}\n")
        sys.stderr.flush()

    client = EngineClient(values.docker_host, timeout=30.0)
    report = measure_storage(**values.for_call(probe_storage, client=client, progress=progress))
    print_json(to_jsonable(report))
    return int(ExitCode.OK)


def add_commands(sub: Any, handlers: Handlers) -> None:
    add_command(sub, STORAGE_PLAN, cmd_storage_plan, handlers)
    add_command(sub, STORAGE_ENSURE, cmd_storage_ensure, handlers)
    add_command(sub, STORAGE_PROBE, cmd_storage_probe, handlers)
