"""Disk selection and refusal on sysfs trees shaped like real g6e instances (EBS root + instance store).

tests/fixtures/hosts/g6e-xlarge: Ubuntu 24.04 AMI on a 100 GiB gp3 root volume (nvme0n1, partitions
p1 /, p14, p15 /boot/efi, p16 /boot) and one 250 GB instance-store disk (nvme1n1).
tests/fixtures/hosts/g6e-12xlarge: two 1900 GB instance-store disks (nvme0n1, nvme2n1) with the root
volume enumerated between them (nvme1n1): device numbering says nothing about the device's kind.
The signatures each test gives a disk are what blkid/wipefs/the byte checks report for it.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from gpuhost.facts.signatures import Signature, SignatureReport
from gpuhost.facts.storage import read_mounts
from gpuhost.model import UsageError
from gpuhost.storage.plan import (
    StorageRequest,
    mount_unit_name,
    plan_storage,
    root_disks,
    systemd_escape_path,
)
from tests.support.paths import FIXTURES

XLARGE = FIXTURES / "hosts" / "g6e-xlarge"
TWELVE = FIXTURES / "hosts" / "g6e-12xlarge"
XFS_USERDATA = Signature("xfs", "filesystem", ["blkid", "wipefs", "bytes"], "userdata", "0b5c…", 0)
XFS_OURS = Signature("xfs", "filesystem", ["blkid", "wipefs", "bytes"], "gh-docker", "7d1e…", 0)


def probe_with(signatures: dict[str, list[Signature]] | None = None, errors: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    """The signature reader for a captured tree: nothing found unless a test says otherwise."""
    calls: list[str] = []

    def probe(name: str) -> SignatureReport:
        calls.append(name)
        report = SignatureReport(device=name, signatures=list((signatures or {}).get(name, [])))
        if errors and name in errors:
            report.errors.append(errors[name])
        return report

    probe.calls = calls  # type: ignore[attr-defined]
    return probe


def copy_tree(source: Path, tmp_path: Path) -> Path:
    root = tmp_path / source.name
    shutil.copytree(source, root, symlinks=True)
    return root


def test_the_root_disk_is_found_through_its_partition() -> None:
    assert root_disks(read_mounts(str(XLARGE)), str(XLARGE)) == {"nvme0n1"}
    assert root_disks(read_mounts(str(TWELVE)), str(TWELVE)) == {"nvme1n1"}


def test_g6e_xlarge_picks_its_instance_store_disk_and_never_the_root_ebs_volume() -> None:
    probe = probe_with()
    plan = plan_storage(StorageRequest(), str(XLARGE), probe)
    assert plan.ok, plan.errors
    assert plan.selection == "instance-store"
    assert [d.name for d in plan.disks] == ["nvme1n1"]
    disk = plan.disks[0]
    assert disk.model == "Amazon EC2 NVMe Instance Storage"
    assert disk.serial == "AWS22D85D10F8CBA2B2C"
    assert disk.size_bytes == 250_000_000_000
    assert plan.layout == "single"
    assert plan.state == "absent"
    # NVMe names change across stop/start: the boot mount goes by the label the role writes
    assert plan.mount_source == "/dev/disk/by-label/gh-docker"
    assert plan.mount_unit == "mnt-docker.mount"
    assert plan.actions == [
        "mkfs.xfs -L gh-docker /dev/nvme1n1",
        "mount /dev/nvme1n1 at /mnt/docker (noatime) via mnt-docker.mount",
    ]
    assert probe.calls == ["nvme1n1"]  # the EBS volume is not even probed
    config = plan.config()
    assert config["selection"] == "instance-store" and config["expected_disks"] == 1
    assert "force" not in config


def test_g6e_12xlarge_stripes_both_instance_store_disks() -> None:
    plan = plan_storage(StorageRequest(), str(TWELVE), probe_with())
    assert plan.ok, plan.errors
    assert sorted(d.name for d in plan.disks) == ["nvme0n1", "nvme2n1"]
    assert plan.layout == "raid0"
    assert plan.mount_source == "/dev/md/gh-docker"
    assert any(a.startswith("mdadm --create /dev/md/gh-docker --level=0 --raid-devices=2") for a in plan.actions)
    assert "mkfs.xfs -L gh-docker /dev/md/gh-docker" in plan.actions


def test_the_root_ebs_volume_is_refused_even_when_forced() -> None:
    request = StorageRequest(devices=["/dev/nvme0n1"], force=["/dev/nvme0n1"])
    plan = plan_storage(request, str(XLARGE), probe_with({"nvme0n1": [Signature("gpt", "partition-table", ["blkid"])]}))
    assert not plan.ok
    disk = plan.disks[0]
    codes = {r.code: r for r in disk.refusals}
    assert {"root-disk", "mounted", "ebs", "partitions", "signature"} <= set(codes)
    assert not codes["root-disk"].forceable and not codes["mounted"].forceable
    assert codes["ebs"].forceable
    assert "vol-0a1b2c3d4e5f60718" in codes["ebs"].message
    assert "/, /boot, /boot/efi" in codes["mounted"].message
    assert not disk.accepted
    assert plan.actions == []
    assert any("/dev/nvme0n1: holds the root filesystem" in e for e in plan.errors)


def test_a_partition_is_refused_with_the_reason() -> None:
    plan = plan_storage(StorageRequest(devices=["/dev/nvme0n1p15"]), str(XLARGE), probe_with())
    assert not plan.ok
    assert plan.disks[0].refusals[0].code == "partition"
    assert "name the whole disk" in plan.errors[0]


def test_an_ebs_data_volume_needs_force() -> None:
    root_tree = XLARGE
    plan = plan_storage(StorageRequest(devices=["/dev/nvme1n1"]), str(root_tree), probe_with())
    assert plan.ok  # nvme1n1 of the xlarge is instance store: accepted as named
    twelve = plan_storage(StorageRequest(devices=["/dev/nvme1n1"]), str(TWELVE), probe_with())
    assert not twelve.ok  # nvme1n1 of the 12xlarge is its root EBS volume


def test_a_disk_with_a_filesystem_is_refused_unless_forced_by_name() -> None:
    signatures = {"nvme1n1": [XFS_USERDATA]}
    plan = plan_storage(StorageRequest(devices=["/dev/nvme1n1"]), str(XLARGE), probe_with(signatures))
    assert not plan.ok
    assert plan.errors == ["/dev/nvme1n1: holds xfs labelled 'userdata' (filesystem)"]
    assert plan.actions == []

    forced = plan_storage(
        StorageRequest(devices=["/dev/nvme1n1"], force=["/dev/nvme1n1"]), str(XLARGE), probe_with(signatures)
    )
    assert forced.ok
    assert forced.disks[0].forced and forced.disks[0].accepted
    assert forced.actions[0] == "wipefs --all /dev/nvme1n1"


@pytest.mark.parametrize(
    ("signature", "words"),
    [
        (Signature("gpt", "partition-table", ["blkid", "wipefs"]), "gpt (partition-table)"),
        (Signature("dos", "partition-table", ["bytes"]), "dos (partition-table)"),
        (Signature("linux_raid_member", "raid", ["blkid"], "ip-10-0-0-12:data"), "linux_raid_member"),
        (Signature("LVM2_member", "lvm", ["blkid"]), "LVM2_member (lvm)"),
        (Signature("swap", "swap", ["wipefs"]), "swap (swap)"),
        (Signature("crypto_LUKS", "crypto", ["bytes"]), "crypto_LUKS (crypto)"),
        (Signature("ext4", "filesystem", ["bytes"], "cloudimg-rootfs"), "ext4 labelled 'cloudimg-rootfs'"),
        (Signature("btrfs", "filesystem", ["blkid"]), "btrfs (filesystem)"),
    ],
)
def test_every_kind_of_signature_is_refused(signature: Signature, words: str) -> None:
    plan = plan_storage(StorageRequest(devices=["/dev/nvme1n1"]), str(XLARGE), probe_with({"nvme1n1": [signature]}))
    assert not plan.ok
    assert words in plan.errors[0]


def test_an_unreadable_disk_is_refused_not_taken_for_blank() -> None:
    plan = plan_storage(StorageRequest(), str(XLARGE), probe_with(errors={"nvme1n1": "blkid -p: Permission denied"}))
    assert not plan.ok
    assert plan.disks[0].refusals[0].code == "unreadable"
    assert not plan.disks[0].refusals[0].forceable


def test_the_roles_own_filesystem_is_present_on_a_second_run(tmp_path: Path) -> None:
    root = copy_tree(XLARGE, tmp_path)
    with open(root / "proc/self/mountinfo", "a") as fh:
        fh.write("90 29 259:5 / /mnt/docker rw,noatime shared:40 - xfs /dev/nvme1n1 rw,attr2,inode64,noquota\n")
    plan = plan_storage(StorageRequest(), str(root), probe_with({"nvme1n1": [XFS_OURS]}))
    assert plan.ok, plan.errors
    assert plan.state == "present"
    assert plan.actions == []
    assert plan.disks[0].ours and plan.disks[0].mountpoints == ["/mnt/docker"]


def test_the_roles_label_mounted_elsewhere_is_refused(tmp_path: Path) -> None:
    root = copy_tree(XLARGE, tmp_path)
    with open(root / "proc/self/mountinfo", "a") as fh:
        fh.write("90 29 259:5 / /data rw,noatime shared:40 - xfs /dev/nvme1n1 rw,attr2,inode64,noquota\n")
    plan = plan_storage(StorageRequest(), str(root), probe_with({"nvme1n1": [XFS_OURS]}))
    assert not plan.ok
    assert "is mounted at /data" in plan.errors[0]


def test_a_cloud_init_ephemeral_mount_is_refused_even_when_forced(tmp_path: Path) -> None:
    root = copy_tree(XLARGE, tmp_path)
    with open(root / "proc/self/mountinfo", "a") as fh:
        fh.write("90 29 259:5 / /mnt rw,relatime shared:40 - ext4 /dev/nvme1n1 rw\n")
    ext4 = Signature("ext4", "filesystem", ["blkid"], "ephemeral0")
    request = StorageRequest(force=["/dev/nvme1n1"])
    plan = plan_storage(request, str(root), probe_with({"nvme1n1": [ext4]}))
    assert not plan.ok
    codes = {r.code for r in plan.disks[0].refusals}
    assert codes == {"mounted", "signature"}
    assert not plan.disks[0].accepted


def test_swap_and_holders_are_refused(tmp_path: Path) -> None:
    root = copy_tree(TWELVE, tmp_path)
    with open(root / "proc/swaps", "a") as fh:
        fh.write("/dev/nvme0n1                            partition\t8388604\t\t0\t\t-2\n")
    holders = root / "sys/block/nvme2n1/holders"
    (holders / "md0").mkdir()
    plan = plan_storage(StorageRequest(), str(root), probe_with())
    refusals = {d.name: {r.code for r in d.refusals} for d in plan.disks}
    assert refusals == {"nvme0n1": {"swap"}, "nvme2n1": {"holders"}}
    assert any("held by md0" in e for e in plan.errors)


def test_a_partition_held_by_lvm_makes_the_disk_unforceable(tmp_path: Path) -> None:
    root = copy_tree(XLARGE, tmp_path)
    disk = root / "sys/block/nvme1n1"
    (disk / "nvme1n1p1/holders").mkdir(parents=True)
    (disk / "nvme1n1p1/holders/dm-0").mkdir()
    (disk / "nvme1n1p1/partition").write_text("1\n")
    (disk / "nvme1n1p1/size").write_text("488279202\n")
    os.symlink("../../block/nvme1n1/nvme1n1p1", root / "sys/class/block/nvme1n1p1")
    lvm = Signature("LVM2_member", "lvm", ["blkid"])
    request = StorageRequest(devices=["/dev/nvme1n1"], force=["/dev/nvme1n1"])
    plan = plan_storage(request, str(root), probe_with({"nvme1n1": [Signature("gpt", "partition-table", ["blkid"])],
                                                         "nvme1n1p1": [lvm]}))
    refusals = {r.code: r.forceable for r in plan.disks[0].refusals}
    assert refusals == {"holders": False, "partitions": True, "signature": True}
    assert not plan.ok


def test_the_roles_own_array_is_present(tmp_path: Path) -> None:
    root = copy_tree(TWELVE, tmp_path)
    for member in ("nvme0n1", "nvme2n1"):
        (root / f"sys/block/{member}/holders/md127").mkdir()
    (root / "sys/block/md127/slaves").mkdir(parents=True)
    os.symlink("../../block/md127", root / "sys/class/block/md127")
    os.symlink("../../block/md127", root / "sys/dev/block/9:127")
    (root / "sys/block/md127/size").write_text("14843750000\n")
    with open(root / "proc/self/mountinfo", "a") as fh:
        fh.write("90 29 9:127 / /mnt/docker rw,noatime shared:40 - xfs /dev/md127 rw,attr2,inode64,noquota\n")
    member = Signature("linux_raid_member", "raid", ["blkid"], "ip-172-31-5-20:gh-docker")
    plan = plan_storage(StorageRequest(), str(root), probe_with({"nvme0n1": [member], "nvme2n1": [member]}))
    assert plan.ok, plan.errors
    assert plan.state == "present"

    foreign = Signature("linux_raid_member", "raid", ["blkid"], "ip-172-31-5-20:scratch")
    plan = plan_storage(StorageRequest(), str(root), probe_with({"nvme0n1": [foreign], "nvme2n1": [foreign]}))
    assert not plan.ok
    assert {r.code for r in plan.disks[0].refusals} == {"holders", "mounted", "signature"}


def test_one_labelled_disk_is_not_the_roles_own_in_an_array() -> None:
    request = StorageRequest(devices=["/dev/nvme0n1", "/dev/nvme2n1"])
    plan = plan_storage(request, str(TWELVE), probe_with({"nvme0n1": [XFS_OURS]}))
    assert not plan.ok
    assert "gh-docker" in plan.errors[0]


@pytest.mark.parametrize(
    ("request_args", "message"),
    [
        ({"label": "a-label-that-is-too-long"}, "XFS limit"),
        ({"label": "bad label"}, "XFS limit"),
        ({"mount_path": "relative/path"}, "absolute path"),
        ({"mount_path": "/"}, "absolute path other than /"),
        ({"mount_path": "/usr"}, "system directory"),
        ({"missing_disk_policy": "hope"}, "wait, fail, fallback"),
        ({"devices": ["/dev/nvme1n1"], "force": ["/dev/nvme9n1"]}, "not among the devices"),
        ({"devices": ["/dev/nvme1n1", "/dev/nvme1n1"]}, "listed twice"),
        ({"device_timeout_s": -1}, "zero or more"),
    ],
)
def test_bad_requests_are_usage_errors(request_args: dict[str, object], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        plan_storage(StorageRequest(**request_args), str(XLARGE), probe_with())  # type: ignore[arg-type]


def test_a_stray_force_is_an_error_not_a_traceback() -> None:
    auto = plan_storage(StorageRequest(force=["/dev/nvme0n1"]), str(XLARGE), probe_with())
    assert "not an instance-store disk" in auto.errors[0]


def test_systemd_escaping_matches_systemd_escape() -> None:
    assert systemd_escape_path("/mnt/docker") == "mnt-docker"
    assert systemd_escape_path("/mnt/docker/") == "mnt-docker"
    assert systemd_escape_path("/data/fast-disk") == "data-fast\\x2ddisk"
    assert systemd_escape_path("/srv/my disk") == "srv-my\\x20disk"
    assert mount_unit_name("/var/lib/docker") == "var-lib-docker.mount"
    if shutil.which("systemd-escape"):
        import subprocess

        for path in ("/mnt/docker", "/data/fast-disk", "/srv/my disk", "/x/.hidden"):
            expected = subprocess.run(
                ["systemd-escape", "--path", path], capture_output=True, text=True, check=True
            ).stdout.strip()
            assert systemd_escape_path(path) == expected


# --- named devices that are not block devices; mount paths that are system directories -------------


@pytest.mark.parametrize(
    ("path", "words"),
    [
        ("/dev/null", "/dev/null is not a block device (a character device)"),
        ("__FILE__", "is not a block device (a regular file)"),
        ("__DIR__", "is not a block device (a directory)"),
        ("/dev/gpuhost-no-such-disk", "/dev/gpuhost-no-such-disk: no such device"),
        ("nvme1n1", "'nvme1n1' is not a device path"),
        ("/" + "a" * 5000, "is too long for a device path"),
        ("/dev/" + "a" * 300, "is too long for a device path"),
        ("/dev/nvme1n1\n", "spaces or control characters"),
        ("/dev/../dev/nvme1n1", "'..'"),
        ("", "is not a device path"),
    ],
)
def test_a_named_device_that_is_not_a_block_device_is_a_usage_error(path: str, words: str, tmp_path: Path) -> None:
    regular = tmp_path / "disk.img"
    regular.write_bytes(b"\0" * 4096)
    path = path.replace("__FILE__", str(regular)).replace("__DIR__", str(tmp_path))
    with pytest.raises(UsageError, match=re.escape(words)) as caught:
        plan_storage(StorageRequest.parse(devices=[path]), "/", probe_with())
    assert caught.value.remedy
    assert regular.read_bytes() == b"\0" * 4096


def test_a_missing_device_in_a_captured_tree_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="/dev/sdz: no such device"):
        plan_storage(StorageRequest(devices=["/dev/sdz"]), str(XLARGE), probe_with())


@pytest.mark.parametrize(
    "mount_path",
    [
        "//etc",
        "/etc",
        "/etc/docker",
        "/var",
        "/var/lib",
        "/var/log/docker",
        "/usr/lib",
        "/root",
        "/home",
        "/home/user/docker",
        "/boot/efi",
        "/tmp",
        "/opt",
        "///usr//lib/",
        "/mnt",
        "/srv",
        "/",
        "/mnt/../etc",
        "/mnt/docker/..",
        "relative/docker",
        "/mnt/docker\n",
        " /mnt/docker",
        "/mnt/" + "d" * 256,
        "/mnt/" + "d/" * 2100,
        "/mnt/do\x00cker",
    ],
)
def test_system_directories_are_refused_as_mount_paths(mount_path: str) -> None:
    with pytest.raises(UsageError) as caught:
        StorageRequest.parse(mount_path=mount_path)
    assert caught.value.remedy and "/mnt/docker" in caught.value.remedy


@pytest.mark.parametrize(
    ("mount_path", "normalised"),
    [
        ("/mnt/docker", "/mnt/docker"),
        ("/mnt/fast//docker/", "/mnt/fast/docker"),
        ("//mnt/docker", "/mnt/docker"),
        ("/mnt/./docker", "/mnt/docker"),
        ("/srv/docker", "/srv/docker"),
        ("/data", "/data"),
        ("/data/fast-disk", "/data/fast-disk"),
        ("/var/lib/docker", "/var/lib/docker"),
        ("/var/lib/docker-nvme", "/var/lib/docker-nvme"),
        ("/scratch", "/scratch"),
        ("/tmp/pytest-of-root/mnt", "/tmp/pytest-of-root/mnt"),
    ],
)
def test_dedicated_mount_points_are_accepted_and_normalised(mount_path: str, normalised: str) -> None:
    assert StorageRequest.parse(mount_path=mount_path).mount_path == normalised


# --- paths judged where they really lead: symlinks, `..`, `%`, white space ------------------------------


@pytest.fixture
def links(tmp_path: Path) -> Path:
    """A directory of symlinks to system directories and to harmless ones, relative and absolute."""
    (tmp_path / "real" / "deeper").mkdir(parents=True)
    for name, target in {
        "to-root": "/", "to-etc": "/etc", "to-usr": "/usr", "to-var-lib": "/var/lib", "to-var": "/var",
        "to-boot": "/boot", "up-to-root": "../" * (len(tmp_path.parts) - 1), "relative-to-etc":
        "../" * (len(tmp_path.parts) - 1) + "etc", "dangling-into-etc": "/etc/gpuhost-no-such-dir",
        "loop-a": "loop-b", "loop-b": "loop-a", "self": "self", "to-real": "real",
        "to-real-abs": str(tmp_path / "real"),
        "chain": "to-real/deeper", "to-docker": "/var/lib/docker", "to-newline": "/srv/a\n[Mount]",
        "to-trailing-space": "/srv/docker ", "to-mnt": "/mnt", "into-link-then-up": "to-etc/..",
    }.items():
        (tmp_path / name).symlink_to(target)
    return tmp_path


REFUSED_THROUGH_LINKS = [
    ("to-root", "is the root filesystem"),
    ("to-etc", "/etc is a system directory"),
    ("to-etc/docker", "/etc/docker is under the system directory /etc"),
    ("to-usr/lib", "under the system directory /usr"),
    ("to-var-lib", "/var/lib is under the system directory /var"),
    ("to-var", "/var is a system directory"),
    ("to-boot/efi", "under the system directory /boot"),
    ("up-to-root", "is the root filesystem"),
    ("relative-to-etc", "/etc is a system directory"),
    ("dangling-into-etc", "under the system directory /etc"),
    ("loop-a", "link loop"),
    ("self/x", "link loop"),
    ("to-newline", "control characters"),
    ("to-trailing-space", "spaces or control characters"),
    ("to-mnt", "/mnt holds other directories"),
    ("into-link-then-up", "is the root filesystem"),
]


@pytest.mark.parametrize(("name", "words"), REFUSED_THROUGH_LINKS, ids=[n for n, _ in REFUSED_THROUGH_LINKS])
@pytest.mark.parametrize("option", ["mount_path", "fallback_data_root"])
def test_a_path_that_leads_to_a_system_directory_through_a_symlink_is_refused(
    links: Path, option: str, name: str, words: str
) -> None:
    with pytest.raises(UsageError, match=re.escape(words)) as caught:
        StorageRequest.parse(**{option: str(links / name)})  # type: ignore[arg-type]
    assert caught.value.remedy
    assert str(links / name.split("/")[0]) in str(caught.value)  # names the path as typed


@pytest.mark.parametrize(
    ("name", "leads_to"),
    [("to-real", "real"), ("to-real-abs", "real"), ("chain", "real/deeper"), ("to-real/new-dir", "real/new-dir"),
     ("real", "real")],
)
def test_a_harmless_symlink_is_planned_as_the_directory_it_leads_to(links: Path, name: str, leads_to: str) -> None:
    assert StorageRequest.parse(mount_path=str(links / name)).mount_path == str(links / leads_to)
    fallback = StorageRequest.parse(mount_path="/srv/docker", fallback_data_root=str(links / name))
    assert fallback.fallback_data_root == str(links / leads_to)


def test_docker_own_directory_through_a_symlink_is_accepted(links: Path) -> None:
    assert StorageRequest.parse(mount_path=str(links / "to-docker")).mount_path == "/var/lib/docker"
    assert StorageRequest.parse(fallback_data_root=str(links / "to-var-lib" / "docker")).fallback_data_root == (
        "/var/lib/docker"
    )


@pytest.mark.parametrize(
    "fallback",
    ["/var/../etc", "/srv/../../usr", "/var/lib/docker/../../..", "relative", "/etc", "/var/lib", "/", "/mnt",
     "/srv/old\n", "/srv/old ", " /srv/old", "/srv/old\\", "/srv/\x00old", "/srv/old\r", "/srv/old\t"],
    ids=ascii,
)
def test_a_fallback_data_root_through_dot_dot_or_at_a_system_directory_is_refused(fallback: str) -> None:
    with pytest.raises(UsageError, match="fallback data-root") as caught:
        StorageRequest.parse(fallback_data_root=fallback)
    assert caught.value.remedy


@pytest.mark.parametrize("fallback", ["/mnt/docker", "/mnt/docker/", "/mnt/docker/old", "/mnt//docker/./old"])
def test_a_fallback_data_root_that_overlaps_the_mount_path_is_refused(fallback: str) -> None:
    with pytest.raises(UsageError, match="overlap"):
        StorageRequest.parse(mount_path="/mnt/docker", fallback_data_root=fallback)
    with pytest.raises(UsageError, match="overlap"):
        StorageRequest.parse(mount_path="/mnt/docker/old/new", fallback_data_root="/mnt/docker")


@pytest.mark.parametrize(
    "mount_path",
    ["/mnt/docker /", "/mnt/docker\\", "/mnt/x/\\", "/mnt/a\u2028b", "/mnt/a\x85b", "/mnt/\x7f",
     "/mnt/" + "%" * 80],  # every % becomes \x25 in the unit name: 4 * 80 > 255
    ids=ascii,
)
def test_a_mount_path_a_unit_cannot_carry_is_refused(mount_path: str) -> None:
    with pytest.raises(UsageError) as caught:
        StorageRequest.parse(mount_path=mount_path)
    assert caught.value.remedy


@pytest.mark.parametrize(
    ("mount_path", "unit"),
    [("/mnt/100%", "mnt-100\\x25.mount"), ("/srv/my docker", "srv-my\\x20docker.mount"),
     ("/srv/é", "srv-\\xc3\\xa9.mount"), ("/srv/%h%n", "srv-\\x25h\\x25n.mount"),
     ("/data/$HOME", "data-\\x24HOME.mount")],
)
def test_percent_spaces_and_unicode_are_planned_and_escaped_in_the_unit_name(mount_path: str, unit: str) -> None:
    plan = plan_storage(StorageRequest.parse(mount_path=mount_path), str(XLARGE), probe_with())
    assert plan.request.mount_path == mount_path
    assert plan.mount_unit == unit == mount_unit_name(mount_path)
    if shutil.which("systemd-escape"):
        import subprocess

        expected = subprocess.run(["systemd-escape", "--path", "--suffix=mount", mount_path], capture_output=True,
                                  text=True, check=True).stdout.strip()
        assert unit == expected
