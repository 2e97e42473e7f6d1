"""A person using the editor for a long time: thousands of random but valid actions through Qt
events (search and add, drag links, move, edit params, undo, redo, copy, paste, delete, paint in an
editor, run, cancel, open another example), checking after every one that nothing escaped into Qt,
that the canvas shows the document, and at the end of every graph that undoing everything gives the
file back byte for byte and that every run reached an end (done, failed or cancelled).

Its length: KILN_SOAK_ACTIONS (default 2000) actions, or KILN_SOAK_MINUTES of use when set;
KILN_SOAK_SEED picks the session. A long run:
    KILN_SOAK_MINUTES=30 QT_QPA_PLATFORM=offscreen python3 -m pytest tests/test_soak.py -s
"""
from __future__ import annotations

import os
import random
import time
from pathlib import Path
from typing import Any

import pytest
from gui_support import Answers, close_window, demo_graph, drag, make_registry, make_settings
from PySide6.QtCore import QPoint, QPointF, Qt
from PySide6.QtGui import QCursor
from PySide6.QtTest import QTest
from PySide6.QtWidgets import (
    QAbstractButton,
    QAbstractSpinBox,
    QApplication,
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QLineEdit,
)

from app.canvas import style
from app.param_widgets import BoolEditor, ChoiceEditor, LineEditor, NumberEditor

EXAMPLES = sorted((Path(__file__).parents[1] / "resources" / "graphs").glob("*.json"))
ACTIONS = int(os.environ.get("KILN_SOAK_ACTIONS", "2000"))
MINUTES = float(os.environ.get("KILN_SOAK_MINUTES", "0"))
SEED = int(os.environ.get("KILN_SOAK_SEED", "2026"))
WORDS = ("red", "circle", "blue", "square", "small", "large", "green", "triangle", "on", "a")
CTRL = Qt.KeyboardModifier.ControlModifier
STRICT = bool(os.environ.get("KILN_SOAK_STRICT"))  # undo and redo after every edit: slower, finds the culprit


def _diff(a: str, b: str) -> str:
    import difflib

    return "\n".join(list(difflib.unified_diff(a.splitlines(), b.splitlines(), lineterm="", n=8))[:80])


