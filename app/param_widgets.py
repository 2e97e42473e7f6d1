"""Editors for node params, shared by the canvas (compact, inline) and the properties panel.

Each editor shows a value and emits `committed(value, merge)`; `merge` is True
for the follow-up changes of one gesture (typing, dragging a slider) so that the
gesture becomes one undo step.
"""
from __future__ import annotations

import json
import random
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QEvent, QObject, QRegularExpression, Qt, Signal
from PySide6.QtGui import QRegularExpressionValidator
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QHBoxLayout,
    QLineEdit,
    QPlainTextEdit,
    QSlider,
    QSpinBox,
    QToolButton,
    QWidget,
)

from engine import paths
from engine.spec import SEED_MAX, Param, ParamType

ChoicesProvider = Callable[[str], list[str]]
INT32 = 2**31 - 1
SLIDER_STEPS = 1000
SEED_MODE_LABELS = {"fixed": "fixed", "increment": "+1", "randomize": "random"}


class ParamEditor(QWidget):
    committed = Signal(object, bool)  # value, merge with the previous change

    def __init__(self, param: Param, compact: bool, parent: QWidget | None = None):
        super().__init__(parent)
        self.param = param
        self.compact = compact
        self._fresh = True  # the next change starts a new undo step
        self.layout_ = QHBoxLayout(self)
        self.layout_.setContentsMargins(0, 0, 0, 0)
        self.layout_.setSpacing(4)

    def set_value(self, value: Any) -> None:
        raise NotImplementedError("abstract: each param widget shows values its own way")

    def _emit(self, value: Any) -> None:
        merge = not self._fresh
        self._fresh = False
        self.committed.emit(value, merge)

    def start_gesture(self) -> None:
        self._fresh = True

    def _watch_focus(self, widget: QWidget) -> None:
        widget.installEventFilter(_FocusWatcher(self))


class _FocusWatcher(QObject):
    def __init__(self, editor: ParamEditor):
        super().__init__(editor)
        self.editor = editor

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:
        if event.type() in (QEvent.Type.FocusIn, QEvent.Type.FocusOut):
            self.editor.start_gesture()
        return False


class NumberEditor(ParamEditor):
    """A spin box with typed entry, plus a slider when the range is bounded (panel only)."""

    def __init__(self, param: Param, compact: bool, parent: QWidget | None = None):
        super().__init__(param, compact, parent)
        self.is_float = param.type is ParamType.FLOAT
        self.spin = QDoubleSpinBox() if self.is_float else QSpinBox()
        lo = param.min if param.min is not None else (-1e9 if self.is_float else -INT32)
        hi = param.max if param.max is not None else (1e9 if self.is_float else INT32)
        if self.is_float:
            self.spin.setDecimals(_decimals(param.step))
        if not self.is_float:
            lo, hi = max(lo, -INT32), min(hi, INT32)
        self.spin.setRange(lo, hi)
        self.spin.setSingleStep(param.step or (0.1 if self.is_float else 1))
        self.spin.setKeyboardTracking(False)
        self.spin.setAccelerated(True)
        self.spin.valueChanged.connect(self._spin_changed)
        self._watch_focus(self.spin)
        self.slider: QSlider | None = None
        if not compact and param.min is not None and param.max is not None:
            self._add_slider(float(param.min), float(param.max))
            self.spin.setMaximumWidth(96)
        self.layout_.addWidget(self.spin, 1 if compact else 0)

    def _add_slider(self, lo: float, hi: float) -> None:
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setRange(0, SLIDER_STEPS)
        self.slider.sliderPressed.connect(self.start_gesture)
        self.slider.valueChanged.connect(self._slider_changed)
        self.lo, self.hi = lo, hi
        self.layout_.addWidget(self.slider, 1)

    def set_value(self, value: Any) -> None:
        self.spin.blockSignals(True)
        self.spin.setValue(value)
        self.spin.blockSignals(False)
        if self.slider is not None:
            self.slider.blockSignals(True)
            span = (self.hi - self.lo) or 1.0
            self.slider.setValue(round((float(value) - self.lo) / span * SLIDER_STEPS))
            self.slider.blockSignals(False)

    def _value(self, raw: float) -> Any:
        return float(raw) if self.is_float else round(raw)

    def _spin_changed(self, raw: float) -> None:
        self.set_value(raw)
        self._emit(self._value(raw))

    def _slider_changed(self, position: int) -> None:
        raw = self.lo + (self.hi - self.lo) * position / SLIDER_STEPS
        step = self.param.step or (0.01 if self.is_float else 1)
        raw = round(round((raw - self.lo) / step) * step + self.lo, 6)
        self.spin.blockSignals(True)
        self.spin.setValue(raw)
        self.spin.blockSignals(False)
        self._emit(self._value(raw))


