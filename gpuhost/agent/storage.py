"""The agent's storage commands: what the docker_storage role and its boot unit run on the host.

  storage-plan    which disks may be used and why the others are refused; data-root move plan
  storage-ensure  create (or find) the array and filesystem from the boot configuration
  storage-probe   measure the data-root filesystem's write throughput (and Docker's unpack rate)

Output is JSON. Exit codes: 0 done, 1 refused or failed (the JSON says why, nothing was
written), 2 bad usage.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from gpuhost import userfile
from gpuhost.agent.common import Handlers, add_docker_host, print_json
from gpuhost.engine import EngineClient
from gpuhost.facts.docker import DAEMON_JSON
from gpuhost.model import ExitCode, UsageError, for_humans, to_jsonable
from gpuhost.storage.ensure import StorageError, ensure_storage, load_config
from gpuhost.storage.plan import (
    CONFIG_PATH,
    DEFAULT_LABEL,
    DEFAULT_MOUNT_PATH,
    MISSING_DISK_POLICIES,
    StorageRequest,
    plan_docker_storage,
)
from gpuhost.storage.probe import DEFAULT_UNPACK_PROBE_BYTES, probe_storage
from gpuhost.units import MIB


def cmd_storage_plan(args: argparse.Namespace) -> int:
    request = StorageRequest.parse(
        devices=args.device,
        force=args.force,
        mount_path=args.mount_path,
        label=args.label,
        array_name=args.array_name,
        missing_disk_policy=args.missing_disk_policy,
        device_timeout=args.device_timeout,
        fallback_data_root=args.fallback_data_root,
        image_size=args.image_size,
        image_store=args.image_store,
    )
    plan = plan_docker_storage(
        request, args.daemon_json, EngineClient(args.docker_host, timeout=30.0), move=not args.no_move,
        config_path=args.config,
    )
    print_json(plan.to_dict())
    return int(plan.exit_code)


def cmd_storage_ensure(args: argparse.Namespace) -> int:
    if args.config == "-":
        data = sys.stdin.buffer.read(userfile.STORAGE_CONFIG_MAX + 1)
        if len(data) > userfile.STORAGE_CONFIG_MAX:
            raise UsageError(f"standard input has more than the {userfile.STORAGE_CONFIG_MAX} bytes a configuration "
                             "may have")
        config = load_config(userfile.decode_text(data, "standard input", ""), "standard input")
    else:
        try:
            text = userfile.read_text(args.config, "--config", userfile.STORAGE_CONFIG_MAX)
        except userfile.UserFileError as exc:
            raise UsageError(str(exc), "Run the docker_storage role to write it.") from exc
        config = load_config(text, args.config)

    def log(message: str) -> None:
        sys.stderr.write(f"gpuhost-agent storage-ensure: {for_humans(message)}\n")
        sys.stderr.flush()

    try:
        result = ensure_storage(config, force=list(args.force or []), check=args.check, boot=args.boot, log=log)
    except StorageError as exc:
        log(f"error: {exc}")
        print_json(
            {"error": for_humans(str(exc)), "remedy": for_humans(exc.remedy), "exit_code": int(ExitCode.FAILING)}
        )
        return int(ExitCode.FAILING)
    if result.message:
        log(result.message)
    print_json(to_jsonable(result))
    return int(ExitCode.OK)


def cmd_storage_probe(args: argparse.Namespace) -> int:
    def progress(message: str) -> None:
        sys.stderr.write(f"gpuhost-agent storage-probe: {for_humans(message)}\n")
        sys.stderr.flush()

    report = probe_storage(
        path=args.path,
        size_mib=args.size_mib,
        unpack=args.unpack,
        image_bytes=args.image_bytes,
        client=EngineClient(args.docker_host, timeout=30.0),
        record=args.record,
        unpack_mib=args.unpack_mib,
        progress=progress,
        compressions=args.compressions,
    )
    print_json(to_jsonable(report))
    return int(ExitCode.OK)


def add_commands(sub: Any, handlers: Handlers) -> None:
    plan = sub.add_parser(
        "storage-plan",
        help="which disks Docker's data-root may take, why others are refused, and the data-root move (reads only)",
    )
    plan.add_argument("--device", action="append", help="a disk to use (repeat); none: every instance-store disk")
    plan.add_argument("--force", action="append", help="a named disk whose content may be destroyed (repeat)")
    plan.add_argument("--mount-path", default=DEFAULT_MOUNT_PATH)
    plan.add_argument("--label", default=DEFAULT_LABEL, help="XFS label (at most 12 characters)")
    plan.add_argument("--array-name", default="")
    plan.add_argument("--missing-disk-policy", default="fail", help=" or ".join(MISSING_DISK_POLICIES))
    plan.add_argument("--device-timeout", type=int, default=90)
    plan.add_argument("--fallback-data-root", default="")
    plan.add_argument("--no-move", action="store_true", help="switch data-root without copying the old one")
    plan.add_argument("--image-size", default="", help="the image the disk must hold (default: the largest local one)")
    plan.add_argument("--image-store", default="auto", help="auto, classic or containerd (which keeps it twice)")
    plan.add_argument("--daemon-json", default=DAEMON_JSON)
    add_docker_host(plan)
    plan.add_argument("--config", default=CONFIG_PATH, help="an earlier run's boot configuration (read only)")
    handlers["storage-plan"] = cmd_storage_plan

    ensure = sub.add_parser(
        "storage-ensure", help="create (or find) the data-root array and filesystem; what the boot unit runs"
    )
    ensure.add_argument("--config", default=CONFIG_PATH, help="the role's configuration, - for stdin")
    ensure.add_argument("--force", action="append", help="a disk whose content may be destroyed (role runs only)")
    ensure.add_argument("--check", action="store_true", help="say what would be done, do nothing")
    ensure.add_argument("--boot", action="store_true", help="apply the missing-disk policy (wait, fail, fallback)")
    handlers["storage-ensure"] = cmd_storage_ensure

    probe = sub.add_parser("storage-probe", help="measure write throughput where data-root lives; predict unpack time")
    probe.add_argument("--path", default="",
                       help="a directory on the filesystem to measure (default: where layers land)")
    probe.add_argument("--size-mib", type=int, default=512)
    probe.add_argument(
        "--unpack", action="store_true",
        help="also time `docker pull` of an image per layer compression from the probe's own registry, 3 rounds"
    )
    probe.add_argument(
        "--unpack-mib", type=int, default=DEFAULT_UNPACK_PROBE_BYTES // MIB, help="the --unpack image's size in MiB"
    )
    probe.add_argument("--image-bytes", type=int, default=0, help="predict for this size (default: largest image)")
    probe.add_argument("--record", default="", help="also write the result to this JSON file")
    probe.add_argument("--compressions", default="none,gzip,zstd", help="the layer compressions --unpack measures")
    add_docker_host(probe)
    handlers["storage-probe"] = cmd_storage_probe