class Person:
    """Does one random thing at a time to the window, as a person would, and checks the window after it."""

    def __init__(self, window: Any, qtbot: Any, rng: random.Random):
        self.w, self.qtbot, self.rng = window, qtbot, rng
        self.submitted: list[Any] = []  # every job given to the runner
        self.finished: list[Any] = []  # every result the runner delivered
        self.ended: list[Any] = []  # every result the window showed (log, status bar, viewer)
        self.counts: dict[str, int] = {}
        self.states: dict[int, str] = {}  # STRICT: the file after each undo index
        self.effective: dict[str, int] = {}  # actions that changed the document or queued a run
        self.opened_bytes = ""
        submit = window.runner.submit

        def counted_submit(*args: Any, **kwargs: Any) -> Any:
            job = submit(*args, **kwargs)
            self.submitted.append(job)
            return job

        window.runner.submit = counted_submit
        window.runner.job_finished.connect(self.finished.append)
        window.run_control.result_ready.connect(self.ended.append)

    # --- the session -------------------------------------------------------------------
    def act(self) -> None:
        actions = [(self.add_node, 10), (self.connect, 12), (self.move, 10), (self.edit_param, 14),
                   (self.undo, 9), (self.redo, 6), (self.select, 8), (self.copy_paste, 4), (self.delete, 4),
                   (self.paint, 3), (self.run, 5), (self.cancel, 2), (self.open_example, 2), (self.pause, 6)]
        action = self.rng.choices([a for a, _ in actions], [w for _, w in actions])[0]
        self.counts[action.__name__] = self.counts.get(action.__name__, 0) + 1
        before = (self.w.doc.undo_stack.count(), self.w.doc.undo_stack.index(), len(self.submitted))
        text_before = self.w.doc.dumps() if STRICT else ""
        action()
        QApplication.processEvents()
        after = (self.w.doc.undo_stack.count(), self.w.doc.undo_stack.index(), len(self.submitted))
        if after != before:
            self.effective[action.__name__] = self.effective.get(action.__name__, 0) + 1
        if STRICT and after[:2] == before[:2] and self.w.doc.dumps() != text_before:
            import difflib
            diff = "\n".join(list(difflib.unified_diff(text_before.splitlines(), self.w.doc.dumps().splitlines(),
                                                        lineterm="", n=4))[:40])
            print(f"\n{action.__name__} changed the file with no new undo step "
                  f"(last: {self.w.doc.undo_stack.undoText()!r})\n{diff}")
        if STRICT and after[:2] != before[:2]:
            self.undo_redo_last(action.__name__)
            self.states[self.w.doc.undo_stack.index()] = self.w.doc.dumps()

    def open_graph(self, path: Path | None) -> None:
        self.finish_graph()
        w = self.w
        if path is None:
            w.doc.set_graph(demo_graph(), None)
        else:
            assert w.load_path(str(path)), f"could not open {path}"
        self.qtbot.wait(10)
        self.opened_bytes = w.doc.dumps()
        self.states = {0: self.opened_bytes}

    def finish_graph(self) -> None:
        """Undo everything: the file as opened, byte for byte; redo up to where the person was: the file
        as they left it, byte for byte."""
        stack = self.w.doc.undo_stack
        if not self.opened_bytes:
            return
        self.close_dialogs()
        left, where = self.w.doc.dumps(), stack.index()
        stack.setIndex(0)
        assert self.w.doc.dumps() == self.opened_bytes, "undoing every edit did not give the file back:\n" + \
            _diff(self.opened_bytes, self.w.doc.dumps())
        self.check_views()
        if STRICT:
            self.redo_one_by_one()
        stack.setIndex(where)
        assert self.w.doc.dumps() == left, "redoing the edits did not give the edited file back:\n" + \
            _diff(left, self.w.doc.dumps()) + f"\nsteps: {[stack.text(i) for i in range(where)][-8:]}"
        self.check_views()

    def redo_one_by_one(self) -> None:
        stack = self.w.doc.undo_stack
        for i in range(stack.count()):
            stack.redo()
            want = self.states.get(stack.index())
            if want is not None and want != self.w.doc.dumps():
                import difflib
                diff = "\n".join(list(difflib.unified_diff(want.splitlines(), self.w.doc.dumps().splitlines(),
                                                            lineterm="", n=6))[:60])
                texts = [stack.text(j) for j in range(max(0, i - 5), i + 1)]
                raise AssertionError(f"redo #{i + 1} {stack.text(i)!r} differs; before it {texts}\n{diff}")

    def undo_redo_last(self, what: str) -> None:
        stack = self.w.doc.undo_stack
        if stack.index() == 0:
            return
        now, text = self.w.doc.dumps(), stack.undoText()
        stack.undo()
        stack.redo()
        assert self.w.doc.dumps() == now, f"undo then redo of {text!r} (after {what}) changed the file"

    # --- checks ------------------------------------------------------------------------
    def check_views(self) -> None:
        graph, scene = self.w.doc.graph, self.w.scene
        assert set(scene.nodes) == set(graph.nodes), "the canvas and the document hold different nodes"
        assert set(scene.links) == set(graph.links), "the canvas and the document hold different links"
        for node_id, item in scene.nodes.items():
            x, y = graph.nodes[node_id].pos
            assert abs(item.pos().x() - x) < 0.5 and abs(item.pos().y() - y) < 0.5, f"{node_id} is misplaced"
        for link in graph.links:
            assert link.dst_socket in scene.nodes[link.dst].inputs or not scene.nodes[link.dst].inputs

    def check_runs_ended(self) -> None:
        self.qtbot.waitUntil(lambda: not self.w.runner.busy, timeout=120_000)
        self.qtbot.waitUntil(lambda: len(self.finished) == len(self.submitted), timeout=10_000)
        runs = [r for r in self.finished if r.job.label in ("Run", "Run selected", "Auto-run")]
        shown = {id(r) for r in self.ended}
        for result in runs:
            assert id(result) in shown, f"run #{result.job.id} finished but the window never said so"
            assert result.ok or result.cancelled or result.error_message or result.issues, \
                f"run #{result.job.id} ended without a verdict"
        assert "running" not in self.w.statusBar().currentMessage()

    # --- helpers -----------------------------------------------------------------------
    def visible(self, *points: QPointF) -> bool:
        rect = self.w.view.viewport().rect().adjusted(4, 4, -4, -4)
        return all(rect.contains(self.w.view.mapFromScene(p)) for p in points)

    def bring_into_view(self, *points: QPointF) -> bool:
        view = self.w.view
        centre = QPointF(sum(p.x() for p in points) / len(points), sum(p.y() for p in points) / len(points))
        view.centerOn(centre)
        if not self.visible(*points):
            view.zoom_by(0.6)
            view.centerOn(centre)
        return self.visible(*points)

    def random_node(self, need: str = "") -> Any:
        items = [i for i in self.w.scene.nodes.values() if not need or getattr(i, need)]
        return self.rng.choice(items) if items else None

    def title_point(self, item: Any) -> QPointF:
        return item.mapToScene(QPointF(min(24.0, item.width / 4), style.TITLE_HEIGHT / 2))

    def click_scene(self, pos: QPointF, modifier: Qt.KeyboardModifier = Qt.KeyboardModifier.NoModifier) -> None:
        QTest.mouseClick(self.w.view.viewport(), Qt.MouseButton.LeftButton, modifier,
                         self.w.view.mapFromScene(pos))

    def key(self, key: Qt.Key, modifier: Qt.KeyboardModifier = Qt.KeyboardModifier.NoModifier) -> None:
        if QApplication.activeWindow() is not self.w:  # a person closes a dialog left open, clicks the window
            self.close_dialogs()
            self.w.activateWindow()
            self.qtbot.waitUntil(lambda: QApplication.activeWindow() is self.w, timeout=2000)
        self.w.view.setFocus()
        QTest.keyClick(self.w.view, key, modifier)

    def close_dialogs(self) -> None:
        """Dialogs (a double-click opens a node's editor), popups and menus left open: Esc on each."""
        for widget in QApplication.topLevelWidgets():
            if widget is self.w or not widget.isVisible():
                continue
            if isinstance(widget, QDialog):
                widget.reject()
            elif widget.isWindow() and widget.windowType() in (Qt.WindowType.Popup, Qt.WindowType.Dialog):
                widget.hide()
        QApplication.processEvents()

    # --- actions -----------------------------------------------------------------------
    def add_node(self) -> None:
        view = self.w.view
        spot = QPoint(self.rng.randint(60, view.viewport().width() - 60),
                      self.rng.randint(60, view.viewport().height() - 60))
        QCursor.setPos(view.viewport().mapToGlobal(spot))
        self.key(Qt.Key.Key_Tab)
        if not self.w.search.isVisible():
            return
        specs = [s for s in self.w.registry if s.category != "test" or s.type == "SlowSampler"]
        spec = self.rng.choice(specs)
        QTest.keyClicks(self.w.search.query, spec.title.lower())
        QTest.keyClick(self.w.search.query, Qt.Key.Key_Return)
        if self.w.search.isVisible():
            QTest.keyClick(self.w.search.query, Qt.Key.Key_Escape)
            self.w.search.hide()

    def connect(self) -> None:
        src = self.random_node("outputs")
        if src is None or src.node.collapsed:
            return
        _, out_port = self.rng.choice(list(src.outputs.items()))
        targets = [(item, name, port) for item in self.w.scene.nodes.values() if item is not src
                   and not item.node.collapsed for name, port in item.inputs.items()
                   if port.type_name == out_port.type_name]
        if not targets:
            return
        _, _, in_port = self.rng.choice(targets)
        start, end = out_port.scenePos(), in_port.scenePos()
        if self.bring_into_view(start, end):
            drag(self.w, start, end)

    def move(self) -> None:
        item = self.random_node()
        if item is None:
            return
        start = self.title_point(item)
        end = start + QPointF(self.rng.uniform(-160, 160), self.rng.uniform(-120, 120))
        if self.bring_into_view(start, end):
            drag(self.w, start, end)

    def select(self) -> None:
        item = self.random_node()
        if item is not None and self.bring_into_view(self.title_point(item)):
            self.click_scene(self.title_point(item))

    def edit_param(self) -> None:
        self.select()
        editors = [e for e in self.w.properties.editors.values() if e.isEnabled() and e.isVisible()]
        if not editors:
            return
        editor = self.rng.choice(editors)
        if isinstance(editor, NumberEditor):
            self.type_number(editor)
        elif isinstance(editor, ChoiceEditor):
            combo = editor.findChild(QComboBox)
            if combo is not None and combo.count() > 1:
                combo.setFocus()
                QTest.keyClick(combo, self.rng.choice([Qt.Key.Key_Down, Qt.Key.Key_Up]))
        elif isinstance(editor, BoolEditor):
            box = editor.findChild(QCheckBox)
            if box is not None:
                QTest.mouseClick(box, Qt.MouseButton.LeftButton, pos=QPoint(6, box.height() // 2))
        elif isinstance(editor, LineEditor) and editor.param.name in ("prefix", "label", "title", "name"):
            line = editor.findChild(QLineEdit)
            if line is not None:
                line.setFocus()
                line.selectAll()
                QTest.keyClicks(line, self.rng.choice(WORDS))
                QTest.keyClick(line, Qt.Key.Key_Return)

    def type_number(self, editor: Any) -> None:
        spin = editor.findChild(QAbstractSpinBox)
        param = editor.param
        if spin is None:
            return
        current = self.w.doc.param_value(self.w.properties.node_id, param.name)
        if not isinstance(current, (int, float)) or isinstance(current, bool):
            return
        # near the current value: a person nudges numbers; sizes stay small so runs stay quick
        value = current + self.rng.choice([-2, -1, 1, 2]) * (param.step or (1 if param.type == "int" else 0.1))
        if param.name in ("width", "height"):
            value = self.rng.choice([32, 64, 96, 128])
        if param.name in ("steps", "batch_size"):
            value = self.rng.randint(1, 4)
        if param.min is not None:
            value = max(param.min, value)
        if param.max is not None:
            value = min(param.max, value)
        spin.setFocus()
        spin.selectAll()
        QTest.keyClicks(spin, str(int(value)) if param.type == "int" else f"{value:.2f}")
        QTest.keyClick(spin, Qt.Key.Key_Return)

    def undo(self) -> None:
        self.key(Qt.Key.Key_Z, CTRL)

    def redo(self) -> None:
        self.key(Qt.Key.Key_Z, CTRL | Qt.KeyboardModifier.ShiftModifier)

    def copy_paste(self) -> None:
        self.select()
        if not self.w.scene.selected_node_ids():
            return
        self.key(Qt.Key.Key_C, CTRL)
        QCursor.setPos(self.w.view.viewport().mapToGlobal(self.w.view.viewport().rect().center()))
        self.key(Qt.Key.Key_V, CTRL)

    def delete(self) -> None:
        self.select()
        if self.w.scene.selected_node_ids():
            self.key(Qt.Key.Key_Delete)

    def paint(self) -> None:
        from app.editors import has_editor

        drawable = [i for i in self.w.scene.nodes.values() if has_editor(i.node.type)]
        if not drawable:
            return
        item = self.rng.choice(drawable)
        if not self.bring_into_view(self.title_point(item)):
            return
        self.click_scene(self.title_point(item))
        button = next((b for b in self.w.properties.findChildren(QAbstractButton)
                       if b.text().startswith("Open Editor")), None)
        if button is None:
            return
        QTest.mouseClick(button, Qt.MouseButton.LeftButton)
        self.qtbot.wait(20)
        dialog = next((d for d in QApplication.topLevelWidgets()
                       if isinstance(d, QDialog) and d.isVisible()), None)
        if dialog is None:
            return
        self.stroke(dialog)
        self.finish_dialog(dialog)

    def stroke(self, dialog: Any) -> None:
        view = getattr(dialog, "view", None)
        if view is None:
            return
        viewport = view.viewport()
        w, h = viewport.width(), viewport.height()
        points = [QPoint(self.rng.randint(w // 5, 4 * w // 5), self.rng.randint(h // 5, 4 * h // 5))
                  for _ in range(4)]
        QTest.mousePress(viewport, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, points[0])
        for p in points[1:]:
            QTest.mouseMove(viewport, p)
        QTest.mouseRelease(viewport, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, points[-1])

    def finish_dialog(self, dialog: Any) -> None:
        buttons = dialog.findChild(QDialogButtonBox)
        ok = buttons.button(QDialogButtonBox.StandardButton.Ok) if buttons is not None else None
        if ok is not None and self.rng.random() < 0.8:
            QTest.mouseClick(ok, Qt.MouseButton.LeftButton)
        else:
            dialog.reject()
        QApplication.processEvents()

    def run(self) -> None:
        self.key(Qt.Key.Key_Return, CTRL)

    def cancel(self) -> None:
        self.key(Qt.Key.Key_Escape)

    def open_example(self) -> None:
        self.check_runs_ended()
        self.open_graph(self.rng.choice([*EXAMPLES, None]))

    def pause(self) -> None:
        self.qtbot.wait(self.rng.randint(5, 120))


@pytest.fixture
def person(qtbot, tmp_path, monkeypatch):
    from PySide6.QtWidgets import QFileDialog

    from app.window import MainWindow

    # A click can land on a path field's browse button: the person cancels the file dialog (a real,
    # blocking dialog would stop the session).
    monkeypatch.setattr(QFileDialog, "getOpenFileName", staticmethod(lambda *a, **k: ("", "")))
    monkeypatch.setattr(QFileDialog, "getSaveFileName", staticmethod(lambda *a, **k: ("", "")))
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", staticmethod(lambda *a, **k: ""))

    settings = make_settings(tmp_path)
    window = MainWindow(make_registry(), settings)
    window.ask = Answers(unsaved="discard", recover="no")
    qtbot.addWidget(window)
    window.resize(1400, 900)
    window.show()
    qtbot.waitExposed(window)
    window.activateWindow()
    yield Person(window, qtbot, random.Random(SEED))
    close_window(window)


def test_a_long_session_of_random_use_never_breaks_the_window(person, qtbot):
    start = time.monotonic()
    deadline = start + 60 * MINUTES if MINUTES > 0 else None
    done = 0
    with qtbot.captureExceptions() as escaped:
        person.open_graph(EXAMPLES[0])
        while (done < ACTIONS) if deadline is None else (time.monotonic() < deadline):
            person.act()
            done += 1
            assert not escaped, f"after {done} actions an exception escaped into Qt: {escaped[0][1]!r}"
            person.check_views()
        person.close_dialogs()
        person.check_runs_ended()
        person.finish_graph()
        assert not escaped, f"an exception escaped into Qt: {escaped[0][1]!r}"
    minutes = (time.monotonic() - start) / 60
    print(f"\nsoak: {done} actions in {minutes:.1f} min, {len(person.submitted)} jobs "
          f"({sum(r.ok for r in person.finished)} done, {sum(r.cancelled for r in person.finished)} cancelled), "
          f"actions {dict(sorted(person.counts.items()))}, effective {dict(sorted(person.effective.items()))}, "
          f"failures {[r.error_message[:80] for r in person.finished if not r.ok and not r.cancelled][:5]}")
    assert person.counts.get("connect", 0) and person.counts.get("edit_param", 0)
