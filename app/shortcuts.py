"""Keyboard shortcuts in one table, shown by the help overlay (?)."""
from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QKeyEvent, QMouseEvent
from PySide6.QtWidgets import QFrame, QGridLayout, QLabel, QVBoxLayout, QWidget

SHORTCUTS: list[tuple[str, list[tuple[str, str]]]] = [
    ("Canvas", [
        ("Tab / double-click", "Search and add a node at the cursor"),
        ("Wheel", "Zoom around the cursor"),
        ("Middle-drag / Alt+drag", "Pan (or click the minimap)"),
        ("Drag on empty canvas", "Select with a rubber band"),
        ("F", "Frame the selection (or everything)"),
        ("D", "Disable / enable the selected nodes"),
        ("F2 / double-click title", "Rename"),
        ("H", "Collapse / expand"),
        ("Delete", "Delete the selection"),
        ("Ctrl+G", "Put a backdrop around the selection"),
        ("Double-click a link", "Add a reroute dot"),
    ]),
    ("Edit", [
        ("Ctrl+Z / Ctrl+Shift+Z", "Undo / redo"),
        ("Ctrl+C / Ctrl+X / Ctrl+V", "Copy / cut / paste nodes"),
        ("Ctrl+D / Alt+C", "Duplicate (keeps incoming links)"),
        ("Ctrl+A", "Select all"),
    ]),
    ("Run", [
        ("Ctrl+Enter", "Run the graph (again to queue another run)"),
        ("Ctrl+Shift+Enter", "Run up to the selected nodes"),
        ("Esc", "Cancel the run and the queue"),
    ]),
    ("File", [
        ("Ctrl+N / Ctrl+O", "New / open (graph .json or Kiln PNG)"),
        ("Ctrl+S / Ctrl+Shift+S", "Save / save as"),
        ("Drop a file", "Open a graph or a Kiln PNG"),
        ("?", "This help"),
    ]),
]


class ShortcutOverlay(QFrame):
    """A translucent sheet over the window listing every shortcut; any key or click closes it."""

    def __init__(self, parent: QWidget):
        super().__init__(parent)
        self.setObjectName("shortcutOverlay")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(28, 22, 28, 22)
        title = QLabel("Keyboard shortcuts")
        title.setObjectName("nodeHeader")
        layout.addWidget(title)
        grid = QGridLayout()
        grid.setHorizontalSpacing(18)
        grid.setVerticalSpacing(4)
        for column, groups in enumerate([SHORTCUTS[:2], SHORTCUTS[2:]]):
            self._fill_column(grid, column * 2, groups)
        layout.addLayout(grid)
        hint = QLabel("Press any key to close")
        hint.setObjectName("helpText")
        layout.addWidget(hint, 0, Qt.AlignmentFlag.AlignRight)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.hide()

    def _fill_column(self, grid: QGridLayout, column: int, groups: list) -> None:
        row = 0
        for group, rows in groups:
            header = QLabel(f"<b>{group}</b>")
            grid.addWidget(header, row, column, 1, 2)
            row += 1
            for keys, what in rows:
                key_label = QLabel(f"<span style='color:#ffb74d'>{keys}</span>")
                grid.addWidget(key_label, row, column)
                grid.addWidget(QLabel(what), row, column + 1)
                row += 1
            row += 1

    def toggle(self) -> None:
        if self.isVisible():
            self.hide()
            return
        parent = self.parentWidget()
        self.adjustSize()
        self.move((parent.width() - self.width()) // 2, (parent.height() - self.height()) // 2)
        self.raise_()
        self.show()
        self.setFocus()

    def keyPressEvent(self, event: QKeyEvent) -> None:
        self.hide()

    def mousePressEvent(self, event: QMouseEvent) -> None:
        self.hide()
