"""Failure badges belong to the graph that ran: an undo takes the graph back past the edit that
failed, so the red marks of the last run go (the log keeps the message)."""
from __future__ import annotations

from PySide6.QtCore import QObject
from PySide6.QtGui import QUndoStack

from app.canvas.scene import GraphScene


class FailureMarks(QObject):
    def __init__(self, stack: QUndoStack, scene: GraphScene):
        super().__init__(stack)
        self.scene = scene
        self._index = stack.index()
        stack.indexChanged.connect(self._on_index_changed)

    def _on_index_changed(self, index: int) -> None:
        if index < self._index:  # an undo
            self.clear()
        self._index = index

    def clear(self) -> None:
        for item in self.scene.nodes.values():
            if item.state == "failed":
                item.set_state("")