def _decimals(step: float | None) -> int:
    if not step:
        return 3
    text = f"{step:g}"
    return max(1, len(text.split(".")[1])) if "." in text else 1


class BigIntEditor(ParamEditor):
    """An integer too wide for a spin box (seeds up to 2**63-1, unbounded ints)."""

    def __init__(self, param: Param, compact: bool, parent: QWidget | None = None):
        super().__init__(param, compact, parent)
        self.edit = QLineEdit()
        self.edit.setMinimumWidth(70)
        self.edit.setValidator(QRegularExpressionValidator(QRegularExpression(r"-?\d{0,19}")))
        self.edit.editingFinished.connect(self._typed)
        self.layout_.addWidget(self.edit, 1)

    def set_value(self, value: Any) -> None:
        if self.edit.text() != str(value):
            self.edit.setText(str(value))
            self.edit.setCursorPosition(0)  # long numbers: show their start

    def _typed(self) -> None:
        try:
            value = int(self.edit.text())
        except ValueError:
            return
        low = self.param.min if self.param.min is not None else -SEED_MAX
        high = self.param.max if self.param.max is not None else SEED_MAX
        value = int(min(max(value, low), high))
        self.edit.setText(str(value))
        self.start_gesture()
        self._emit(value)


class SeedEditor(BigIntEditor):
    """Seed entry, a dice button and what happens to the seed after each run."""

    mode_changed = Signal(str)

    def __init__(self, param: Param, compact: bool, parent: QWidget | None = None):
        super().__init__(param, compact, parent)
        from app.theme import icon

        self.dice = QToolButton()
        self.dice.setIcon(icon("dice"))
        self.dice.setToolTip("New random seed")
        self.dice.clicked.connect(self.randomise)
        self.mode = QComboBox()
        for key, label in SEED_MODE_LABELS.items():
            self.mode.addItem(label, key)
        self.mode.setMaximumWidth(78)
        self.mode.setToolTip("After each run: keep the seed (fixed), add one (+1) or pick a random one")
        self.mode.currentIndexChanged.connect(lambda i: self.mode_changed.emit(self.mode.itemData(i)))
        self.layout_.addWidget(self.dice)
        self.layout_.addWidget(self.mode)

    def randomise(self) -> None:
        value = random.randint(0, 2**32 - 1)
        self.edit.setText(str(value))
        self.start_gesture()
        self._emit(value)

    def set_mode(self, mode: str) -> None:
        self.mode.blockSignals(True)
        self.mode.setCurrentIndex(max(0, self.mode.findData(mode)))
        self.mode.blockSignals(False)


class BoolEditor(ParamEditor):
    def __init__(self, param: Param, compact: bool, parent: QWidget | None = None):
        super().__init__(param, compact, parent)
        self.box = QCheckBox()
        self.box.toggled.connect(lambda on: (self.start_gesture(), self._emit(bool(on))))
        self.layout_.addWidget(self.box)
        self.layout_.addStretch(1)

    def set_value(self, value: Any) -> None:
        self.box.blockSignals(True)
        self.box.setChecked(bool(value))
        self.box.blockSignals(False)


class LineEditor(ParamEditor):
    """One line of text; every keystroke is a change, one typing run is one undo step."""

    def __init__(self, param: Param, compact: bool, parent: QWidget | None = None):
        super().__init__(param, compact, parent)
        self.edit = QLineEdit()
        self.edit.textEdited.connect(self._emit)
        self._watch_focus(self.edit)
        self.layout_.addWidget(self.edit, 1)

    def set_value(self, value: Any) -> None:
        if self.edit.text() != str(value):
            self.edit.setText(str(value))


class PathEditor(LineEditor):
    """A file path; `graph_folder` gives the graph file's folder (None while unsaved), where the
    file dialog starts and relative paths are read from (engine.paths)."""

    def __init__(self, param: Param, compact: bool, graph_folder: Callable[[], str | None] | None = None,
                 parent: QWidget | None = None):
        super().__init__(param, compact, parent)
        self.graph_folder = graph_folder or (lambda: None)
        self.browse = QToolButton(text="…")
        self.browse.setToolTip("Choose a file")
        self.browse.clicked.connect(self._choose)
        self.layout_.addWidget(self.browse)

    def dialog_start(self) -> str:
        folder = self.graph_folder()
        text = self.edit.text()
        return paths.resolve(text, folder) if text else (folder or "")

    def _choose(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, f"Choose {self.param.name}", self.dialog_start())
        if path:
            self.edit.setText(path)
            self.start_gesture()
            self._emit(path)


