"""Opens the drawing editors of nodes (Mask Painter, Layout Editor, Semantic Painter) and feeds
each the picture it draws over.

The picture is the last one made by the node wired to the editor's image input. When no run
has made it yet, a run of just the nodes up to that one is queued on the runner (the engine
and torch stay on its worker thread) and the picture goes into the open editor when it
arrives. Meanwhile the editor says so and can be used on its blank canvas.
"""
from __future__ import annotations

from typing import Any

from PySide6.QtCore import QObject
from PySide6.QtWidgets import QWidget

from app.document import Document
from app.editing import Editor
from app.editors import declared_editor
from app.run_control import RunControl
from app.runner import JobResult, Runner
from engine import paths
from engine.spec import NodeSpec

COMPUTING = "Computing the picture to paint over… (you can start painting already)"


class NodeEditors(QObject):
    def __init__(self, doc: Document, editor: Editor, runner: Runner, run_control: RunControl,
                 parent: QWidget):
        super().__init__(parent)
        self.doc, self.editor, self.runner, self.run_control = doc, editor, runner, run_control
        self.window = parent
        self.waiting: dict[int, tuple[Any, str]] = {}  # job id -> (open editor dialog, node making its picture)
        run_control.result_ready.connect(self._on_result)

    def open(self, node_id: str) -> Any:
        """Open the node's editor (window-modal, not blocking); OK applies it as one undo step.

        Returns the dialog, or None when the node has no editor."""
        from app.editors import create_editor

        spec = self.spec_with_editor(node_id)
        if spec is None:
            return None
        node = self.doc.graph.nodes[node_id]
        # a mask or label file is read where the graph says it is
        params = paths.resolve_params(spec, {**spec.default_params(), **node.params}, self.doc.graph.base_dir)
        source = self.picture_source(node_id)
        picture = self.known_picture(source)
        dialog = create_editor(spec.editor, params, picture, self.window)
        dialog.accepted.connect(lambda: self.apply(node_id, dialog.result_params()))
        dialog.finished.connect(lambda _result: self._forget(dialog))
        dialog.finished.connect(dialog.deleteLater)
        if picture is None and source is not None:
            self._compute_picture(dialog, source)
        dialog.open()
        return dialog

    def spec_with_editor(self, node_id: str) -> NodeSpec | None:
        """The node's spec when it declares a drawing editor, else None."""
        node = self.doc.graph.nodes.get(node_id)
        spec = self.doc.registry.get(node.type) if node is not None else None
        return spec if declared_editor(spec) is not None else None

    def picture_source(self, node_id: str) -> str | None:
        """The node wired to the input the editor paints over (`NodeSpec.paints_over`), if any."""
        spec = self.doc.registry.get(self.doc.graph.nodes[node_id].type)
        if spec is None or spec.paints_over is None:
            return None
        link = self.doc.graph.incoming(node_id).get(spec.paints_over)
        return link.src if link is not None and link.src in self.doc.graph.nodes else None

    def known_picture(self, source: str | None) -> Any:
        """The source's last picture as uint8 (H, W, 3), or None when no run made one yet."""
        entry = self.run_control.node_images.get(source) if source is not None else None
        return entry.pixels if entry is not None else None

    def _compute_picture(self, dialog: Any, source: str) -> None:
        label = f"Picture for {self.doc.node_title(source)}"
        job = self.runner.submit(self.doc.graph, targets=[source], label=label)
        self.waiting[job.id] = (dialog, source)
        dialog.status.setText(COMPUTING)

    def _on_result(self, result: JobResult) -> None:
        dialog, source = self.waiting.pop(result.job.id, (None, ""))
        if dialog is None:
            return
        pictures = result.images.get(source)
        if pictures:
            dialog.set_picture(pictures[0].rgb)
            dialog.status.setText(f"Painting over the picture of {self.doc.node_title(source)}.")
        elif result.cancelled:
            dialog.status.setText("The picture was not computed (the run was cancelled): a blank canvas.")
        else:
            why = result.error_message or "that node made no picture"
            dialog.status.setText(f"Could not compute the picture ({why}): a blank canvas.")

    def _forget(self, dialog: Any) -> None:
        self.waiting = {job: entry for job, entry in self.waiting.items() if entry[0] is not dialog}

    def apply(self, node_id: str, params: dict) -> None:
        """The editor's params, changed ones only, as one undo step named after the node."""
        if node_id not in self.doc.graph.nodes:
            return
        changed = {k: v for k, v in params.items() if self.doc.param_value(node_id, k) != v}
        if not changed:
            return
        stack = self.doc.undo_stack
        stack.beginMacro(f"Edit {self.doc.node_title(node_id)}")
        for name, value in changed.items():
            self.editor.set_param(node_id, name, value)
        stack.endMacro()
