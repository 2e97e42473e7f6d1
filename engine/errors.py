"""Errors a user can cause, each naming the file, node or parameter involved."""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

_BIG_INT_BITS = 4096  # repr() of a larger int is refused (or slow): say how many digits instead


def clip(text: str, limit: int = 60) -> str:
    """`text` itself when short, else its first `limit` characters and how many are left out."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text) - limit} more characters)"


def quote(value: Any, limit: int = 60) -> str:
    """`value` quoted for a message (as repr writes it), shortened when it is long:
    'abc'… (N more characters). Never fails and never runs long, whatever `value` is."""
    if isinstance(value, str):
        if len(value) <= limit:
            return repr(value)
        return f"{repr(value[:limit])[:2 * limit]}… ({len(value) - limit} more characters)"
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > _BIG_INT_BITS:
        return f"an integer of about {int(value.bit_length() * 0.30103)} digits"
    try:
        return clip(repr(value), limit)
    except (RecursionError, ValueError):
        return f"a {type(value).__name__} too large to show"


def quote_list(items: Iterable[Any], limit: int = 8, each: Callable[[Any], str] | None = None) -> str:
    """The first `limit` items, comma-separated, each quoted (or shown by `each`), then
    "… (N more)" when there are more."""
    items = list(items)
    show = each or (lambda item: quote(item, 30))
    text = ", ".join(show(item) for item in items[:limit])
    return text + (f", … ({len(items) - limit} more)" if len(items) > limit else "")


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
    members: tuple[str, ...] = ()  # the other nodes it is about (a cycle's), for badging them all

    def node_ids(self) -> tuple[str, ...]:
        """Every node this issue is about: `node_id` first, then `members`."""
        first = (self.node_id,) if self.node_id else ()
        return first + tuple(m for m in self.members if m != self.node_id)

    def __str__(self) -> str:
        where = f"node {quote(self.node_id)}" if self.node_id else "graph"
        if self.param:
            where += f", param {quote(self.param)}"
        elif self.socket:
            where += f", input {quote(self.socket)}"
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
        where = f"node {quote(node_id)}" + (f", param {quote(param)}" if param else "")
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
