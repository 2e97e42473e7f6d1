"""The LayoutEditor editor: draw, move, resize and label boxes over a canvas or picture.

Drag on empty canvas to draw a box, drag a box to move it, drag a corner of the selected
box to resize it. Edges snap to a 1/64 grid (toggle). Arrows nudge the selected box
(Shift: 8 steps), Delete removes it. The table shows exact normalised coordinates and
takes typed values. Every change is one step on the editor's undo stack.
"""
from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QBrush, QColor, QFont, QKeyEvent, QPen
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QGraphicsItem,
    QGraphicsRectItem,
    QGraphicsSimpleTextItem,
    QHeaderView,
    QLabel,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QWidget,
)

from app.editors.canvas import EditorDialog, form_row
from engine import drawing
from engine.layout import LayoutBox, LayoutError
from nodes.layout_nodes import VOCABULARIES

CANVAS_SIDE = 512  # the blank canvas; boxes are normalised, so only the shape matters
HANDLE_PX = 9  # corner handles, in screen pixels
CLICK_PX = 3  # a press and release closer than this is a click, not a drawn box
COLUMNS = ("Label", "x0", "y0", "x1", "y1")


def params_holding(boxes: list[dict]) -> dict:
    """The params of a layout node that holds `boxes`: in the shapes world's words when every label is."""
    vocabulary = VOCABULARIES[0] if all(item.get("label") in drawing.LAYOUT_LABELS for item in boxes) \
        else VOCABULARIES[1]
    return {"boxes": [dict(item) for item in boxes], "labels": vocabulary}


