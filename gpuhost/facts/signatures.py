"""What a block device holds: filesystem, partition table, RAID, LVM, swap or crypto signatures.

No kernel interface reports signatures of an unmounted device, so three independent readers
look: `blkid -p` (low-level probe, no cache), `wipefs --no-act` (every signature at every
offset, backup GPT headers included) and gpuhost's own byte checks at the documented offsets
of the common formats. A device counts as blank only when all three find nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
from dataclasses import dataclass, field

HEAD_BYTES = 68 * 1024  # covers the btrfs superblock at 64 KiB
TAIL_BYTES = 128 * 1024  # md 0.90 and 1.0 superblocks, the backup GPT header

USAGE_BY_TYPE = {
    "gpt": "partition-table",
    "dos": "partition-table",
    "PMBR": "partition-table",
    "linux_raid_member": "raid",
    "LVM2_member": "lvm",
    "swap": "swap",
    "crypto_LUKS": "crypto",
    "zfs_member": "raid",
    "isw_raid_member": "raid",
    "ddf_raid_member": "raid",
    "bcache": "other",
}


@dataclass
class Signature:
    type: str  # xfs, ext4, btrfs, vfat, gpt, dos, linux_raid_member, LVM2_member, swap, crypto_LUKS, ...
    usage: str  # filesystem, partition-table, raid, lvm, swap, crypto, other
    found_by: list[str] = field(default_factory=list)  # blkid, wipefs, bytes
    label: str = ""
    uuid: str = ""
    offset: int | None = None


@dataclass
class SignatureReport:
    device: str
    signatures: list[Signature] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # a reader that could not run or read

    @property
    def blank(self) -> bool:
        return not self.signatures and not self.errors


def usage_of(kind: str, hint: str = "") -> str:
    if kind in USAGE_BY_TYPE:
        return USAGE_BY_TYPE[kind]
    if hint in ("filesystem", "raid", "crypto"):
        return hint
    return "filesystem"


def _text(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", errors="replace").strip()


def _uuid(raw: bytes) -> str:
    h = raw.hex()
    return f"{h[0:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


MD_MAGIC = struct.pack("<I", 0xA92B4EFC)


def _md_superblock(block: bytes, offset: int) -> Signature | None:
    if block[:4] != MD_MAGIC:
        return None
    major = struct.unpack_from("<I", block, 4)[0]
    name = _text(block[32:64]) if major == 1 else ""
    uuid = _uuid(block[16:32]) if major == 1 else ""
    return Signature("linux_raid_member", "raid", ["bytes"], label=name, uuid=uuid, offset=offset)


def signatures_from_bytes(head: bytes, tail: bytes = b"", size_bytes: int = 0) -> list[Signature]:
    """Signatures at the documented offsets of the common formats.

    `head` is the start of the device (68 KiB suffice), `tail` its last bytes (128 KiB) and
    `size_bytes` its size, for the formats that keep their superblock at the end.
    """
    found: list[Signature] = []

    def at(offset: int, length: int) -> bytes:
        return head[offset : offset + length] if len(head) >= offset + length else b""

    if at(0, 4) == b"XFSB":
        found.append(Signature("xfs", "filesystem", ["bytes"], _text(at(108, 12)), _uuid(at(32, 16)), 0))
    if at(1080, 2) == b"\x53\xef":
        compat, incompat = struct.unpack_from("<II", head, 1024 + 92)
        kind = "ext4" if incompat & 0x2C0 else ("ext3" if compat & 0x4 else "ext2")
        found.append(Signature(kind, "filesystem", ["bytes"], _text(at(1144, 16)), _uuid(at(1128, 16)), 1080))
    if at(65600, 8) == b"_BHRfS_M":
        found.append(Signature("btrfs", "filesystem", ["bytes"], _text(at(65536 + 0x12B, 256)), "", 65600))
    for offset in (512, 4096):
        if at(offset, 8) == b"EFI PART":
            found.append(Signature("gpt", "partition-table", ["bytes"], offset=offset))
            break
    if at(510, 2) == b"\x55\xaa":
        if at(3, 8) == b"NTFS    ":
            found.append(Signature("ntfs", "filesystem", ["bytes"], offset=3))
        elif at(82, 5) == b"FAT32" or at(54, 3) == b"FAT":
            found.append(Signature("vfat", "filesystem", ["bytes"], offset=54))
        else:
            entries = [at(446 + 16 * i, 16) for i in range(4)]
            if any(e[4] != 0 and e[0] in (0x00, 0x80) for e in entries if len(e) == 16):
                kind = "PMBR" if any(e[4] == 0xEE for e in entries if len(e) == 16) else "dos"
                found.append(Signature(kind, "partition-table", ["bytes"], offset=510))
    for sector in range(4):
        base = sector * 512
        if at(base, 8) == b"LABELONE" and at(base + 24, 8) == b"LVM2 001":
            found.append(Signature("LVM2_member", "lvm", ["bytes"], offset=base))
            break
    for page in (4096, 8192, 16384, 65536):
        if at(page - 10, 10) in (b"SWAPSPACE2", b"SWAP-SPACE"):
            found.append(Signature("swap", "swap", ["bytes"], _text(at(1052, 16)), _uuid(at(1036, 16)), page - 10))
            break
    if at(0, 6) == b"LUKS\xba\xbe":
        found.append(Signature("crypto_LUKS", "crypto", ["bytes"], offset=0))
    if at(32769, 5) == b"CD001":
        found.append(Signature("iso9660", "filesystem", ["bytes"], offset=32769))
    for offset in (0, 4096):  # md superblock 1.1 and 1.2
        md = _md_superblock(at(offset, 256), offset)
        if md is not None:
            found.append(md)
    if tail and size_bytes:
        tail_start = size_bytes - len(tail)
        candidates = [((size_bytes - 8192) & ~4095)]  # 1.0: 8 KiB from the end, 4 KiB aligned
        if size_bytes >= 65536:
            candidates.append((size_bytes & ~65535) - 65536)  # 0.90: last 64 KiB-aligned block
        for offset in candidates:
            if offset >= tail_start and offset >= 0:
                md = _md_superblock(tail[offset - tail_start : offset - tail_start + 256], offset)
                if md is not None and all(s.type != "linux_raid_member" for s in found):
                    found.append(md)
    return found


def read_device_bytes(path: str) -> tuple[bytes, bytes, int]:
    """The head and tail of a block device (or image file) and its size."""
    with open(path, "rb", buffering=0) as fh:
        size = fh.seek(0, os.SEEK_END)
        fh.seek(0)
        head = fh.read(min(HEAD_BYTES, size))
        tail = b""
        if size > HEAD_BYTES:
            fh.seek(max(0, size - TAIL_BYTES))
            tail = fh.read(TAIL_BYTES)
    return head, tail, size


def parse_blkid_export(text: str) -> list[Signature]:
    values: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key.strip()] = value.strip()
    found: list[Signature] = []
    if "TYPE" in values:
        kind = values["TYPE"]
        found.append(Signature(kind, usage_of(kind, values.get("USAGE", "")), ["blkid"], values.get("LABEL", ""),
                               values.get("UUID", "")))
    if "PTTYPE" in values:
        kind = values["PTTYPE"]
        found.append(Signature(kind, "partition-table", ["blkid"], uuid=values.get("PTUUID", "")))
    return found


def parse_wipefs_json(text: str) -> list[Signature]:
    data = json.loads(text) if text.strip() else {}
    found: list[Signature] = []
    for entry in data.get("signatures") or []:
        kind = str(entry.get("type", ""))
        try:
            offset: int | None = int(str(entry.get("offset", "")), 0)
        except ValueError:
            offset = None
        found.append(Signature(kind, usage_of(kind), ["wipefs"], str(entry.get("label") or ""),
                               str(entry.get("uuid") or ""), offset))
    return found


def merge(groups: list[list[Signature]]) -> list[Signature]:
    """One entry per signature type, remembering every reader that found it."""
    merged: dict[str, Signature] = {}
    for group in groups:
        for signature in group:
            key = "ext" if signature.type in ("ext2", "ext3", "ext4") else signature.type
            key = "dos" if key == "PMBR" else key
            known = merged.get(key)
            if known is None:
                merged[key] = Signature(signature.type, signature.usage, list(signature.found_by), signature.label,
                                        signature.uuid, signature.offset)
                continue
            for reader in signature.found_by:
                if reader not in known.found_by:
                    known.found_by.append(reader)
            known.label = known.label or signature.label
            known.uuid = known.uuid or signature.uuid
    return list(merged.values())


def _run(command: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, check=False, timeout=60)


def probe_signatures(path: str) -> SignatureReport:
    """All three readers on one device. A reader that cannot run is an error, never "blank"."""
    report = SignatureReport(device=path)
    groups: list[list[Signature]] = []
    try:
        head, tail, size = read_device_bytes(path)
        groups.append(signatures_from_bytes(head, tail, size))
    except OSError as exc:
        report.errors.append(f"cannot read {path}: {exc.strerror}")
    blkid = shutil.which("blkid") or "/usr/sbin/blkid"
    if os.path.exists(blkid):
        proc = _run([blkid, "-p", "-o", "export", path])
        if proc.returncode == 0:
            groups.append(parse_blkid_export(proc.stdout))
        elif proc.returncode == 8:
            groups.append([Signature("ambiguous", "other", ["blkid"])])
        elif proc.returncode != 2:  # 2: nothing found
            report.errors.append(f"blkid -p {path}: {proc.stderr.strip() or f'exit {proc.returncode}'}")
    else:
        report.errors.append("blkid not found (util-linux)")
    wipefs = shutil.which("wipefs") or "/usr/sbin/wipefs"
    if os.path.exists(wipefs):
        proc = _run([wipefs, "--no-act", "--json", path])
        if proc.returncode == 0:
            try:
                groups.append(parse_wipefs_json(proc.stdout))
            except ValueError as exc:
                report.errors.append(f"wipefs --no-act {path}: unreadable output ({exc})")
        else:
            report.errors.append(f"wipefs --no-act {path}: {proc.stderr.strip() or f'exit {proc.returncode}'}")
    else:
        report.errors.append("wipefs not found (util-linux)")
    report.signatures = merge(groups)
    return report


def quick_signatures(path: str) -> list[Signature]:
    """The byte checks alone (no subprocess): what `gpuhost check` reports per device."""
    head, tail, size = read_device_bytes(path)
    return signatures_from_bytes(head, tail, size)
