"""Fuzzy node search (Tab / double-click): type a few letters, Enter places the node."""
from __future__ import annotations

import re
from dataclasses import dataclass

from PySide6.QtCore import QEvent, QObject, QPoint, Qt, Signal
from PySide6.QtWidgets import QFrame, QLabel, QLineEdit, QListWidget, QListWidgetItem, QVBoxLayout, QWidget

from engine.spec import NodeRegistry, NodeSpec


@dataclass(frozen=True)
class TypeFilter:
    """Only node types that can take (needs_input) or give a value of this socket type."""

    type_name: str
    needs_input: bool


def subsequence_score(query: str, text: str) -> float:
    """How well `query` matches `text` letter by letter (0 = no match); runs and word starts score more."""
    if not query:
        return 1.0
    score, pos, run = 0.0, 0, 0
    for ch in query:
        found = text.find(ch, pos)
        if found < 0:
            return 0.0
        run = run + 1 if found == pos else 0
        at_word = found == 0 or not text[found - 1].isalnum() or (text[found].isupper())
        score += 1.0 + run * 0.8 + (1.5 if at_word else 0.0) - min(found - pos, 8) * 0.1
        pos = found + 1
    return score


EXACT_NAME_BONUS = 100.0  # the query is a node's whole title, type or alias: it comes first


def match_score(query: str, spec: NodeSpec) -> float:
    """Score of a node type for the query; every word must match its title, an alias (what ComfyUI or
    A1111 call it), its type, category or help."""
    words = query.lower().split()
    if not words:
        return 1.0
    fields = [(spec.title, 3.0), *((alias, 2.8) for alias in spec.aliases), (spec.type, 2.5),
              (spec.category, 1.0)]
    total = 0.0
    for word in words:
        best = max(_field_score(word, text, weight) for text, weight in fields)
        if best == 0.0 and word in spec.help.lower():
            best = 2.0 + len(word) * 0.1
        if best == 0.0:
            return 0.0
        total += best
    wanted = _squashed(query)
    if any(_squashed(name) == wanted for name in (spec.title, spec.type, *spec.aliases)):
        total += EXACT_NAME_BONUS
    return total


def _field_score(word: str, text: str, weight: float) -> float:
    low = text.lower()
    if low.startswith(word):
        return weight * (10 + len(word))
    if any(part.startswith(word) for part in _name_words(text)):
        return weight * (8 + len(word))
    if word in low:
        return weight * (6 + len(word))
    return weight * subsequence_score(word, low) * 0.8


def _name_words(text: str) -> list[str]:
    """"Autoencoder Decode (Tiled)" -> autoencoder, decode, tiled; "KSampler" -> k, sampler."""
    return [w.lower() for w in re.findall(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+", text)]


def _squashed(text: str) -> str:
    return "".join(ch for ch in text.lower() if ch.isalnum())


def accepts(spec: NodeSpec, flt: TypeFilter | None) -> bool:
    if flt is None:
        return True
    sockets = spec.inputs if flt.needs_input else spec.outputs
    return any(s.type.value == flt.type_name for s in sockets)


def search(registry: NodeRegistry, query: str, flt: TypeFilter | None = None) -> list[NodeSpec]:
    scored = [(match_score(query, s), s) for s in registry if accepts(s, flt)]
    scored = [(sc, s) for sc, s in scored if sc > 0]
    scored.sort(key=lambda pair: (-pair[0], pair[1].category, pair[1].title))
    return [s for _, s in scored]


class NodeSearchPopup(QFrame):
    chosen = Signal(str)  # node type name

    def __init__(self, registry: NodeRegistry, parent: QWidget | None = None):
        super().__init__(parent, Qt.WindowType.Popup)
        self.registry = registry
        self.filter: TypeFilter | None = None
        self.setObjectName("searchPopup")
        self.setFixedSize(380, 360)
        self.query = QLineEdit()
        self.query.setPlaceholderText("Search nodes: name, category or what it does…")
        self.query.textChanged.connect(self.refresh)
        self.query.installEventFilter(self)
        self.results = QListWidget()
        self.results.itemActivated.connect(self._activate)
        self.results.itemClicked.connect(self._activate)
        self.hint = QLabel()
        self.hint.setObjectName("helpText")
        self.hint.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(8, 8, 8, 8)
        layout.addWidget(self.query)
        layout.addWidget(self.results, 1)
        layout.addWidget(self.hint)
        self.results.currentItemChanged.connect(self._show_help)

    def open_at(self, global_pos: QPoint, flt: TypeFilter | None = None) -> None:
        self.filter = flt
        self.query.clear()
        self.refresh()
        self.move(global_pos)
        self.show()
        self.query.setFocus()

    def refresh(self) -> None:
        self.results.clear()
        for spec in search(self.registry, self.query.text(), self.filter):
            item = QListWidgetItem(f"{spec.title}    ·  {spec.category}")
            item.setData(Qt.ItemDataRole.UserRole, spec.type)
            item.setToolTip(spec.help)
            self.results.addItem(item)
        if self.results.count():
            self.results.setCurrentRow(0)
        elif self.filter is not None:
            self.hint.setText(f"No node takes {self.filter.type_name} "
                              f"{'input' if self.filter.needs_input else 'output'} matching this")
        else:
            self.hint.setText(f"No node matches {self.query.text().strip()!r}")

    def _show_help(self, item: QListWidgetItem | None) -> None:
        spec = self.registry.get(item.data(Qt.ItemDataRole.UserRole)) if item else None
        self.hint.setText(spec.help if spec else "")

    def _activate(self, item: QListWidgetItem) -> None:
        type_name = item.data(Qt.ItemDataRole.UserRole)
        self.hide()
        self.chosen.emit(type_name)

    def choose_current(self) -> bool:
        item = self.results.currentItem()
        if item is None:
            return False
        self._activate(item)
        return True

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:
        if obj is self.query and event.type() == QEvent.Type.KeyPress:
            key = event.key()
            if key in (Qt.Key.Key_Down, Qt.Key.Key_Up, Qt.Key.Key_PageDown, Qt.Key.Key_PageUp):
                row = self.results.currentRow() + (1 if key in (Qt.Key.Key_Down, Qt.Key.Key_PageDown) else -1)
                self.results.setCurrentRow(max(0, min(self.results.count() - 1, row)))
                return True
            if key in (Qt.Key.Key_Return, Qt.Key.Key_Enter, Qt.Key.Key_Tab):
                self.choose_current()
                return True
            if key == Qt.Key.Key_Escape:
                self.hide()
                return True
        return super().eventFilter(obj, event)