class LayoutEditorDialog(EditorDialog):
    def __init__(self, params: dict, image: np.ndarray | None = None, parent: QWidget | None = None):
        super().__init__("Layout Editor", params, parent, panel_width=440)
        height, width = image.shape[:2] if image is not None else (CANVAS_SIDE, CANVAS_SIDE)
        self.canvas_size = (width, height)
        self.boxes = self._initial_boxes(self.params.get("boxes", []))
        self.selected: int | None = None
        self.snap_enabled = True
        self._drag: dict[str, Any] | None = None
        self._syncing = False
        self.add_background(image, width, height)
        self._items: list[QGraphicsItem] = []
        self._build_panel()
        self._sync()

    def _initial_boxes(self, raw: Any) -> list[dict]:
        """The saved boxes engine.layout accepts; the others are left out, the first one's problem shown."""
        boxes, problems = [], []
        for number, item in enumerate(raw if isinstance(raw, list) else [], 1):
            try:
                boxes.append(LayoutBox.from_json(item, number).to_json())
            except LayoutError as exc:
                problems.append(str(exc))
        if problems:
            self.status.setText(f"Left out {len(problems)} saved box(es) Kiln cannot use: {problems[0]}.")
        return boxes

    # --- model -------------------------------------------------------------------
    def set_boxes(self, boxes: list[dict]) -> None:
        self.boxes = boxes
        if self.selected is not None and self.selected >= len(boxes):
            self.selected = len(boxes) - 1 if boxes else None
        self._sync()

    def _commit(self, text: str, before: list[dict], merge_key: str = "") -> None:
        if before != self.boxes:
            self.push(text, self.set_boxes, before, copy.deepcopy(self.boxes), merge_key)

    def select(self, index: int | None) -> None:
        self.selected = index
        if index is not None:
            self._show_label(self.boxes[index]["label"])
        self._sync()

    def result_params(self) -> dict:
        params = dict(self.params)
        params["boxes"] = copy.deepcopy(self.boxes)
        params["labels"] = self.vocabulary_combo.currentText()
        return params

    def current_label(self) -> str:
        return " ".join(self.label_combo.currentText().split()) or drawing.LAYOUT_LABELS[0]

    def set_label(self, label: str) -> None:
        """Label for new boxes, and for the selected box (one undo step while typing)."""
        label = " ".join(label.split())
        if self._syncing or not label or self.selected is None or self.boxes[self.selected]["label"] == label:
            return
        before = copy.deepcopy(self.boxes)
        self.boxes[self.selected]["label"] = label
        self._sync()
        self._commit("Label", before, merge_key=f"label {self.selected}")

    def delete_selected(self) -> None:
        if self.selected is None:
            return
        before = copy.deepcopy(self.boxes)
        del self.boxes[self.selected]
        self.selected = None
        self._sync()
        self._commit("Delete box", before)

    def nudge(self, dx: int, dy: int) -> None:
        """Move the selected box by dx, dy steps (a grid cell, or a canvas pixel without snapping)."""
        if self.selected is None:
            return
        step = 1 / drawing.LAYOUT_GRID if self.snap_enabled else 1 / max(self.canvas_size)
        before = copy.deepcopy(self.boxes)
        x0, y0, x1, y1 = self.boxes[self.selected]["box"]
        sx = min(max(dx * step, -x0), 1 - x1)
        sy = min(max(dy * step, -y0), 1 - y1)
        self.boxes[self.selected]["box"] = [x0 + sx, y0 + sy, x1 + sx, y1 + sy]
        self._sync()
        self._commit("Nudge", before, merge_key=f"nudge {self.selected}")

    # --- geometry ------------------------------------------------------------------
    def _norm(self, pos: QPointF, snap: bool = True) -> tuple[float, float]:
        w, h = self.canvas_size
        x, y = min(max(pos.x() / w, 0.0), 1.0), min(max(pos.y() / h, 0.0), 1.0)
        if snap and self.snap_enabled:
            return drawing.snap(x), drawing.snap(y)
        return x, y

    def _min_size(self) -> float:
        return 1 / drawing.LAYOUT_GRID if self.snap_enabled else 1 / max(self.canvas_size)

    def _scene_rect(self, box: list[float]) -> QRectF:
        w, h = self.canvas_size
        x0, y0, x1, y1 = box
        return QRectF(x0 * w, y0 * h, (x1 - x0) * w, (y1 - y0) * h)

    def _box_at(self, pos: QPointF) -> int | None:
        for index in reversed(range(len(self.boxes))):  # the last drawn is on top
            if self._scene_rect(self.boxes[index]["box"]).contains(pos):
                return index
        return None

    def _corner_at(self, pos: QPointF) -> tuple[float, float] | None:
        """The opposite (fixed) corner when pos is on a corner handle of the selected box."""
        if self.selected is None:
            return None
        x0, y0, x1, y1 = self.boxes[self.selected]["box"]
        w, h = self.canvas_size
        reach = HANDLE_PX / self.view.zoom()
        for (cx, cy), opposite in (((x0, y0), (x1, y1)), ((x1, y0), (x0, y1)),
                                   ((x0, y1), (x1, y0)), ((x1, y1), (x0, y0))):
            if abs(pos.x() - cx * w) <= reach and abs(pos.y() - cy * h) <= reach:
                return opposite
        return None

    def _span(self, anchor: tuple[float, float], point: tuple[float, float]) -> list[float]:
        """The box between a fixed corner and the pointer, at least the minimum size."""
        size = self._min_size()
        coords = []
        for a, p in zip(anchor, point):
            if abs(p - a) < size:
                p = a + size if a + size <= 1.0 else a - size
            coords.append((min(a, p), max(a, p)))
        (x0, x1), (y0, y1) = coords
        return [x0, y0, x1, y1]

    # --- mouse (Tool) --------------------------------------------------------------------
    def press(self, pos: QPointF, modifiers: Qt.KeyboardModifier) -> None:
        self.view.setFocus()
        before = copy.deepcopy(self.boxes)
        anchor = self._corner_at(pos)
        hit = self._box_at(pos) if anchor is None else self.selected
        self._drag = {"before": before, "press": pos, "moved": False}
        if anchor is not None:
            self._drag.update(mode="resize", anchor=anchor)
        elif hit is not None:
            x0, y0 = self.boxes[hit]["box"][:2]
            px, py = self._norm(pos, snap=False)
            self._drag.update(mode="move", offset=(px - x0, py - y0))
            self.select(hit)
        elif not self.scene.sceneRect().contains(pos):  # outside the canvas: deselect only
            self._drag.update(mode="none")
            self.select(None)
        else:
            start = self._norm(pos)
            self.boxes.append({"label": self.current_label(), "box": self._span(start, start)})
            self._drag.update(mode="draw", anchor=start)
            self.select(len(self.boxes) - 1)

    def drag(self, pos: QPointF, modifiers: Qt.KeyboardModifier) -> None:
        if self._drag is None or self.selected is None or self._drag["mode"] == "none":
            return
        moved = pos - self._drag["press"]
        if math.hypot(moved.x(), moved.y()) * self.view.zoom() >= CLICK_PX:
            self._drag["moved"] = True
        if not self._drag["moved"]:
            return
        box = self.boxes[self.selected]
        if self._drag["mode"] == "move":
            box["box"] = self._moved(box["box"], pos)
        else:
            box["box"] = self._span(self._drag["anchor"], self._norm(pos))
        self._sync()

    def _moved(self, box: list[float], pos: QPointF) -> list[float]:
        x0, y0, x1, y1 = box
        px, py = self._norm(pos, snap=False)
        nx, ny = px - self._drag["offset"][0], py - self._drag["offset"][1]
        if self.snap_enabled:
            nx, ny = drawing.snap(nx), drawing.snap(ny)
        nx = min(max(nx, 0.0), 1.0 - (x1 - x0))
        ny = min(max(ny, 0.0), 1.0 - (y1 - y0))
        return [nx, ny, nx + (x1 - x0), ny + (y1 - y0)]

    def release(self, pos: QPointF, modifiers: Qt.KeyboardModifier) -> None:
        if self._drag is None:
            return
        self.drag(pos, modifiers)
        drag, self._drag = self._drag, None
        if drag["mode"] == "none":
            return
        if drag["mode"] == "draw" and not drag["moved"]:  # a click on empty canvas: deselect
            self.boxes = drag["before"]
            self.select(None)
            return
        texts = {"draw": "Draw box", "move": "Move box", "resize": "Resize box"}
        self._commit(texts[drag["mode"]], drag["before"])

    def key(self, event: QKeyEvent) -> bool:
        steps = 8 if event.modifiers() & Qt.KeyboardModifier.ShiftModifier else 1
        arrows = {Qt.Key.Key_Left: (-steps, 0), Qt.Key.Key_Right: (steps, 0),
                  Qt.Key.Key_Up: (0, -steps), Qt.Key.Key_Down: (0, steps)}
        if event.key() in arrows and self.selected is not None:
            self.nudge(*arrows[event.key()])
            return True
        if event.key() in (Qt.Key.Key_Delete, Qt.Key.Key_Backspace) and self.selected is not None:
            self.delete_selected()
            return True
        return False

    # --- display ---------------------------------------------------------------------
    def _sync(self) -> None:
        """Redraw the boxes and refill the table from self.boxes."""
        self._syncing = True
        try:
            self._draw_items()
            self._fill_table()
        finally:
            self._syncing = False

    def _draw_items(self) -> None:
        for item in self._items:
            self.scene.removeItem(item)
        self._items = []
        for index, box in enumerate(self.boxes):
            self._items.append(self._box_item(index, box))
        if self.selected is not None:
            x0, y0, x1, y1 = self.boxes[self.selected]["box"]
            w, h = self.canvas_size
            for cx, cy in ((x0, y0), (x1, y0), (x0, y1), (x1, y1)):
                self._items.append(self._handle(cx * w, cy * h))

    def _box_item(self, index: int, box: dict) -> QGraphicsRectItem:
        colour = QColor(*drawing.layout_label_colour(box["label"]))
        selected = index == self.selected
        pen = QPen(QColor("#ffffff") if selected else colour, 2.5 if selected else 2.0)
        pen.setCosmetic(True)
        fill = QColor(colour)
        fill.setAlpha(70 if selected else 45)
        item = self.scene.addRect(self._scene_rect(box["box"]), pen, QBrush(fill))
        item.setZValue(1 + index)
        caption = QGraphicsSimpleTextItem(f"{index + 1}  {box['label']}", item)
        font = QFont()
        font.setPointSizeF(9)
        font.setBold(True)
        caption.setFont(font)
        caption.setBrush(QColor("#ffffff"))
        caption.setFlag(QGraphicsItem.GraphicsItemFlag.ItemIgnoresTransformations, True)
        inset = QPointF(3, 2) / self.view.zoom()  # a few screen pixels inside the corner
        caption.setPos(self._scene_rect(box["box"]).topLeft() + inset)
        backing = QGraphicsRectItem(caption.boundingRect().adjusted(-3, -1, 3, 1), caption)
        backing.setBrush(QColor(0, 0, 0, 150))
        backing.setPen(Qt.PenStyle.NoPen)
        backing.setFlag(QGraphicsItem.GraphicsItemFlag.ItemStacksBehindParent, True)
        return item

    def _handle(self, x: float, y: float) -> QGraphicsRectItem:
        half = HANDLE_PX / 2
        handle = self.scene.addRect(QRectF(-half, -half, HANDLE_PX, HANDLE_PX), QPen(QColor("#15171a")),
                                    QBrush(QColor("#ffb74d")))
        handle.setFlag(QGraphicsItem.GraphicsItemFlag.ItemIgnoresTransformations, True)
        handle.setPos(x, y)
        handle.setZValue(1000)
        return handle

    def _fill_table(self) -> None:
        table = self.table
        table.setRowCount(len(self.boxes))
        for row, box in enumerate(self.boxes):
            cells = [box["label"]] + [_coordinate_text(v) for v in box["box"]]
            for column, text in enumerate(cells):
                item = QTableWidgetItem(text)
                if column:
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                table.setItem(row, column, item)
        if self.selected is not None:
            table.selectRow(self.selected)
        else:
            table.clearSelection()
        self.delete_button.setEnabled(self.selected is not None)

    def _show_label(self, label: str) -> None:
        self._syncing = True
        try:
            index = self.label_combo.findText(label)
            if index >= 0:
                self.label_combo.setCurrentIndex(index)
            else:
                self.label_combo.setEditText(label)
        finally:
            self._syncing = False

    # --- table edits -------------------------------------------------------------------
    def _cell_changed(self, item: QTableWidgetItem) -> None:
        if self._syncing:
            return
        row, column = item.row(), item.column()
        before = copy.deepcopy(self.boxes)
        try:
            self._apply_cell(row, column, item.text())
        except ValueError as exc:
            self.boxes = before
            self.status.setText(f"Box {row + 1}: {exc}")
            self._sync()
            return
        self.status.setText("")
        self.selected = row
        self._sync()
        self._commit(f"Edit box {row + 1}", before)

    def _apply_cell(self, row: int, column: int, text: str) -> None:
        """The typed label or coordinate, when the box stays one engine.layout accepts (else ValueError)."""
        box = self.boxes[row]
        edited = {"label": box["label"], "box": list(box["box"])}
        if column == 0:
            edited["label"] = text
        else:
            edited["box"][column - 1] = float(text.replace(",", "."))
        try:
            checked = LayoutBox.from_json(edited, row + 1)
        except LayoutError as exc:
            raise ValueError(f"{COLUMNS[column]} = {text!r}: the {exc.field} {exc.problem}") from None
        box["label"], box["box"] = checked.label, list(checked.box)

    def _table_selection(self) -> None:
        if self._syncing:
            return
        rows = {index.row() for index in self.table.selectionModel().selectedRows()}
        self.select(min(rows) if rows else None)

    # --- panel ---------------------------------------------------------------------------
    def _build_panel(self) -> None:
        self.section("Label")
        self.vocabulary_combo = QComboBox()
        self.vocabulary_combo.addItems(VOCABULARIES)
        vocabulary = self.params.get("labels", VOCABULARIES[0])
        self.vocabulary_combo.setCurrentText(vocabulary if vocabulary in VOCABULARIES else VOCABULARIES[0])
        self.vocabulary_combo.setToolTip("shapes world: the built-in model's labels; free text: any label")
        self.vocabulary_combo.currentTextChanged.connect(self._vocabulary_changed)
        self.label_combo = QComboBox()
        self.label_combo.addItems(drawing.LAYOUT_LABELS)
        self.label_combo.setToolTip("Label of new boxes and of the selected box")
        self.label_combo.currentTextChanged.connect(self.set_label)
        self.panel.addLayout(form_row("Labels", self.vocabulary_combo))
        self.panel.addLayout(form_row("Box", self.label_combo))
        self.section("Boxes")
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        for column in range(1, len(COLUMNS)):
            header.setSectionResizeMode(column, QHeaderView.ResizeMode.Fixed)
            self.table.setColumnWidth(column, 70)
        self.table.setStyleSheet("QTableWidget, QHeaderView { font-size: 9pt; }")
        self.table.verticalHeader().setDefaultSectionSize(22)
        self.table.setMinimumHeight(220)
        self.table.itemChanged.connect(self._cell_changed)
        self.table.itemSelectionChanged.connect(self._table_selection)
        self.panel.addWidget(self.table)
        self._vocabulary_changed(self.vocabulary_combo.currentText())
        self.delete_button = QPushButton("Delete box")
        self.delete_button.clicked.connect(self.delete_selected)
        self.panel.addWidget(self.delete_button)
        self.panel.addLayout(self.undo_buttons())
        self.snap_box = QCheckBox("Snap to a 1/64 grid")
        self.snap_box.setChecked(True)
        self.snap_box.toggled.connect(lambda on: setattr(self, "snap_enabled", on))
        self.panel.addWidget(self.snap_box)
        help_text = QLabel("Drag on the canvas to draw a box, drag a box to move it, drag a corner to "
                           "resize. Arrows nudge (Shift: 8 steps), Delete removes.")
        help_text.setObjectName("helpText")
        help_text.setWordWrap(True)
        self.panel.addWidget(help_text)
        self.panel.addStretch(1)
        self.shortcut("Delete", self.delete_selected)

    def _vocabulary_changed(self, vocabulary: str) -> None:
        """shapes world: pick one of the 18 labels; free text: type any label (a box's prompt, for Regional
        Prompts), in the combo or in the table's first column."""
        free = vocabulary == "free text"
        self.label_combo.setEditable(free)
        self.table.horizontalHeaderItem(0).setText("Label / prompt" if free else COLUMNS[0])
        self.params["labels"] = vocabulary



def _coordinate_text(value: float) -> str:
    """Six decimals at most, trailing zeros dropped: multiples of 1/64 show exactly."""
    return f"{value:.6f}".rstrip("0").rstrip(".") or "0"
