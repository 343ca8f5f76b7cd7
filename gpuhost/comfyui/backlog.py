"""A container's log so far, fed to the readiness machine before anything else, and where following
the log resumes without feeding a line twice.

The backlog comes first because every timer the machine keeps is judged on the log's own timeline:
a tick fed before the backlog would measure idleness from the run's start instead of from its last
line, and call a server that has been serving for longer than the stall timeout "stalled". The
Engine API says nowhere where a followed log's backlog ends, so the backlog is its own request
(follow=0, which ends), and the follow stream starts at the newest line it held.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

from gpuhost.comfyui.container import ComfyContainer, run_log_since, since_param, split_log_line
from gpuhost.comfyui.readiness import LogLine, ReadinessMachine
from gpuhost.engine import EngineClient, LogDemuxer
from gpuhost.units import human_bytes

# Start-up output sits at the start of a run's log and is small (tens of kB; a few MB with many
# custom nodes); a server that ran for months can have hundreds of MB after it. Past this many bytes
# the middle is skipped and the newest TAIL_LINES lines are read instead.
MAX_HEAD_BYTES = 8 * 1024 * 1024
TAIL_LINES = 200


@dataclass
class LogCursor:
    """The newest log time fed and how many lines carried exactly that time.

    The Engine API's `since` keeps lines at that very time (and since_param starts a millisecond
    early), so a stream opened at `since` resends them: `skip` drops what was fed already."""

    last_at: Optional[float] = None
    lines_at_last: int = 0
    # the newest line of the log was read (the backlog was not cut short by a deadline)
    reached_end: bool = False
    # lines between the head and the tail were not read
    gap: bool = False
    _resent: int = 0

    def fed(self, at: Optional[float]) -> None:
        if at is None:
            return
        if self.last_at is None or at > self.last_at:
            self.last_at, self.lines_at_last, self._resent = at, 1, 0
        elif at == self.last_at:
            self.lines_at_last += 1

    def reopened(self) -> None:
        """A new stream starts at `last_at` again: it resends the lines at that time."""
        self._resent = 0

    def skip(self, at: Optional[float]) -> bool:
        """True for a line a stream opened at `last_at` delivers that was fed before."""
        if at is None or self.last_at is None or at > self.last_at:
            return False
        if at < self.last_at:
            return True
        if self._resent < self.lines_at_last:
            self._resent += 1
            return True
        return False


def read_backlog(
    client: EngineClient,
    container: ComfyContainer,
    machine: ReadinessMachine,
    now: Callable[[], float],
    deadline_s: float,
    stop_at_gui: bool = False,
) -> LogCursor:
    """Feed the log of the container's current run, as far as it goes now, to `machine`.

    Stops early once the machine has decided, or (stop_at_gui) at the GUI line. `now` is the log's
    clock: it stamps a line that comes without a timestamp. Reading ends by `deadline_s` seconds."""
    cursor = LogCursor()
    params: dict[str, Any] = {"stdout": True, "stderr": True, "timestamps": True}
    since = run_log_since(container)
    if since is not None:
        params["since"] = since_param(since)
    started = now()
    complete, capped = _feed(client, container, machine, params, cursor, now, deadline_s, MAX_HEAD_BYTES, stop_at_gui)
    if complete or machine.decided or (stop_at_gui and machine.gui_seen):
        cursor.reached_end = complete
        return cursor
    remaining = deadline_s - (now() - started)
    if not capped or remaining <= 0:
        return cursor  # cut short by the deadline (or a broken read): the newest line is not known
    cursor.gap = True
    machine.note(f"more than {human_bytes(MAX_HEAD_BYTES)} of log: read its start and its last {TAIL_LINES} lines")
    tail = {**params, "tail": TAIL_LINES}
    if cursor.last_at is not None:
        tail["since"] = since_param(cursor.last_at)
    cursor.reopened()
    cursor.reached_end, _ = _feed(client, container, machine, tail, cursor, now, remaining, MAX_HEAD_BYTES, False)
    return cursor


def _feed(
    client: EngineClient,
    container: ComfyContainer,
    machine: ReadinessMachine,
    params: dict[str, Any],
    cursor: LogCursor,
    now: Callable[[], float],
    deadline_s: float,
    max_bytes: int,
    stop_at_gui: bool,
) -> tuple[bool, bool]:
    """(the log ended, the byte cap was reached) for one non-following read of the log."""
    demuxer = LogDemuxer(tty=container.tty)
    read = 0
    handle = client.open_stream(
        f"/containers/{container.id}/logs", params=params, timeout=min(deadline_s, 10.0), deadline=deadline_s
    )
    try:
        while read < max_bytes:
            chunk = handle.read()
            if not chunk:
                return handle.complete, False
            read += len(chunk)
            for _, line in demuxer.feed(chunk):
                at, text = split_log_line(line)
                if cursor.skip(at):
                    continue
                machine.feed(LogLine(at if at is not None else now(), text))
                cursor.fed(at)
                if machine.decided or (stop_at_gui and machine.gui_seen):
                    return False, False
        return False, True
    finally:
        handle.close()
