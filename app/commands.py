"""One QUndoCommand per kind of edit. Each changes the model through the
document's `apply_*` primitives (which then update the views) and can put the
graph back exactly as it was, so undo restores a file byte for byte."""
from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

from PySide6.QtGui import QUndoCommand

from app.document import MISSING, REROUTES_KEY, SEED_CONTROL_KEY, Document, link_key
from engine.graph import Backdrop, Link, Node

PARAM_MERGE_ID = 1001


def _prune_meta(doc: Document) -> dict[str, Any]:
    """Drop reroutes of vanished links and seed modes of vanished nodes.

    Returns the old values of the keys it changed (for undo)."""
    graph = doc.graph
    saved: dict[str, Any] = {}
    live_links = {link_key(lk) for lk in graph.links}
    reroutes = graph.meta.get(REROUTES_KEY)
    if reroutes is not None:
        kept = {k: v for k, v in reroutes.items() if k in live_links}
        if kept != reroutes:
            saved[REROUTES_KEY] = copy.deepcopy(reroutes)
            doc.apply_set_meta(REROUTES_KEY, kept or MISSING)
    seeds = graph.meta.get(SEED_CONTROL_KEY)
    if seeds is not None:
        kept = {k: v for k, v in seeds.items() if k.rsplit(".", 1)[0] in graph.nodes}
        if kept != seeds:
            saved[SEED_CONTROL_KEY] = copy.deepcopy(seeds)
            doc.apply_set_meta(SEED_CONTROL_KEY, kept or MISSING)
    return saved


def _restore_meta(doc: Document, saved: dict[str, Any]) -> None:
    for key, value in saved.items():
        doc.apply_set_meta(key, copy.deepcopy(value))


class AddNodeCommand(QUndoCommand):
    def __init__(self, doc: Document, node: Node, text: str | None = None):
        spec = doc.registry.get(node.type)
        super().__init__(text or f"Add {spec.title if spec else node.type}")
        self.doc, self.node = doc, copy.deepcopy(node)

    def redo(self) -> None:
        self.doc.apply_add_node(copy.deepcopy(self.node))

    def undo(self) -> None:
        self.doc.apply_remove_node(self.node.id)


class RemoveCommand(QUndoCommand):
    """Delete nodes (with their links) and backdrops."""

    def __init__(self, doc: Document, node_ids: Iterable[str], backdrop_ids: Iterable[str] = (),
                 text: str | None = None):
        self.doc = doc
        self.node_ids = [n for n in node_ids if n in doc.graph.nodes]
        self.backdrop_ids = [b for b in backdrop_ids if b in doc.graph.backdrops]
        count = len(self.node_ids) + len(self.backdrop_ids)
        super().__init__(text or f"Delete {count} item{'s' if count != 1 else ''}")
        self.nodes: list[Node] = []
        self.backdrops: list[Backdrop] = []
        self.links: list[Link] = []
        self.saved_meta: dict[str, Any] = {}

    def redo(self) -> None:
        graph = self.doc.graph
        gone = set(self.node_ids)
        self.links = [lk for lk in graph.links if lk.src in gone or lk.dst in gone]
        for link in self.links:
            self.doc.apply_remove_link(link)
        self.nodes = [copy.deepcopy(graph.nodes[n]) for n in self.node_ids]
        self.written_for = graph.base_dir
        for node_id in self.node_ids:
            self.doc.apply_remove_node(node_id)
        self.backdrops = [self.doc.apply_remove_backdrop(b) for b in self.backdrop_ids]
        self.saved_meta = _prune_meta(self.doc)

    def undo(self) -> None:
        for backdrop in self.backdrops:
            self.doc.apply_add_backdrop(backdrop)
        for node in self.nodes:
            params = self.doc.in_current_words(node.type, node.params, self.written_for)
            self.doc.apply_add_node(replace(copy.deepcopy(node), params=copy.deepcopy(params)))
        for link in self.links:
            self.doc.apply_add_link(link)
        _restore_meta(self.doc, self.saved_meta)


class ConnectCommand(QUndoCommand):
    """Connect an output to an input; the link the input had before comes back on undo."""

    def __init__(self, doc: Document, link: Link):
        super().__init__(f"Connect {doc.node_title(link.src)} → {doc.node_title(link.dst)}.{link.dst_socket}")
        self.doc, self.link = doc, link
        self.replaced: Link | None = None
        self.saved_meta: dict[str, Any] = {}

    def redo(self) -> None:
        self.replaced = self.doc.apply_add_link(self.link)
        self.saved_meta = _prune_meta(self.doc)

    def undo(self) -> None:
        self.doc.apply_remove_link(self.link)
        if self.replaced is not None:
            self.doc.apply_add_link(self.replaced)
        _restore_meta(self.doc, self.saved_meta)


class DisconnectCommand(QUndoCommand):
    def __init__(self, doc: Document, link: Link):
        super().__init__(f"Disconnect {doc.node_title(link.dst)}.{link.dst_socket}")
        self.doc, self.link = doc, link
        self.saved_meta: dict[str, Any] = {}

    def redo(self) -> None:
        self.doc.apply_remove_link(self.link)
        self.saved_meta = _prune_meta(self.doc)

    def undo(self) -> None:
        self.doc.apply_add_link(self.link)
        _restore_meta(self.doc, self.saved_meta)


