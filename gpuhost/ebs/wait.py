"""Follow a volume modification until AWS applies it: modifying -> optimizing -> completed.

The volume stays usable throughout. While `optimizing`, the new performance is being applied
(AWS: somewhere between the old and the new figures); `completed` means fully applied, and is
also when AWS accepts the next modification of the volume.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

from gpuhost.ebs.volume import Modification

WAIT_UNTIL = ("optimizing", "completed")
_DONE = {"optimizing": ("optimizing", "completed"), "completed": ("completed",)}

Fetch = Callable[[], Optional[Modification]]
Progress = Callable[[Modification, float], None]


@dataclass
class WaitOutcome:
    state: str
    progress: int | None
    waited_s: float
    polls: int
    timed_out: bool = False
    failed: bool = False
    status_message: str = ""

    @property
    def reached(self) -> bool:
        return not (self.timed_out or self.failed)

    def to_dict(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "progress": self.progress,
            "waited_s": round(self.waited_s, 1),
            "polls": self.polls,
            "timed_out": self.timed_out,
            "failed": self.failed,
            "status_message": self.status_message,
        }


def wait_for_modification(
    fetch: Fetch,
    until: str = "optimizing",
    timeout_s: float = 1800.0,
    poll_s: float = 15.0,
    on_update: Progress | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> WaitOutcome:
    """Poll `fetch` until the modification reaches `until` (or later), fails, or `timeout_s` passes."""
    if until not in _DONE:
        raise ValueError(f"until must be one of {', '.join(WAIT_UNTIL)}")
    done = _DONE[until]
    start = clock()
    max_polls = max(1, math.ceil(timeout_s / poll_s) + 1)
    state, progress, message = "unknown", None, ""
    polls = 0
    while polls < max_polls:
        polls += 1
        modification = fetch()
        elapsed = clock() - start
        if modification is not None:
            state, progress, message = modification.state, modification.progress, modification.status_message
            if on_update is not None:
                on_update(modification, elapsed)
            if state in done:
                return WaitOutcome(state, progress, elapsed, polls, status_message=message)
            if state == "failed":
                return WaitOutcome(state, progress, elapsed, polls, failed=True, status_message=message)
        remaining = timeout_s - (clock() - start)
        if remaining <= 0:
            break
        sleep(min(poll_s, remaining))
    return WaitOutcome(state, progress, clock() - start, polls, timed_out=True, status_message=message)
