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

from PySide6.QtCore import QEvent, QObject, QPoint, QRegularExpression, Qt, QTimer, Signal
from PySide6.QtGui import QRegularExpressionValidator, QValidator
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
    QToolTip,
    QWidget,
)

from engine import paths
from engine.spec import Param, ParamType

ChoicesProvider = Callable[[str], list[str]]
INT32 = 2**31 - 1
SLIDER_STEPS = 1000
SEED_MODE_LABELS = {"fixed": "fixed", "increment": "+1", "randomize": "random"}
REFUSAL_MS = 5000  # how long a refused value's reason stays on the field


def refusal_message(param: Param, value: Any) -> str | None:
    """Why `value` cannot be `param`'s value, worded for the field ("steps must be at least 1"); None: fine.

    Param.check decides; this only says its rule the way a person reads it at the field."""
    problem = param.check(value)
    if problem is None:
        return None
    name = param.name.replace("_", " ")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if param.min is not None and value < param.min:
            return f"{name} must be at least {_bound(param.min)}"
        if param.max is not None and value > param.max:
            return f"{name} must be at most {_bound(param.max)}"
        if param.multiple and value % param.multiple:
            return f"{name} must be a multiple of {param.multiple}"
    return f"{name}: {problem}"


def _bound(limit: float) -> str:
    return str(int(limit)) if float(limit).is_integer() else f"{limit:g}"


def _mark_invalid(widget: QWidget, invalid: bool) -> None:
    """The red outline of the theme's [invalid="true"] rule."""
    widget.setProperty("invalid", invalid)
    widget.style().unpolish(widget)
    widget.style().polish(widget)


class ParamEditor(QWidget):
    committed = Signal(object, bool)  # value, merge with the previous change
    refused = Signal(str)  # why a typed value was not taken; "" when the message goes away

    def __init__(self, param: Param, compact: bool, parent: QWidget | None = None):
        super().__init__(parent)
        self.param = param
        self.compact = compact
        self._fresh = True  # the next change starts a new undo step
        self.refusal = ""  # the reason shown for the last refused value, while it shows
        self._refusal_timer = QTimer(self, singleShot=True, interval=REFUSAL_MS)
        self._refusal_timer.timeout.connect(self.clear_refusal)
        self.layout_ = QHBoxLayout(self)
        self.layout_.setContentsMargins(0, 0, 0, 0)
        self.layout_.setSpacing(4)

    def field(self) -> QWidget:
        """The widget a value is typed into (outlined when a value is refused)."""
        return self

    def accepts(self, value: Any) -> bool:
        """True when the param's rules take `value`; else the field says why, for a moment."""
        message = refusal_message(self.param, value)
        if message is None:
            self.clear_refusal()
            return True
        self.refuse(message)
        return False

    def refuse(self, message: str) -> None:
        self.refusal = message
        field = self.field()
        _mark_invalid(field, True)
        field.setToolTip(message)
        if field.isVisible():
            QToolTip.showText(field.mapToGlobal(QPoint(0, field.height())), message, field, field.rect(),
                              REFUSAL_MS)
        self._refusal_timer.start()
        self.refused.emit(message)

    def clear_refusal(self) -> None:
        if not self.refusal:
            return
        self.refusal = ""
        self._refusal_timer.stop()
        field = self.field()
        _mark_invalid(field, False)
        field.setToolTip("")  # the editor's own tooltip (the param's help) shows again
        self.refused.emit("")

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


class _TypedSpinBox(QSpinBox):
    """Lets a number past the range be typed, so that the editor can say why it refuses it."""

    def validate(self, text: str, pos: int) -> object:
        return _let_numbers_through(self, super().validate(text, pos), text, pos)


class _TypedDoubleSpinBox(QDoubleSpinBox):
    def validate(self, text: str, pos: int) -> object:
        return _let_numbers_through(self, super().validate(text, pos), text, pos)


def _let_numbers_through(spin: QSpinBox | QDoubleSpinBox, result: Any, text: str, pos: int) -> Any:
    """A number outside the range is Intermediate (typed, then refused with a reason), not Invalid
    (a key press that silently does nothing); any other judgement of the spin box stands."""
    state = result[0] if isinstance(result, tuple) else result
    number = _typed_number(spin, text)
    if state == QValidator.State.Invalid and number is not None and not spin.minimum() <= number <= spin.maximum():
        return (QValidator.State.Intermediate, text, pos)
    return result


def _typed_number(spin: QSpinBox | QDoubleSpinBox, text: str) -> float | int | None:
    """The number in a spin box's text, in or out of its range; None when it is no number."""
    clean = text.strip()
    if isinstance(spin, QDoubleSpinBox):
        value, ok = spin.locale().toDouble(clean)
        return value if ok else None
    value, ok = spin.locale().toLongLong(clean)
    return int(value) if ok else None


