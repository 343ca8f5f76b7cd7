"""Is a model file whole? The safetensors header check, and the signatures of what is not a model.

A safetensors file is: an 8-byte little-endian header length n (at most 100,000,000), n bytes of
JSON starting with `{`, then the tensor data. It is whole when the largest `data_offsets` end + 8 + n
equals the file size and each tensor's span equals its shape times its dtype's size. An HTML error
page or a Git LFS pointer saved under a model's name fails the length test (ComfyUI's
`HeaderTooLarge`); a truncated file fails the size test (`MetadataIncompleteBuffer`).
"""

from __future__ import annotations

import json
import math
import os
import stat
import struct
from typing import Any, BinaryIO

MAX_HEADER_BYTES = 100_000_000

# safetensors' Dtype, in bits (the F4/F6 formats pack below a byte)
DTYPE_BITS = {
    "BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8,
    "I16": 16, "U16": 16, "F16": 16, "BF16": 16,
    "I32": 32, "U32": 32, "F32": 32,
    "I64": 64, "U64": 64, "F64": 64,
    "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6, "C64": 64,
}

SAFETENSORS_SUFFIXES = (".safetensors", ".sft")
# what a failed download leaves under a model's name
NOT_A_MODEL = (
    (b"version https://git-lfs", "a Git LFS pointer, not the file"),
    (b"<!doctype html", "an HTML page, not a model"),
    (b"<html", "an HTML page, not a model"),
    (b"<?xml", "an XML document (an error answer), not a model"),
    (b"{\"error\"", "a JSON error answer, not a model"),
)


def _what_it_is(head: bytes) -> str:
    lowered = head.lstrip()[:64].lower()
    for signature, what in NOT_A_MODEL:
        if lowered.startswith(signature):
            return what
    return ""


def check_safetensors(fh: BinaryIO, size: int) -> str:
    """"" when the open file of `size` bytes is a whole safetensors file, else the problem in one line."""
    fh.seek(0)
    head = fh.read(8)
    if len(head) < 8:
        return f"{size} bytes: too short for a safetensors header (8 bytes at least)"
    (length,) = struct.unpack("<Q", head)
    if length > MAX_HEADER_BYTES:
        what = _what_it_is(head + fh.read(56))
        return f"header too large ({length} bytes)" + (f": {what}" if what else "")
    if 8 + length > size:
        return f"header of {length} bytes runs past the end of the file ({size} bytes): truncated"
    raw = fh.read(length)
    if not raw.startswith(b"{"):
        return "the header does not start with `{`"
    try:
        header = json.loads(raw)
    except ValueError as exc:
        return f"the header is not JSON: {exc}"
    except RecursionError:
        return "the header is not JSON a loader reads: nested too deeply"
    if not isinstance(header, dict):
        return "the header is not a JSON object"
    return check_header(header, 8 + length, size)


def check_header(header: dict[str, Any], data_start: int, size: int) -> str:
    largest_end = 0
    for name, tensor in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype = tensor["dtype"]
            shape = [int(d) for d in tensor["shape"]]
            start, end = (int(o) for o in tensor["data_offsets"])
        except (KeyError, TypeError, ValueError):
            return f"tensor {name!r}: no valid dtype, shape and data_offsets"
        if start < 0 or end < start:
            return f"tensor {name!r}: data_offsets {start}..{end} are not a span"
        bits = DTYPE_BITS.get(dtype)
        if bits is None:
            return f"tensor {name!r}: unknown dtype {dtype!r}"
        if any(d < 0 for d in shape):
            return f"tensor {name!r}: negative dimension in shape {shape}"
        expected = math.prod(shape) * bits
        if (end - start) * 8 != expected and not (bits < 8 and (end - start) == math.ceil(expected / 8)):
            return f"tensor {name!r}: {end - start} bytes for shape {shape} of {dtype} ({expected // 8} expected)"
        largest_end = max(largest_end, end)
    if data_start + largest_end != size:
        state = "truncated" if data_start + largest_end > size else "longer than its tensors"
        return f"{size} bytes, the header describes {data_start + largest_end}: {state}"
    return ""


def check_model_file(path: str, name: str = "", fd: int = -1) -> str:
    """"" when the file looks whole by its own format (by the extension of `name`, default `path`),
    else the problem. Formats without a checkable header still fail when they are an HTML page, an
    LFS pointer or an error answer. With `fd`, the open file is read (not `path`: sync checks the
    very file it wrote)."""
    kind = (name or path).lower()
    try:
        opened = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC) if fd < 0 else os.dup(fd)
        with os.fdopen(opened, "rb") as fh:
            info = os.fstat(fh.fileno())
            if not stat.S_ISREG(info.st_mode):
                return "not a regular file"
            fh.seek(0)
            if kind.endswith(SAFETENSORS_SUFFIXES):
                return check_safetensors(fh, info.st_size)
            head = fh.read(64)
    except OSError as exc:
        return f"cannot read it: {exc.strerror}"
    what = _what_it_is(head)
    if what:
        return what
    if kind.endswith(".gguf") and not head.startswith(b"GGUF"):
        return "no GGUF magic at the start"
    return ""
