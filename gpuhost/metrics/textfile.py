"""node_exporter's textfile collector directory: gpuhost's metrics written there atomically.

Two files: `gpuhost.prom`, the last check that ran (replaced only by the next one that ran), and
`gpuhost-run.prom`, the outcome of the latest run. A run that fails leaves the previous check's
file in place (its timestamp ages, so the staleness alert fires in time) and says that it failed.
Each file is written under a name the collector ignores (it reads `*.prom`), made readable, flushed
to disk and renamed over the old one: a scrape sees the old file or the new one, never a part.

The directory is checked before anything runs: missing, not a directory or not writable is an
error that names it (the timer's unit fails and says why), not a silent gap in the graphs.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time

from gpuhost.exposition import Family, render
from gpuhost.model import UsageError

CHECK_FILE = "gpuhost.prom"
RUN_FILE = "gpuhost-run.prom"
DIRECTORY_REMEDY = (
    "Create it, or give the directory node_exporter reads (its --collector.textfile.directory); "
    "the gpuhost_metrics role sets both."
)


def check_directory_option(directory: str) -> str:
    """The --textfile-directory as given: an absolute path, no `..`, no surrounding white space."""
    if not directory or directory != directory.strip() or any(ord(c) < 32 for c in directory):
        raise UsageError(f"--textfile-directory {directory!r}: white space or control characters around or in it",
                         "Example: --textfile-directory /var/lib/prometheus/node-exporter")
    if not os.path.isabs(directory) or ".." in directory.split("/"):
        raise UsageError(f"--textfile-directory {directory!r}: give an absolute path without '..'",
                         "Example: --textfile-directory /var/lib/prometheus/node-exporter")
    return directory


def require_writable_directory(directory: str) -> None:
    """UsageError naming the directory unless it exists, is a directory and takes a new file."""
    if not os.path.exists(directory):
        raise UsageError(f"textfile directory {directory} does not exist: no metrics were written", DIRECTORY_REMEDY)
    if not os.path.isdir(directory):
        raise UsageError(f"textfile directory {directory} is not a directory: no metrics were written",
                         DIRECTORY_REMEDY)
    try:
        fd, probe = tempfile.mkstemp(prefix=".gpuhost-probe.", dir=directory)
    except OSError as exc:
        raise UsageError(
            f"textfile directory {directory} is not writable ({exc.strerror or exc}): no metrics were written",
            "Run the agent as a user that may write there (the gpuhost_metrics timer runs as root), "
            "or make the directory writable; it must also stay readable by node_exporter.",
        ) from exc
    os.close(fd)
    os.unlink(probe)


def write_atomically(directory: str, name: str, text: str) -> str:
    """Write `text` to directory/name through a temporary file and a rename; returns the path."""
    path = os.path.join(directory, name)
    fd, temporary = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        # node_exporter runs as its own user: the file must be readable by it
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    return path


def run_families(success: bool, exit_code: int, now: float | None = None) -> list[Family]:
    return [
        Family(
            "gpuhost_check_run_success",
            "gauge",
            "1 when the latest run of gpuhost's metrics timer checked the host and wrote gpuhost.prom; 0 when it "
            "failed to run the check (gpuhost.prom then holds the previous check).",
        ).add(1 if success else 0),
        Family(
            "gpuhost_check_run_exit_code", "gauge", "The exit code of the latest run of gpuhost's metrics timer."
        ).add(exit_code),
        Family(
            "gpuhost_check_run_timestamp_seconds",
            "gauge",
            "When the latest run of gpuhost's metrics timer ended, in seconds since the epoch.",
        ).add(round(time.time() if now is None else now, 3)),
    ]


def write_run(directory: str, success: bool, exit_code: int) -> str:
    return write_atomically(directory, RUN_FILE, render(run_families(success, exit_code)))
