"""How far the running job is, tallied from its engine events (no Qt, no polling)."""
from __future__ import annotations

from typing import Any


class RunProgress:
    """Nodes finished out of those planned, plus the running node's share of its steps."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.planned = 0
        self.done = 0
        self.step_fraction = 0.0
        self.node_id: str | None = None  # the node running now

    def update(self, event: Any) -> bool:
        """Take one engine event; True when it moved the progress or the running node."""
        kind = event.kind
        if kind == "run_started":
            self.reset()
        elif kind == "queued":
            self.planned += 1
        elif kind == "started":
            self.node_id, self.step_fraction = event.node_id, 0.0
        elif kind == "progress":
            self.node_id = event.node_id
            self.step_fraction = event.step / max(1, event.total)
        elif kind == "finished":
            self.done += 1
            self.node_id, self.step_fraction = None, 0.0
        else:
            return False
        return True

    @property
    def fraction(self) -> float:
        """0..1 over the whole run."""
        return min(1.0, (self.done + self.step_fraction) / max(1, self.planned))
