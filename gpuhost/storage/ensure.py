"""Create (or find) Docker's data-root disk: what the docker_storage boot unit runs.

`gpuhost-agent storage-ensure` reads the configuration the role wrote
(/etc/gpuhost/docker-storage.json), waits for the disks, and makes what is missing: the md
RAID0 array across several disks, the XFS filesystem with the role's label. What is already
there is left alone, so the unit does nothing on a normal reboot and rebuilds everything after
an EC2 stop/start, when instance store comes back empty. The mount itself is the mount unit's
job, ordered after this one.

It never formats a disk that holds anything else: every disk passes gpuhost.storage.plan's
checks first, at boot exactly as in the role. Forcing exists only on the role's first run
(`--force DEVICE`), never in the boot configuration.

When the disks do not appear, the configured policy decides: `wait` (forever: Docker stays
down until they come), `fail` (after the device timeout: the unit fails, and Docker, which
requires it, does not start) or `fallback` (bind-mount the old data-root on the mount path, so
Docker starts on the root disk with the images it had before the move).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from gpuhost import userfile
from gpuhost.facts.signatures import SignatureReport, probe_signatures
from gpuhost.facts.storage import collect_block_devices, read_mounts
from gpuhost.model import ExitCode, GpuhostError, UsageError
from gpuhost.options import Command, Option, json_flag
from gpuhost.storage.plan import (
    CONFIG_PATH,
    CONFIG_SCHEMA,
    MISSING_DISK_POLICIES,
    StoragePlan,
    StorageRequest,
    kernel_name,
    our_filesystem,
    plan_storage,
)

Runner = Callable[[list[str]], str]


class StorageError(GpuhostError):
    """The disk could not be prepared (exit code 1): the message says why and what to do."""

    exit_code = ExitCode.FAILING

    def __init__(self, message: str, remedy: str = "") -> None:
        super().__init__(message, remedy)


@dataclass
class EnsureResult:
    changed: bool = False
    state: str = ""  # present, created, fallback, would-create
    mount_path: str = ""
    mount_source: str = ""
    actions: list[str] = field(default_factory=list)
    waited_s: float = 0.0
    fallback_active: bool = False
    message: str = ""


def run_command(command: list[str]) -> str:
    proc = subprocess.run(command, capture_output=True, text=True, check=False, timeout=600)
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip()
        raise StorageError(f"{' '.join(command)} failed (exit {proc.returncode}): {detail}")
    return proc.stdout


def load_config(text: str, source: str) -> dict[str, Any]:
    config = userfile.parse_json(text, source)
    if not isinstance(config, dict) or config.get("schema") != CONFIG_SCHEMA:
        raise UsageError(f"{source}: not a {CONFIG_SCHEMA} configuration")
    for key in ("selection", "mount_path", "label", "layout", "missing_disk_policy"):
        if key not in config:
            raise UsageError(f"{source}: missing key {key!r}")
    if config["missing_disk_policy"] not in MISSING_DISK_POLICIES:
        raise UsageError(f"{source}: missing_disk_policy must be one of {', '.join(MISSING_DISK_POLICIES)}")
    return config


def request_from(config: dict[str, Any], force: list[str] | None = None) -> StorageRequest:
    return StorageRequest(
        devices=[str(d) for d in config.get("devices") or []],
        force=list(force or []),
        mount_path=str(config["mount_path"]),
        label=str(config["label"]),
        array_name=str(config.get("array_name") or config["label"]),
        missing_disk_policy=str(config["missing_disk_policy"]),
        device_timeout_s=int(config.get("device_timeout_s", 90)),
        fallback_data_root=str(config.get("fallback_data_root") or "/var/lib/docker"),
    )


def missing_disks(config: dict[str, Any], root: str = "/") -> list[str]:
    """What is not there yet: named devices that do not exist, or too few instance-store disks."""
    if config["selection"] == "devices":
        missing = []
        for path in config.get("devices") or []:
            try:
                kernel_name(path, root)
            except UsageError:
                missing.append(str(path))
        return missing
    expected = int(config.get("expected_disks") or 1)
    found = [d for d in collect_block_devices(root) if d.device_class == "instance-store"]
    if len(found) < expected:
        return [f"{expected - len(found)} of {expected} instance-store disks"]
    return []


def wait_for_disks(
    config: dict[str, Any],
    timeout_s: float | None,
    root: str = "/",
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    log: Callable[[str], None] | None = None,
) -> tuple[list[str], float]:
    """Poll until every disk is there or `timeout_s` passes (None: forever)."""
    start = clock()
    last_report = start
    while True:
        missing = missing_disks(config, root)
        waited = clock() - start
        if not missing or (timeout_s is not None and waited >= timeout_s):
            return missing, waited
        if log is not None and clock() - last_report >= 30:
            log(f"still waiting for {', '.join(missing)} ({waited:.0f} s)")
            last_report = clock()
        sleep(1.0)


def _mounted_at(path: str, root: str = "/") -> tuple[str, str] | None:
    """(source, fstype) of what is mounted exactly at `path`, or None."""
    wanted = os.path.normpath(path)
    found = None
    for mount in read_mounts(root):
        if mount.mountpoint == wanted:
            found = (mount.source, mount.fstype)
    return found


def _fallback(config: dict[str, Any], runner: Runner, check: bool, result: EnsureResult, missing: list[str]) -> None:
    old = str(config.get("fallback_data_root") or "/var/lib/docker")
    mount_path = str(config["mount_path"])
    result.fallback_active = True
    result.state = "fallback"
    result.message = (
        f"FAST DISK MISSING ({', '.join(missing)}): falling back to the old data-root {old} on the root disk "
        f"(bind-mounted on {mount_path}); Docker starts with the images it had before the move"
    )
    if _mounted_at(mount_path) is not None:
        return
    if not os.path.isdir(old):
        raise StorageError(f"fast disk missing and the fallback data-root {old} does not exist")
    result.actions.append(f"mount --bind {old} {mount_path}")
    result.changed = True
    if not check:
        os.makedirs(mount_path, exist_ok=True)
        runner(["mount", "--bind", old, mount_path])


def ensure_storage(
    config: dict[str, Any],
    force: list[str] | None = None,
    check: bool = False,
    boot: bool = False,
    root: str = "/",
    runner: Runner = run_command,
    probe: Callable[[str], SignatureReport] = probe_signatures,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    log: Callable[[str], None] | None = None,
) -> EnsureResult:
    request = request_from(config, force)
    request.validate()
    result = EnsureResult(mount_path=request.mount_path, mount_source=str(config.get("mount_source") or ""))

    policy = request.missing_disk_policy
    timeout: float | None = None if (boot and policy == "wait") else float(request.device_timeout_s if boot else 0)
    missing, result.waited_s = wait_for_disks(config, timeout, root, sleep, clock, log)
    if missing:
        if boot and policy == "fallback":
            _fallback(config, runner, check, result, missing)
            return result
        raise StorageError(
            f"fast disk missing: {', '.join(missing)} (waited {result.waited_s:.0f} s); Docker stays stopped "
            f"rather than start on the root disk (missing-disk policy {policy!r})",
            "Check the instance type still has its instance-store disks (lsblk), or rerun the docker_storage role "
            "with the disks now present. Set docker_storage_missing_disk_policy=fallback to start on the old "
            "data-root instead.",
        )

    plan = plan_storage(request, root, probe)
    if not plan.ok:
        raise StorageError(
            "refusing to prepare the data-root disk: " + " | ".join(plan.errors),
            "Nothing was written. Free or wipe the disk yourself, or name it under docker_storage_force when its "
            "content may be destroyed.",
        )
    if plan.layout == "none":
        raise StorageError("no disk to prepare: no device named and no instance-store disk found")
    mounted = _mounted_at(request.mount_path, root)
    if mounted is not None and plan.state == "present":
        result.state = "present"
        return result
    if mounted is not None:
        raise StorageError(
            f"{request.mount_path} already has {mounted[0]} ({mounted[1]}) mounted on it, not the disk to prepare",
            f"Stop Docker and unmount it (systemctl stop docker docker.socket; umount {request.mount_path}), "
            "then run again. After a fallback boot this is the old data-root, bind-mounted.",
        )

    if plan.layout == "single":
        _ensure_single(plan, runner, check, result)
    else:
        _ensure_raid0(plan, runner, check, result, root, probe)
    if not check:
        os.makedirs(request.mount_path, exist_ok=True)
        if result.changed and shutil.which("udevadm") and os.path.exists("/run/udev/control"):
            # the mount unit may name /dev/disk/by-label/..., which udev creates
            subprocess.run(["udevadm", "settle", "--timeout=30"], check=False, capture_output=True)
    result.state = ("would-create" if check else "created") if result.changed else "present"
    return result


def _wipe_forced(plan: StoragePlan, runner: Runner, check: bool, result: EnsureResult) -> None:
    for disk in plan.disks:
        if disk.forced and not disk.blank and not disk.ours:
            result.actions.append(f"wipefs --all {disk.path}")
            if not check:
                runner(["wipefs", "--all", disk.path])
                disk.signatures = []
                disk.device.partitions = []


def _mkfs(target: str, label: str, runner: Runner, check: bool, result: EnsureResult) -> None:
    # no -f: mkfs.xfs refuses a device with a signature, one more guard behind the checks
    result.actions.append(f"mkfs.xfs -L {label} {target}")
    result.changed = True
    if not check:
        runner(["mkfs.xfs", "-q", "-L", label, target])


def _ensure_single(plan: StoragePlan, runner: Runner, check: bool, result: EnsureResult) -> None:
    disk = plan.disks[0]
    result.mount_source = result.mount_source or disk.path
    if disk.ours:
        return
    _wipe_forced(plan, runner, check, result)
    _mkfs(disk.path, plan.request.label, runner, check, result)


def _ensure_raid0(
    plan: StoragePlan,
    runner: Runner,
    check: bool,
    result: EnsureResult,
    root: str,
    probe: Callable[[str], SignatureReport],
) -> None:
    request = plan.request
    array = f"/dev/md/{request.array_name}"
    result.mount_source = result.mount_source or array
    if not os.path.exists(os.path.join(root, "proc/mdstat")):
        raise StorageError(
            f"{len(plan.disks)} disks need an md RAID0 array, but this kernel has no md driver (no /proc/mdstat)",
            "Load the md module (modprobe raid0) or name a single disk.",
        )
    members = [d.path for d in plan.disks]
    if not os.path.exists(array):
        if all(d.ours for d in plan.disks):
            result.actions.append(f"mdadm --assemble {array} {' '.join(members)}")
            result.changed = True
            if not check:
                runner(["mdadm", "--assemble", array, *members])
        else:
            _wipe_forced(plan, runner, check, result)
            result.actions.append(f"mdadm --create {array} --level=0 --raid-devices={len(members)}")
            result.changed = True
            if not check:
                runner(
                    [
                        "mdadm", "--create", array, "--run", "--level=0", f"--raid-devices={len(members)}",
                        "--metadata=1.2", f"--name={request.array_name}", "--homehost=any", *members,
                    ]
                )
    if check and not os.path.exists(array):
        _mkfs(array, request.label, runner, check, result)
        return
    report = probe(array)
    if report.errors:
        raise StorageError(f"{array}: signatures could not be read: {'; '.join(report.errors)}")
    if not report.signatures:
        _mkfs(array, request.label, runner, check, result)
    elif not all(our_filesystem(s, request.label) for s in report.signatures):
        kinds = ", ".join(s.type for s in report.signatures)
        raise StorageError(f"{array} holds {kinds}, not the XFS filesystem labelled {request.label!r}; left alone")


STORAGE_ENSURE = Command(
    cli="",
    agent="storage-ensure",
    summary="create (or find) the data-root array and filesystem; what the boot unit runs",
    options=(
        Option("--config", "The role's configuration, - for stdin.", kind="path", default=CONFIG_PATH),
        Option("--force", "A disk whose content may be destroyed (role runs only).", repeat=True),
        Option("--check", "Say what would be done, do nothing.", kind="flag", default=False),
        Option("--boot", "Apply the missing-disk policy (wait, fail, fallback).", kind="flag", default=False),
        json_flag("the result"),
    ),
    parsers=(ensure_storage,),
)