class TextEditor(ParamEditor):
    """Multi-line text (prompts)."""

    def __init__(self, param: Param, compact: bool, parent: QWidget | None = None):
        super().__init__(param, compact, parent)
        self.edit = QPlainTextEdit()
        self.edit.setTabChangesFocus(True)
        self.edit.setFixedHeight(64 if compact else 110)
        self.edit.textChanged.connect(lambda: self._emit(self.edit.toPlainText()))
        self._watch_focus(self.edit)
        self.layout_.addWidget(self.edit, 1)

    def set_value(self, value: Any) -> None:
        if self.edit.toPlainText() != str(value):
            self.edit.blockSignals(True)
            cursor = self.edit.textCursor().position()
            self.edit.setPlainText(str(value))
            c = self.edit.textCursor()
            c.setPosition(min(cursor, len(str(value))))
            self.edit.setTextCursor(c)
            self.edit.blockSignals(False)


class JsonEditor(ParamEditor):
    """Any JSON value; changes commit only while the text parses, else it turns red."""

    def __init__(self, param: Param, compact: bool, parent: QWidget | None = None):
        super().__init__(param, compact, parent)
        self.edit = QPlainTextEdit()
        self.edit.setFixedHeight(64 if compact else 140)
        self.edit.textChanged.connect(self._changed)
        self._watch_focus(self.edit)
        self.layout_.addWidget(self.edit, 1)
        self.error = ""

    def set_value(self, value: Any) -> None:
        try:
            current = json.loads(self.edit.toPlainText())
        except ValueError:
            current = object()
        if current != value:
            self.edit.blockSignals(True)
            self.edit.setPlainText(json.dumps(value, indent=1))
            self.edit.blockSignals(False)
            self._mark("")

    def _changed(self) -> None:
        try:
            value = json.loads(self.edit.toPlainText())
        except ValueError as exc:
            self._mark(f"not valid JSON: {exc}")
            return
        self._mark("")
        self._emit(value)

    def _mark(self, error: str) -> None:
        self.error = error
        self.edit.setProperty("invalid", bool(error))
        self.edit.setToolTip(error)
        self.edit.style().unpolish(self.edit)
        self.edit.style().polish(self.edit)


class ChoiceEditor(ParamEditor):
    def __init__(self, param: Param, compact: bool, choices: list[str], parent: QWidget | None = None):
        super().__init__(param, compact, parent)
        self.combo = QComboBox()
        self.combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.combo.setMinimumContentsLength(8)
        self.combo.addItems(choices)
        self.combo.activated.connect(lambda i: (self.start_gesture(), self._emit(self.combo.itemText(i))))
        self.layout_.addWidget(self.combo, 1)

    def set_value(self, value: Any) -> None:
        self.combo.blockSignals(True)
        index = self.combo.findText(str(value))
        if index < 0:  # a value from another machine: show it, marked, so nothing changes silently
            self.combo.addItem(str(value))
            index = self.combo.count() - 1
            self.combo.setItemData(index, "not available here", Qt.ItemDataRole.ToolTipRole)
        self.combo.setCurrentIndex(index)
        self.combo.blockSignals(False)


def make_editor(param: Param, compact: bool, choices_provider: ChoicesProvider | None = None,
                graph_folder: Callable[[], str | None] | None = None) -> ParamEditor:
    t = param.type
    if t is ParamType.SEED:
        return SeedEditor(param, compact)
    if t is ParamType.INT:
        wide = (param.min is not None and param.min < -INT32) or (param.max is not None and param.max > INT32)
        return BigIntEditor(param, compact) if wide else NumberEditor(param, compact)
    if t is ParamType.FLOAT:
        return NumberEditor(param, compact)
    if t is ParamType.BOOL:
        return BoolEditor(param, compact)
    if t is ParamType.TEXT:
        return TextEditor(param, compact)
    if t is ParamType.JSON:
        return JsonEditor(param, compact)
    if t is ParamType.PATH:
        return PathEditor(param, compact, graph_folder)
    if t is ParamType.CHOICE:
        choices = list(param.choices)
        if not choices and param.choices_from and choices_provider is not None:
            choices = choices_provider(param.choices_from)
        return ChoiceEditor(param, compact, choices)
    return LineEditor(param, compact)
