"""Signatures, planning and disk preparation on real loop devices (root only).

Every signature here is written by the real tool (mkfs.xfs, mkfs.ext4, mkswap, sfdisk, mkfs.btrfs)
where it is installed; md, LVM and LUKS headers are laid out byte by byte at their documented
offsets, because this kernel has no md driver and no LVM tools are installed. The RAID0 path of
storage-ensure runs only where /proc/mdstat exists.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gpuhost.facts.signatures import probe_signatures, quick_signatures, signatures_from_bytes
from gpuhost.model import UsageError
from gpuhost.storage.ensure import StorageError, ensure_storage, load_config
from gpuhost.storage.plan import StorageRequest, plan_storage
from tests.support.paths import REPO

MIB = 1024 * 1024
pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("losetup") or not shutil.which("mkfs.xfs"),
    reason="needs root, losetup and mkfs.xfs (loop devices)",
)
HAS_MD = os.path.exists("/proc/mdstat")

LoopFactory = Callable[..., str]


@pytest.fixture
def loop_device(tmp_path: Path) -> Iterator[LoopFactory]:
    """Attach sparse files as loop devices; every one is detached again, and only those."""
    attached: list[str] = []

    def make(size_mib: int = 320, name: str = "disk") -> str:
        backing = tmp_path / f"{name}-{len(attached)}.img"
        with open(backing, "wb") as fh:
            fh.truncate(size_mib * MIB)
        device = subprocess.run(
            ["losetup", "--find", "--show", str(backing)], capture_output=True, text=True, check=True
        ).stdout.strip()
        attached.append(device)
        return device

    yield make
    for device in attached:
        subprocess.run(["umount", device], capture_output=True, check=False)
        subprocess.run(["losetup", "-d", device], capture_output=True, check=False)


def sha256_of(device: str) -> str:
    digest = hashlib.sha256()
    with open(device, "rb") as fh:
        for chunk in iter(lambda: fh.read(4 * MIB), b""):
            digest.update(chunk)
    return digest.hexdigest()


def run(*command: str) -> None:
    subprocess.run(command, capture_output=True, check=True, input=None)


WRITERS: dict[str, Callable[[str], None]] = {
    "xfs": lambda d: run("mkfs.xfs", "-q", "-L", "userdata", d),
    "ext4": lambda d: run("mkfs.ext4", "-q", "-L", "userdata", d),
    "swap": lambda d: run("mkswap", "-L", "userdata", d),
}
if shutil.which("mkfs.btrfs"):
    WRITERS["btrfs"] = lambda d: run("mkfs.btrfs", "-q", "-L", "userdata", d)
if shutil.which("sfdisk"):
    def _table(label: str) -> Callable[[str], None]:
        return lambda d: subprocess.run(
            ["sfdisk", "-q", d], input=f"label: {label}\n,50M\n", text=True, capture_output=True, check=True
        ) and None

    WRITERS["gpt"] = _table("gpt")
    WRITERS["dos"] = _table("dos")


@pytest.mark.parametrize("kind", sorted(WRITERS))
def test_real_signatures_are_found_by_all_three_readers(kind: str, loop_device: LoopFactory) -> None:
    device = loop_device()
    WRITERS[kind](device)
    report = probe_signatures(device)
    assert not report.errors
    found = {s.type: s for s in report.signatures}
    assert kind in found, report
    assert set(found[kind].found_by) == {"blkid", "wipefs", "bytes"}
    if kind in ("xfs", "ext4", "swap", "btrfs"):
        assert found[kind].label == "userdata"
    assert next(s.type for s in quick_signatures(device)) == kind


def test_a_blank_device_is_blank(loop_device: LoopFactory) -> None:
    report = probe_signatures(loop_device())
    assert report.blank, report


def md_superblock(name: str) -> bytes:
    block = bytearray(4096)
    struct.pack_into("<II", block, 0, 0xA92B4EFC, 1)  # magic, major version 1
    block[16:32] = bytes(range(16))
    block[32:32 + len(name)] = name.encode()
    return bytes(block)


@pytest.mark.parametrize(
    ("layout", "kind"),
    [
        ({4096: md_superblock("ip-10-0-0-12:gh-docker")}, "linux_raid_member"),  # md 1.2
        ({0: md_superblock("host:scratch")}, "linux_raid_member"),  # md 1.1
        ({512: b"LABELONE" + bytes(16) + b"LVM2 001"}, "LVM2_member"),
        ({0: b"LUKS\xba\xbe\x00\x02"}, "crypto_LUKS"),
    ],
)
def test_byte_checks_find_headers_without_their_tools(layout: dict[int, bytes], kind: str) -> None:
    head = bytearray(68 * 1024)
    for offset, data in layout.items():
        head[offset : offset + len(data)] = data
    found = signatures_from_bytes(bytes(head))
    assert [s.type for s in found] == [kind]
    if kind == "linux_raid_member":
        assert found[0].label in ("ip-10-0-0-12:gh-docker", "host:scratch")


def test_md_superblocks_at_the_end_of_the_device() -> None:
    size = 64 * MIB
    tail = bytearray(128 * 1024)
    offset_v10 = (size - 8192) & ~4095
    start = offset_v10 - (size - len(tail))
    tail[start : start + 4096] = md_superblock("host:gh-docker")
    found = signatures_from_bytes(bytes(68 * 1024), bytes(tail), size)
    assert [s.type for s in found] == ["linux_raid_member"]


def test_plan_refuses_the_filesystem_disk_and_writes_nothing(loop_device: LoopFactory) -> None:
    blank, used = loop_device(name="blank"), loop_device(name="used")
    WRITERS["xfs"](used)
    before = (sha256_of(blank), sha256_of(used))
    plan = plan_storage(StorageRequest(devices=[blank, used]))
    assert not plan.ok
    assert plan.errors == [f"{used}: holds xfs labelled 'userdata' (filesystem)"]
    assert plan.disks[0].accepted and not plan.disks[1].accepted
    assert (sha256_of(blank), sha256_of(used)) == before


def config_for(*devices: str, mount_path: str = "/mnt/gpuhost-test-docker", **extra: object) -> dict[str, object]:
    plan = plan_storage(
        StorageRequest(devices=list(devices), mount_path=mount_path), probe=lambda p: probe_signatures(p)
    )
    config = plan.config()
    config.update(extra)
    return config


def test_ensure_creates_the_filesystem_once(loop_device: LoopFactory, tmp_path: Path) -> None:
    device = loop_device()
    config = config_for(device, mount_path=str(tmp_path / "mnt"))
    dry = ensure_storage(config, check=True)
    assert dry.changed and dry.state == "would-create"
    assert probe_signatures(device).blank  # check mode wrote nothing

    first = ensure_storage(config)
    assert first.changed and first.state == "created"
    assert first.actions == [f"mkfs.xfs -L gh-docker {device}"]
    found = probe_signatures(device).signatures
    assert [(s.type, s.label) for s in found] == [("xfs", "gh-docker")]

    second = ensure_storage(config)
    assert not second.changed and second.state == "present" and second.actions == []


def test_ensure_leaves_a_foreign_filesystem_alone_unless_forced(loop_device: LoopFactory, tmp_path: Path) -> None:
    device = loop_device()
    WRITERS["xfs"](device)
    before = sha256_of(device)
    config = {
        "schema": "gpuhost.docker-storage/v1", "selection": "devices", "devices": [device], "expected_disks": 1,
        "layout": "single", "label": "gh-docker", "array_name": "gh-docker", "mount_path": str(tmp_path / "mnt"),
        "mount_source": device, "mount_unit": "x.mount", "missing_disk_policy": "fail", "device_timeout_s": 0,
        "fallback_data_root": "/var/lib/docker",
    }
    for boot in (False, True):
        with pytest.raises(StorageError, match="holds xfs labelled 'userdata'"):
            ensure_storage(config, boot=boot)
    assert sha256_of(device) == before

    forced = ensure_storage(config, force=[device])
    assert forced.actions == [f"wipefs --all {device}", f"mkfs.xfs -L gh-docker {device}"]
    assert [(s.type, s.label) for s in probe_signatures(device).signatures] == [("xfs", "gh-docker")]


def test_a_busy_mount_path_is_refused(loop_device: LoopFactory, tmp_path: Path) -> None:
    device = loop_device()
    mount_path, other = tmp_path / "mnt", tmp_path / "old-data-root"
    mount_path.mkdir()
    other.mkdir()
    subprocess.run(["mount", "--bind", str(other), str(mount_path)], check=True)
    try:
        with pytest.raises(StorageError, match=r"already has .* mounted on it"):
            ensure_storage(config_for(device, mount_path=str(mount_path)))
    finally:
        subprocess.run(["umount", str(mount_path)], check=False)
    assert probe_signatures(device).blank


def test_missing_disk_policies(loop_device: LoopFactory, tmp_path: Path) -> None:
    link = tmp_path / "fast-disk"  # stands for a disk that has not appeared yet
    old_root = tmp_path / "old-data-root"
    (old_root / "image").mkdir(parents=True)
    mount_path = tmp_path / "mnt"
    config = {
        "schema": "gpuhost.docker-storage/v1", "selection": "devices", "devices": [str(link)], "expected_disks": 1,
        "layout": "single", "label": "gh-docker", "array_name": "gh-docker", "mount_path": str(mount_path),
        "mount_source": str(link), "mount_unit": "x.mount", "missing_disk_policy": "fail", "device_timeout_s": 3,
        "fallback_data_root": str(old_root),
    }
    clock = [0.0]

    def tick(seconds: float) -> None:
        clock[0] += seconds

    with pytest.raises(StorageError, match=r"fast disk missing: .*fast-disk \(waited 3 s\)"):
        ensure_storage(config, boot=True, sleep=tick, clock=lambda: clock[0])

    result = ensure_storage(dict(config, missing_disk_policy="fallback"), boot=True, sleep=tick, clock=lambda: clock[0])
    try:
        assert result.fallback_active and result.state == "fallback"
        assert "FAST DISK MISSING" in result.message
        assert (mount_path / "image").is_dir()  # the old data-root, bind-mounted
    finally:
        subprocess.run(["umount", str(mount_path)], check=False)

    # wait: no limit; the disk appears on the fifth poll and is then prepared
    device = loop_device()
    polls = []

    def appear_later(seconds: float) -> None:
        polls.append(seconds)
        if len(polls) == 5:
            link.symlink_to(device)

    waited = ensure_storage(dict(config, missing_disk_policy="wait"), boot=True, sleep=appear_later)
    assert len(polls) == 5
    assert waited.state == "created"

    # outside boot (the role's own run) a missing disk fails at once, whatever the policy
    link.unlink()
    with pytest.raises(StorageError, match="fast disk missing"):
        ensure_storage(dict(config, missing_disk_policy="wait"), sleep=tick)


@pytest.mark.skipif(not HAS_MD, reason="this kernel has no md driver (/proc/mdstat absent): RAID0 cannot be built")
def test_raid0_across_two_disks(loop_device: LoopFactory, tmp_path: Path) -> None:
    first, second = loop_device(name="a"), loop_device(name="b")
    config = config_for(first, second, mount_path=str(tmp_path / "mnt"), array_name="gh-test-r0")
    try:
        created = ensure_storage(config)
        assert created.changed
        assert any(a.startswith("mdadm --create /dev/md/gh-test-r0") for a in created.actions)
        assert not ensure_storage(config).changed
    finally:
        subprocess.run(["mdadm", "--stop", "/dev/md/gh-test-r0"], capture_output=True, check=False)


def test_raid0_without_md_driver_is_a_clear_error(loop_device: LoopFactory, tmp_path: Path) -> None:
    if HAS_MD:
        pytest.skip("this kernel has the md driver")
    first, second = loop_device(name="a"), loop_device(name="b")
    config = config_for(first, second, mount_path=str(tmp_path / "mnt"))
    with pytest.raises(StorageError, match="no md driver"):
        ensure_storage(config)
    assert probe_signatures(first).blank and probe_signatures(second).blank


def agent(*args: str, stdin: str | None = None) -> tuple[int, dict[str, object]]:
    proc = subprocess.run(
        [sys.executable, "-c", "import sys; from gpuhost.agent import main; sys.exit(main(sys.argv[1:]))", *args],
        capture_output=True, text=True, cwd=REPO, input=stdin, timeout=120, check=False,
    )
    return proc.returncode, json.loads(proc.stdout)


def test_agent_storage_commands(loop_device: LoopFactory, tmp_path: Path) -> None:
    blank, used = loop_device(name="blank"), loop_device(name="used")
    WRITERS["xfs"](used)
    daemon_json = tmp_path / "daemon.json"
    common = ["--daemon-json", str(daemon_json), "--docker-host", "unix:///nonexistent/docker.sock"]
    mount_path = str(tmp_path / "mnt")

    rc, refused = agent("storage-plan", "--device", blank, "--device", used, "--mount-path", mount_path, *common)
    assert rc == 1 and refused["ok"] is False
    assert refused["refused"] == [{"path": used, "reasons": [f"{used}: holds xfs labelled 'userdata' (filesystem)"]}]

    rc, plan = agent("storage-plan", "--device", blank, "--mount-path", mount_path, *common)
    assert rc == 0 and plan["ok"] is True and plan["state"] == "absent"
    data_root = plan["data_root"]
    assert isinstance(data_root, dict)
    assert data_root["current"] == "/var/lib/docker" and data_root["source"] == "default"
    assert data_root["switch"] is True and data_root["target"] == mount_path
    config = plan["config"]
    assert isinstance(config, dict) and config["fallback_data_root"] == "/var/lib/docker"

    rc, done = agent("storage-ensure", "--config", "-", stdin=json.dumps(config))
    assert rc == 0 and done["changed"] is True
    rc, again = agent("storage-ensure", "--config", "-", stdin=json.dumps(config))
    assert rc == 0 and again["changed"] is False

    rc, error = agent("storage-ensure", "--config", "-", stdin="{not json")
    assert rc == 2 and "not valid JSON" in str(error["error"])
    rc, error = agent("storage-plan", "--device", blank, "--label", "far-too-long-label", *common)
    assert rc == 2 and "XFS limit" in str(error["error"])


def test_load_config_rejects_other_files() -> None:
    with pytest.raises(UsageError, match=r"not a gpuhost\.docker-storage/v1"):
        load_config('{"schema": "something/v2"}', "x.json")
    with pytest.raises(UsageError, match="missing key 'layout'"):
        load_config(
            '{"schema": "gpuhost.docker-storage/v1", "selection": "devices", "mount_path": "/m", "label": "l", '
            '"missing_disk_policy": "fail"}',
            "x.json",
        )
