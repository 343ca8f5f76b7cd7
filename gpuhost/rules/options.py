"""What a check asks of the rules beyond the facts: thresholds and the identity containers run as."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class RunAs:
    """An identity a container would run with: uid, primary gid and supplementary gids."""

    uid: int
    gids: list[int] = field(default_factory=list)

    @classmethod
    def parse(cls, text: str) -> RunAs:
        """Parse `UID[:GID[,GID...]]`, e.g. `1000:1000,44`."""
        uid_text, _, gid_text = text.partition(":")
        try:
            uid = int(uid_text)
            gids = [int(g) for g in gid_text.split(",") if g.strip()] if gid_text else []
        except ValueError as exc:
            raise ValueError(f"--run-as expects UID[:GID[,GID...]] with numbers, got {text!r}") from exc
        return cls(uid=uid, gids=gids)


@dataclass
class RuleOptions:
    min_free_gib: float = 20.0
    run_as: RunAs | None = None