class _TypedEntryWatcher(QObject):
    """Checks what was typed before the spin box takes it (Enter, leaving the field): a refused
    number is put back to the shown value, so the spin box never commits or clamps it."""

    def __init__(self, editor: NumberEditor):
        super().__init__(editor)
        self.editor = editor

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:
        enter = event.type() == QEvent.Type.KeyPress and event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter)
        if enter or event.type() == QEvent.Type.FocusOut:
            self.editor.check_typed()
        return False


class NumberEditor(ParamEditor):
    """A spin box with typed entry, plus a slider when the range is bounded (panel only)."""

    def __init__(self, param: Param, compact: bool, parent: QWidget | None = None):
        super().__init__(param, compact, parent)
        self.is_float = param.type is ParamType.FLOAT
        self.spin = _TypedDoubleSpinBox() if self.is_float else _TypedSpinBox()
        self.shown: Any = None  # the value on display (the param's value)
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
        self.spin.installEventFilter(_TypedEntryWatcher(self))
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

    def field(self) -> QWidget:
        return self.spin

    def set_value(self, value: Any) -> None:
        self.shown = value
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

    def check_typed(self) -> None:
        """Refuse a typed number the param does not take, and show the param's value again."""
        typed = _typed_number(self.spin, self.spin.lineEdit().text())
        if typed is None or self.shown is None:
            return
        if not self.accepts(self._value(typed)):
            self.set_value(self.shown)

    def _spin_changed(self, raw: float) -> None:
        if self.shown is not None and not self.accepts(self._value(raw)):
            self.set_value(self.shown)
            return
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

        self.shown: Any = None

    def field(self) -> QWidget:
        return self.edit

    def set_value(self, value: Any) -> None:
        self.shown = value
        if self.edit.text() != str(value):
            self.edit.setText(str(value))
            self.edit.setCursorPosition(0)  # long numbers: show their start

    def _typed(self) -> None:
        try:
            value = int(self.edit.text())
        except ValueError:
            value = None
        if value is None or not self.accepts(value):
            if self.shown is not None:
                self.edit.setText(str(self.shown))
            return
        self.shown = value
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


class _RefreshingComboBox(QComboBox):
    """Asks for a fresh list each time it pops up or gets the focus (files come and go)."""

    wants_fresh_list = Signal()

    def showPopup(self) -> None:
        self.wants_fresh_list.emit()
        super().showPopup()

    def focusInEvent(self, event: Any) -> None:
        self.wants_fresh_list.emit()
        super().focusInEvent(event)


class ChoiceEditor(ParamEditor):
    """A fixed list of choices, or a list the application finds (`list_choices`: the checkpoint files),
    which is looked up again on popup, focus and the refresh button."""

    def __init__(self, param: Param, compact: bool, choices: list[str], parent: QWidget | None = None,
                 list_choices: Callable[[], list[str]] | None = None):
        super().__init__(param, compact, parent)
        self.list_choices = list_choices
        self.combo = QComboBox() if list_choices is None else _RefreshingComboBox()
        self.combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.combo.setMinimumContentsLength(8)
        self.combo.addItems(choices)
        self.combo.activated.connect(lambda i: (self.start_gesture(), self._emit(self.combo.itemText(i))))
        self.layout_.addWidget(self.combo, 1)
        self.refresh_button: QToolButton | None = None
        if list_choices is not None:
            self.combo.wants_fresh_list.connect(self.refresh_choices)
            self._add_refresh_button()

    def _add_refresh_button(self) -> None:
        from app.theme import icon

        self.refresh_button = QToolButton()
        self.refresh_button.setIcon(icon("refresh"))
        self.refresh_button.setToolTip("Look again for files in the model folders")
        self.refresh_button.clicked.connect(self.refresh_choices)
        self.layout_.addWidget(self.refresh_button)

    def choices(self) -> list[str]:
        return [self.combo.itemText(i) for i in range(self.combo.count())]

    def refresh_choices(self) -> None:
        """List the choices again, keeping the value shown (marked when it is no longer found)."""
        if self.list_choices is None:
            return
        fresh, current = self.list_choices(), self.combo.currentText()
        if fresh == self.choices():
            return
        self.combo.blockSignals(True)
        self.combo.clear()
        self.combo.addItems(fresh)
        self.combo.blockSignals(False)
        if current:
            self.set_value(current)

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
        if not param.choices and param.choices_from and choices_provider is not None:
            name, provider = param.choices_from, choices_provider
            return ChoiceEditor(param, compact, provider(name), list_choices=lambda: provider(name))
        return ChoiceEditor(param, compact, list(param.choices))
    return LineEditor(param, compact)
