"""What `gpuhost models sync|verify` report (schema gpuhost.models/v1), and the exit code it means."""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass, field
from typing import Any, Optional

from gpuhost.comfyui.models.catalog import ModelFile
from gpuhost.model import ExitCode, UsageError, for_humans
from gpuhost.redact import redact_url, redact_urls

SCHEMA = "gpuhost.models/v1"

# actions that leave the file present and verified
GOOD = {"fetched", "resumed", "skipped", "present", "ok", "would-fetch", "would-resume"}


def check_directory(path: str, what: str = "--to") -> str:
    """A path option: no `..` component, no spaces or newline around it, not empty."""
    if not isinstance(path, str) or not path or path != path.strip() or "\0" in path:
        raise UsageError(f"{what} {path!r}: give a path without spaces or a newline around it")
    if ".." in path.split("/"):
        raise UsageError(f"{what} {path!r}: a path through `..` is refused", "Give the directory itself.")
    if what == "--to" and os.path.exists(path) and not os.path.isdir(path):
        raise UsageError(f"{what} {path!r} is not a directory")
    return path


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


@dataclass
class FileResult:
    folder: str
    name: str
    path: str
    size: int
    # sync: fetched | resumed | skipped | failed | interrupted; --dry-run: would-fetch | would-resume | present |
    # failed; verify: ok | missing | short | long | corrupt | unlisted
    action: str
    bytes_fetched: int = 0
    bytes_resumed: int = 0
    seconds: float = 0.0
    problem: str = ""
    # failed because the source could not be read (access refused mid-copy): the run's exit code is 3
    unreadable: bool = False

    @property
    def relpath(self) -> str:
        return f"{self.folder}/{self.name}"

    @classmethod
    def of(cls, model: ModelFile, path: str, action: str, *, problem: str = "", fetched: int = 0, resumed: int = 0,
           seconds: float = 0.0, unreadable: bool = False) -> FileResult:
        return cls(folder=model.folder, name=model.name, path=path, size=model.size, action=action,
                   bytes_fetched=fetched, bytes_resumed=resumed, seconds=round(seconds, 3), problem=problem,
                   unreadable=unreadable)

    def __post_init__(self) -> None:
        self.problem = redact_urls(self.problem)

    def to_dict(self) -> dict[str, Any]:
        return {
            "folder": self.folder, "name": self.name, "path": self.path, "size": self.size, "action": self.action,
            "bytes_fetched": self.bytes_fetched, "bytes_resumed": self.bytes_resumed, "seconds": self.seconds,
            "problem": self.problem,
        }


@dataclass
class Prediction:
    bytes: int
    device_class: str
    write_mibs: float
    network_mibs: float
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {"bytes": self.bytes, "device_class": self.device_class, "write_mibs": self.write_mibs,
                "network_mibs": self.network_mibs, "seconds": self.seconds}


@dataclass
class ModelsResult:
    command: str  # sync | verify
    directory: str
    manifest: str
    source: str = ""
    dry_run: bool = False
    files: list[FileResult] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    seconds: float = 0.0
    prediction: Optional[Prediction] = None
    url: str = ""
    # the signal (SIGINT 2, SIGTERM 15) that stopped a sync: its exit code is 128 + the signal's number
    interrupted_by: int = 0

    def __post_init__(self) -> None:
        self.source, self.url = redact_url(self.source), redact_url(self.url)

    @property
    def failed(self) -> list[FileResult]:
        return [f for f in self.files if f.action not in GOOD]

    @property
    def exit_code(self) -> int:
        if self.interrupted_by:
            return 128 + self.interrupted_by
        failed = self.failed
        if any(f.unreadable for f in failed):
            return int(ExitCode.SOURCE_UNREADABLE)
        return int(ExitCode.FAILING if failed else ExitCode.OK)

    @property
    def changed(self) -> bool:
        return any(f.action in ("fetched", "resumed") for f in self.files)

    @property
    def would_change(self) -> bool:
        return any(f.action in ("would-fetch", "would-resume") for f in self.files)

    @property
    def message(self) -> str:
        """One sentence for people (file names and problems in it escaped: gpuhost.model.for_humans)."""
        return for_humans(self._message())

    def _message(self) -> str:
        failed = self.failed
        if self.interrupted_by:
            stopped = [f for f in failed if f.action == "interrupted"]
            done = [f for f in self.files if f.action in GOOD]
            return (f"stopped by {signal_name(self.interrupted_by)}: {len(done)} of {len(self.files)} model files "
                    f"present and whole, {len(stopped)} not finished; their parts are kept (NAME.part) and the next "
                    "sync resumes them")
        if failed:
            names = ", ".join(f"{f.relpath} ({f.action}: {f.problem})" for f in failed[:5])
            more = f" and {len(failed) - 5} more" if len(failed) > 5 else ""
            return f"{len(failed)} of {len(self.files)} model files not present and whole: {names}{more}"
        if self.dry_run:
            todo = [f for f in self.files if f.action.startswith("would-")]
            return f"{len(todo)} of {len(self.files)} files to fetch, {sum(f.bytes_fetched for f in todo)} bytes"
        if self.command == "verify":
            return f"all {len(self.files)} model files present and whole in {self.directory}"
        fetched = [f for f in self.files if f.action in ("fetched", "resumed")]
        return (f"all {len(self.files)} model files present and whole in {self.directory} "
                f"({len(fetched)} fetched, {self.fetched_bytes} bytes)")

    @property
    def fetched_bytes(self) -> int:
        return sum(f.bytes_fetched for f in self.files if not f.action.startswith("would-"))

    @property
    def resumed_bytes(self) -> int:
        return sum(f.bytes_resumed for f in self.files if not f.action.startswith("would-"))

    def to_dict(self) -> dict[str, Any]:
        seconds = round(self.seconds, 3)
        rate = round(self.fetched_bytes / 1e6 / self.seconds, 1) if self.seconds > 0 and self.fetched_bytes else 0.0
        return {
            "schema": SCHEMA,
            "command": self.command,
            "exit_code": int(self.exit_code),
            "message": self.message,
            "changed": self.changed,
            "would_change": self.would_change,
            "dry_run": self.dry_run,
            "source": self.source,
            "url": self.url,
            "manifest": self.manifest,
            "directory": self.directory,
            "totals": {
                "files": len(self.files),
                "bytes": sum(f.size for f in self.files),
                "failed": len(self.failed),
                "bytes_fetched": self.fetched_bytes,
                "bytes_resumed": self.resumed_bytes,
                "seconds": seconds,
                "mb_s": rate,
            },
            "prediction": self.prediction.to_dict() if self.prediction else None,
            "files": [f.to_dict() for f in self.files],
            "ignored": self.ignored,
        }
