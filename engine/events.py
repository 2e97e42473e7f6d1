"""Events the executor reports while a graph runs. No Qt, no torch.

Each event is a small frozen dataclass; `kind` names it in snake case so a
listener can dispatch on a string ("progress") as well as on the class.
The GUI receives them on its worker thread and re-emits them as Qt signals.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar


@dataclass(frozen=True)
class Event:
    kind: ClassVar[str] = "event"


@dataclass(frozen=True)
class RunStarted(Event):
    kind: ClassVar[str] = "run_started"
    nodes: tuple[str, ...] = ()  # the node ids this run covers, in execution order


@dataclass(frozen=True)
class Queued(Event):
    """The node will run (its result is not in the cache)."""

    kind: ClassVar[str] = "queued"
    node_id: str


@dataclass(frozen=True)
class Started(Event):
    kind: ClassVar[str] = "started"
    node_id: str


@dataclass(frozen=True)
class Progress(Event):
    kind: ClassVar[str] = "progress"
    node_id: str
    step: int
    total: int
    preview: Any = None  # uint8 numpy array (H, W, 3) or None


@dataclass(frozen=True)
class Cached(Event):
    """The node's result is up to date: it comes from the cache and the node does not run."""

    kind: ClassVar[str] = "cached"
    node_id: str


@dataclass(frozen=True)
class Finished(Event):
    kind: ClassVar[str] = "finished"
    node_id: str
    seconds: float


@dataclass(frozen=True)
class Failed(Event):
    kind: ClassVar[str] = "failed"
    node_id: str
    message: str


@dataclass(frozen=True)
class FileWritten(Event):
    """A side-effect node wrote a file (e.g. SaveImage)."""

    kind: ClassVar[str] = "file_written"
    node_id: str
    path: str


@dataclass(frozen=True)
class RunFinished(Event):
    kind: ClassVar[str] = "run_finished"
    ok: bool
    cancelled: bool
    seconds: float


EventCallback = Callable[[Event], None]
