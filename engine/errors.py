"""Errors a user can cause, each naming the file, node or parameter involved."""
from __future__ import annotations

from dataclasses import dataclass


class KilnError(Exception):
    """Base of every error meant for the user: its str() is a one-line message."""


class GraphFileError(KilnError):
    """A graph file (or PNG) that cannot be read: malformed, foreign or newer."""

    def __init__(self, path: str, message: str):
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


@dataclass(frozen=True)
class Issue:
    """One validation problem, against a node (and param/socket) where there is one."""

    kind: str  # unknown_type | missing_input | type_mismatch | bad_param | cycle | bad_link | ...
    message: str
    node_id: str | None = None
    param: str | None = None
    socket: str | None = None

    def __str__(self) -> str:
        where = f"node {self.node_id!r}" if self.node_id else "graph"
        if self.param:
            where += f", param {self.param!r}"
        elif self.socket:
            where += f", input {self.socket!r}"
        return f"{where}: {self.message}"


class ValidationError(KilnError):
    def __init__(self, issues: list[Issue]):
        self.issues = list(issues)
        super().__init__("; ".join(str(i) for i in self.issues))


class NodeError(KilnError):
    """A node failed while running. `node_id` says which; the message says why.

    `details` holds the traceback of an unexpected exception (for the log panel).
    """

    details: str = ""

    def __init__(self, node_id: str, message: str, param: str | None = None):
        self.node_id = node_id
        self.param = param
        self.message = message
        where = f"node {node_id!r}" + (f", param {param!r}" if param else "")
        super().__init__(f"{where}: {message}")


class UserInputError(KilnError):
    """Raised by a node's compute for bad input; the executor wraps it in NodeError.

    `param` names the offending param when there is one.
    """

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.param = param


class Cancelled(KilnError):
    """The user stopped the run."""

    def __init__(self, message: str = "cancelled by the user"):
        super().__init__(message)
