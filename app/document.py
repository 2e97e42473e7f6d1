"""The open graph: the model, its undo stack, file path, dirty flag and autosave.

Every edit goes through a command (app.commands) that calls the `apply_*`
primitives below; each primitive changes the model and then emits a signal
that the canvas and panels follow. Nothing else writes to `graph`.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import replace
from typing import Any

from PySide6.QtCore import QObject, QTimer, Signal
from PySide6.QtGui import QUndoStack

from engine import atomic
from engine.comfy.importer import ComfyReport
from engine.errors import GraphFileError, KilnError
from engine.graph import Backdrop, Graph, Link, Node
from engine.spec import NodeRegistry


class _Missing:
    """Marks a param or meta key that is absent (undo removes it rather than setting a value)."""

    def __repr__(self) -> str:
        return "MISSING"

    def __copy__(self) -> _Missing:
        return self

    def __deepcopy__(self, memo: dict) -> _Missing:
        return self


MISSING: Any = _Missing()
REROUTES_KEY = "reroutes"  # graph.meta[REROUTES_KEY] = {link_key: [[x, y], ...]}
SEED_CONTROL_KEY = "seed_control"  # graph.meta[SEED_CONTROL_KEY] = {"node.param": mode}
RECOVERY_FORMAT = "kiln.recovery"


def link_key(link: Link) -> str:
    return f"{link.src}.{link.src_socket}>{link.dst}.{link.dst_socket}"


class Document(QObject):
    node_added = Signal(str)
    node_removed = Signal(str)
    node_changed = Signal(str)  # title, colour, disabled, collapsed or params
    param_changed = Signal(str, str)  # node id, param name
    node_moved = Signal(str)
    link_added = Signal(object)  # Link
    link_removed = Signal(object)
    backdrop_added = Signal(str)
    backdrop_removed = Signal(str)
    backdrop_changed = Signal(str)
    meta_changed = Signal(str)  # key
    graph_reset = Signal()  # the whole graph was replaced
    changed = Signal()  # any edit, undo or redo
    dirty_changed = Signal(bool)
    path_changed = Signal(str)
    replaced = Signal()  # another document: opened, new or recovered (set_graph)

    def __init__(self, registry: NodeRegistry, parent: QObject | None = None):
        super().__init__(parent)
        self.registry = registry
        self.graph = Graph()
        self.path: str | None = None
        self.template: str | None = None  # the shipped example this unsaved graph was opened from
        self.undo_stack = QUndoStack(self)
        self.undo_stack.cleanChanged.connect(self._on_clean_changed)
        self.undo_stack.indexChanged.connect(self._on_index_changed)

    def _on_clean_changed(self, clean: bool) -> None:
        self.dirty_changed.emit(not clean)

    def _on_index_changed(self, _index: int) -> None:
        self.changed.emit()

    # --- file ----------------------------------------------------------------
    @property
    def dirty(self) -> bool:
        return not self.undo_stack.isClean()

    def display_name(self) -> str:
        if self.path:
            return os.path.basename(self.path)
        return f"{os.path.basename(self.template)} (example)" if self.template else "untitled"

    def new(self) -> None:
        self.set_graph(Graph(), None)

    def open(self, path: str, as_template: bool = False, comfy: ComfyReport | None = None) -> None:
        """Load a .json graph or a Kiln PNG; raises GraphFileError (KilnError) with a clear line.

        `as_template`: a shipped example, opened as an unsaved copy (Save asks for a new name).
        A ComfyUI file is converted, its node types Kiln lacks kept as marked placeholders; `comfy`
        is filled with what the conversion did, and Save asks for a new name (never over the workflow)."""
        from engine import graph_file

        if not os.path.exists(path):
            raise GraphFileError(path, "no such file")
        comfy = comfy if comfy is not None else ComfyReport()
        graph = graph_file.load(path, comfy=comfy, lenient=True)
        is_png = path.lower().endswith(".png")
        # A PNG holds a picture, not an editable graph file: saving must ask for a new name.
        own_file = not (is_png or as_template or comfy.converted)
        self.set_graph(graph, os.path.abspath(path) if own_file else None,
                       template=os.path.abspath(path) if as_template else None)

    def save(self, path: str | None = None) -> str:
        target = path or self.path
        if not target:
            raise KilnError("choose a file name first (Save As)")
        self._save_rebased(target)
        self.path = os.path.abspath(target)
        self.template = None
        self.undo_stack.setClean()
        self.path_changed.emit(self.path)
        return self.path

    def _save_rebased(self, target: str) -> None:
        """Write the graph with its file paths relative to the target's folder where they can be
        (engine.paths.rebase); the open graph takes the same words only once the file is written."""
        from engine import graph_file, paths

        folder = os.path.dirname(os.path.abspath(target))
        saved = self.graph.copy()
        changed = paths.rebase(saved, self.registry, folder)
        graph_file.save(saved, target)
        self.graph.base_dir = folder
        for node_id, name in changed:
            self.graph.nodes[node_id].params[name] = saved.nodes[node_id].params[name]
            self.param_changed.emit(node_id, name)

    def set_graph(self, graph: Graph, path: str | None, clean: bool = True, template: str | None = None) -> None:
        """Replace the document (open/new/recover); not undoable, clears the history."""
        self.graph = graph
        self.path, self.template = path, template
        self.undo_stack.clear()
        self.graph_reset.emit()
        self.replaced.emit()
        if clean:
            self.undo_stack.setClean()
        else:
            self.undo_stack.resetClean()
        self.path_changed.emit(path or "")
        self.dirty_changed.emit(self.dirty)
        self.changed.emit()

    def dumps(self) -> str:
        from engine import graph_file

        return graph_file.dumps(self.graph)

    # --- primitives (commands only) ------------------------------------------
    def apply_add_node(self, node: Node) -> None:
        self.graph.add_node(node)
        self.node_added.emit(node.id)

    def apply_remove_node(self, node_id: str) -> Node:
        """Remove a node and its links (the caller records them first for undo)."""
        for link in self.graph.outgoing(node_id) + list(self.graph.incoming(node_id).values()):
            self.apply_remove_link(link)
        node, _ = self.graph.remove_node(node_id)
        self.node_removed.emit(node_id)
        return node

    def apply_add_link(self, link: Link) -> Link | None:
        replaced = self.graph.incoming(link.dst).get(link.dst_socket)
        if replaced is not None:
            self.apply_remove_link(replaced)
        self.graph.links.append(link)
        self.link_added.emit(link)
        return replaced

    def apply_remove_link(self, link: Link) -> None:
        self.graph.disconnect(link)
        self.link_removed.emit(link)

    def apply_set_param(self, node_id: str, name: str, value: Any) -> None:
        params = self.graph.nodes[node_id].params
        if value is MISSING:
            params.pop(name, None)
        else:
            params[name] = value
        self.param_changed.emit(node_id, name)
        self.node_changed.emit(node_id)

    def apply_set_node_field(self, node_id: str, field_name: str, value: Any) -> None:
        setattr(self.graph.nodes[node_id], field_name, value)
        self.node_changed.emit(node_id)

    def apply_move_node(self, node_id: str, pos: tuple[float, float]) -> None:
        self.graph.nodes[node_id].pos = (float(pos[0]), float(pos[1]))
        self.node_moved.emit(node_id)

    def apply_add_backdrop(self, backdrop: Backdrop) -> None:
        self.graph.backdrops[backdrop.id] = backdrop
        self.backdrop_added.emit(backdrop.id)

    def apply_remove_backdrop(self, backdrop_id: str) -> Backdrop:
        backdrop = self.graph.backdrops.pop(backdrop_id)
        self.backdrop_removed.emit(backdrop_id)
        return backdrop

    def apply_set_backdrop(self, backdrop_id: str, **fields: Any) -> None:
        old = self.graph.backdrops[backdrop_id]
        self.graph.backdrops[backdrop_id] = replace(old, **fields)
        self.backdrop_changed.emit(backdrop_id)

    def apply_set_meta(self, key: str, value: Any) -> None:
        if value is MISSING:
            self.graph.meta.pop(key, None)
        else:
            self.graph.meta[key] = value
        self.meta_changed.emit(key)

    def apply_replace_graph(self, graph: Graph) -> None:
        self.graph = graph
        self.graph_reset.emit()

    # --- queries --------------------------------------------------------------
    def in_current_words(self, node_type: str, params: dict[str, Any], written_for: str | None) -> dict[str, Any]:
        """Params recorded while the graph lived in folder `written_for`, with their file paths
        in the words of its folder now (an undo after Save As into another folder)."""
        from engine import paths

        spec = self.registry.get(node_type)
        if spec is None or written_for == self.graph.base_dir:
            return params
        return paths.reword_params(spec, params, written_for, self.graph.base_dir)

    def param_value(self, node_id: str, name: str) -> Any:
        node = self.graph.nodes[node_id]
        if name in node.params:
            return node.params[name]
        spec = self.registry.get(node.type)
        param = spec.param(name) if spec else None
        return param.default if param else None

    def reroutes(self) -> dict[str, list[list[float]]]:
        return dict(self.graph.meta.get(REROUTES_KEY, {}))

    def seed_mode(self, node_id: str, param: str) -> str:
        return self.graph.meta.get(SEED_CONTROL_KEY, {}).get(f"{node_id}.{param}", "fixed")

    def node_title(self, node_id: str) -> str:
        node = self.graph.nodes[node_id]
        spec = self.registry.get(node.type)
        return node.title or (spec.title if spec else node.type)


class Autosaver(QObject):
    """Writes the graph to a recovery file after a few seconds without edits, and at
    least every ``max_wait_ms`` while edits keep coming (the idle timer restarts on
    every edit; the deadline does not), so continuous editing loses at most that much.

    A clean document (saved, or never edited) has no recovery file; a clean exit
    removes it, so a file left behind at start-up means the last session crashed.
    """

    saved = Signal(str)

    def __init__(self, document: Document, recovery_path: str, idle_ms: int = 3000, max_wait_ms: int = 5000):
        super().__init__(document)
        self.document = document
        self.recovery_path = recovery_path
        self.timer = QTimer(self, singleShot=True, interval=idle_ms)
        self.timer.timeout.connect(self.save_now)
        self.deadline = QTimer(self, singleShot=True, interval=max_wait_ms)
        self.deadline.timeout.connect(self.save_now)
        document.changed.connect(self._on_changed)

    def _on_changed(self) -> None:
        """Restart the idle delay; start the deadline only if no save is already due."""
        self.timer.start()
        if not self.deadline.isActive():
            self.deadline.start()

    def save_now(self) -> None:
        self.timer.stop()
        self.deadline.stop()
        if not self.document.dirty:
            self.discard()
            return
        from engine import graph_file

        data = {"format": RECOVERY_FORMAT, "path": self.document.path, "time": time.time(),
                "base_dir": self.document.graph.base_dir,
                "graph": graph_file.graph_to_dict(self.document.graph)}
        os.makedirs(os.path.dirname(self.recovery_path) or ".", exist_ok=True)
        atomic.write_text(self.recovery_path, json.dumps(data, sort_keys=True))
        self.saved.emit(self.recovery_path)

    def discard(self) -> None:
        self.timer.stop()
        self.deadline.stop()
        if os.path.exists(self.recovery_path):
            os.remove(self.recovery_path)


def read_recovery(path: str) -> tuple[Graph, str | None] | None:
    """The graph and original file path from a recovery file, or None if unusable."""
    from engine import graph_file

    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        if data.get("format") != RECOVERY_FORMAT:
            return None
        graph = graph_file.graph_from_dict(data["graph"], path)
        base_dir = data.get("base_dir")
        graph.base_dir = base_dir if isinstance(base_dir, str) else None
        return graph, data.get("path")
    except (OSError, ValueError, KeyError, KilnError):
        return None