class SetParamCommand(QUndoCommand):
    """Change one param. With `merge`, consecutive changes of the same param
    (typing, dragging a slider) collapse into one undo step."""

    def __init__(self, doc: Document, node_id: str, name: str, value: Any, merge: bool = False,
                 text: str | None = None):
        super().__init__(text or f"Set {doc.node_title(node_id)}.{name}")
        self.doc, self.node_id, self.name = doc, node_id, name
        params = doc.graph.nodes[node_id].params
        self.old = copy.deepcopy(params[name]) if name in params else MISSING
        self.new = copy.deepcopy(value)
        self.merge = merge
        self.written_for = doc.graph.base_dir  # Save As may move the graph before an undo

    def id(self) -> int:
        return PARAM_MERGE_ID  # whether it really merges is decided in mergeWith

    def mergeWith(self, other: QUndoCommand) -> bool:
        if not isinstance(other, SetParamCommand) or not other.merge:
            return False
        if (other.node_id, other.name) != (self.node_id, self.name):
            return False
        self.new = copy.deepcopy(other.new)
        self.setObsolete(self.new == self.old and type(self.new) is type(self.old))
        return True

    def redo(self) -> None:
        self.doc.apply_set_param(self.node_id, self.name, self._in_current_words(self.new))

    def undo(self) -> None:
        self.doc.apply_set_param(self.node_id, self.name, self._in_current_words(self.old))

    def _in_current_words(self, value: Any) -> Any:
        if value is MISSING:
            return MISSING
        node_type = self.doc.graph.nodes[self.node_id].type
        return copy.deepcopy(self.doc.in_current_words(node_type, {self.name: value}, self.written_for)[self.name])


class SetNodeFieldCommand(QUndoCommand):
    """Rename, recolour, disable/enable or collapse nodes."""

    def __init__(self, doc: Document, node_ids: Iterable[str], field_name: str, value: Any, text: str):
        super().__init__(text)
        self.doc, self.field_name, self.value = doc, field_name, value
        self.old = {n: getattr(doc.graph.nodes[n], field_name) for n in node_ids}

    def redo(self) -> None:
        for node_id in self.old:
            self.doc.apply_set_node_field(node_id, self.field_name, self.value)

    def undo(self) -> None:
        for node_id, value in self.old.items():
            self.doc.apply_set_node_field(node_id, self.field_name, value)


class MoveCommand(QUndoCommand):
    """Move nodes, backdrops and reroute dots (positions already shown by the drag)."""

    def __init__(self, doc: Document, nodes: dict[str, tuple[tuple[float, float], tuple[float, float]]],
                 backdrops: dict[str, tuple[tuple, tuple]] | None = None,
                 reroutes: tuple[Any, Any] | None = None, text: str | None = None):
        count = len(nodes) + len(backdrops or {})
        super().__init__(text or (f"Move {count} items" if count != 1 else "Move 1 item"))
        self.doc, self.nodes, self.backdrops, self.reroutes = doc, nodes, backdrops or {}, reroutes

    def _apply(self, which: int) -> None:
        for node_id, positions in self.nodes.items():
            self.doc.apply_move_node(node_id, positions[which])
        for backdrop_id, rects in self.backdrops.items():
            self.doc.apply_set_backdrop(backdrop_id, rect=tuple(rects[which]))
        if self.reroutes is not None:
            self.doc.apply_set_meta(REROUTES_KEY, copy.deepcopy(self.reroutes[which]))

    def redo(self) -> None:
        self._apply(1)

    def undo(self) -> None:
        self._apply(0)


class AddBackdropCommand(QUndoCommand):
    def __init__(self, doc: Document, backdrop: Backdrop, text: str = "Add backdrop"):
        super().__init__(text)
        self.doc, self.backdrop = doc, backdrop

    def redo(self) -> None:
        self.doc.apply_add_backdrop(copy.deepcopy(self.backdrop))

    def undo(self) -> None:
        self.doc.apply_remove_backdrop(self.backdrop.id)


class SetBackdropCommand(QUndoCommand):
    """Retitle, recolour or resize a backdrop."""

    def __init__(self, doc: Document, backdrop_id: str, text: str, **fields: Any):
        super().__init__(text)
        old = doc.graph.backdrops[backdrop_id]
        self.doc, self.backdrop_id = doc, backdrop_id
        self.new = fields
        self.old = {k: getattr(old, k) for k in fields}

    def redo(self) -> None:
        self.doc.apply_set_backdrop(self.backdrop_id, **self.new)

    def undo(self) -> None:
        self.doc.apply_set_backdrop(self.backdrop_id, **self.old)


class SetMetaCommand(QUndoCommand):
    """Change one graph.meta entry (reroute dots, seed modes); MISSING removes it."""

    def __init__(self, doc: Document, key: str, value: Any, text: str):
        super().__init__(text)
        self.doc, self.key = doc, key
        self.old = copy.deepcopy(doc.graph.meta.get(key, MISSING))
        self.new = copy.deepcopy(value)

    def redo(self) -> None:
        self.doc.apply_set_meta(self.key, copy.deepcopy(self.new))

    def undo(self) -> None:
        self.doc.apply_set_meta(self.key, copy.deepcopy(self.old))


class ReplaceGraphCommand(QUndoCommand):
    """Swap in a whole graph (restoring one from the result history)."""

    def __init__(self, doc: Document, graph: Any, text: str):
        super().__init__(text)
        self.doc, self.old, self.new = doc, doc.graph.copy(), graph.copy()

    def redo(self) -> None:
        self.doc.apply_replace_graph(self.new.copy())

    def undo(self) -> None:
        self.doc.apply_replace_graph(self.old.copy())
