"""What a check asks of the rules beyond the facts: thresholds and the identity containers run as."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# uid_t and gid_t are 32-bit; 4294967295 is (uid_t)-1, "no id", which chown and setuid reserve.
MAX_ID = 4294967294
_ID = re.compile(r"[0-9]{1,10}")
RUN_AS_FORM = "--run-as expects UID[:GID[,GID...]], each a number from 0 to 4294967294"


@dataclass
class RunAs:
    """An identity a container would run with: uid, primary gid and supplementary gids."""

    uid: int
    gids: list[int] = field(default_factory=list)

    @classmethod
    def parse(cls, text: str) -> RunAs:
        """Parse `UID[:GID[,GID...]]`, e.g. `1000:1000,44`."""
        uid_text, colon, gid_text = text.partition(":")
        items = [uid_text, *(gid_text.split(",") if colon else [])]
        ids = []
        for item in items:
            if not _ID.fullmatch(item) or int(item) > MAX_ID:
                what = "an empty item" if not item else repr(item)
                raise ValueError(f"{RUN_AS_FORM}; {what} in {text!r} is not one")
            ids.append(int(item))
        return cls(uid=ids[0], gids=ids[1:])


@dataclass
class RuleOptions:
    min_free_gib: float = 20.0
    run_as: RunAs | None = None
