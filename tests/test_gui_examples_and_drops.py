"""Graphs that move: restored from the viewer's history or a saved picture after another graph was
opened, shipped examples that open as templates, and pictures dropped on the canvas."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from gui_support import Answers, close_window, demo_graph, make_settings, make_window, wait_idle
from PIL import Image as PILImage
from PySide6.QtCore import QMimeData, QPoint, QPointF, Qt, QTimer, QUrl
from PySide6.QtGui import QDragEnterEvent, QDropEvent
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication, QFileDialog, QMessageBox

from app import file_controller
from engine import graph_file
from engine.pngmeta import read_png_graph, write_png

# QDragEnterEvent's only constructor is marked deprecated by PySide6
pytestmark = pytest.mark.filterwarnings("ignore:Function.*QDragEnterEvent:DeprecationWarning")
EXAMPLES = Path(__file__).resolve().parents[1] / "resources" / "graphs"


@pytest.fixture
def window(qtbot, tmp_path):
    w = make_window(qtbot, tmp_path, make_settings(tmp_path))
    yield w
    close_window(w)


@pytest.fixture
def examples(tmp_path, monkeypatch) -> Path:
    """A copy of the shipped examples standing in for resources/graphs, so no test can harm the real ones."""
    folder = tmp_path / "kiln" / "resources" / "graphs"
    shutil.copytree(EXAMPLES, folder)
    monkeypatch.setattr(file_controller, "EXAMPLES_DIR", folder)
    return folder


def _inpainting_copy(tmp_path: Path) -> Path:
    shared = tmp_path / "shared"
    shared.mkdir()
    for name in ("inpainting.json", "sample_scene.png"):
        shutil.copy(EXAMPLES / name, shared / name)
    return shared / "inpainting.json"


def _rerun(window, qtbot, targets: list[str] | None = None) -> None:
    window.run_control.last_result = None
    window.run_graph(targets)
    wait_idle(qtbot, window, timeout=120000)


def _errors(window) -> list[str]:
    return [text for level, text in window.log.lines if level == "error"]


# --- 1: the graph recorded with a picture keeps its files ---------------------------------------


def test_a_graph_restored_from_the_history_after_opening_another_still_finds_its_picture(
        window, qtbot, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no sample_scene.png here: only the graph's folder has it
    assert window.open_file(str(_inpainting_copy(tmp_path)))
    for sampler in ("sampler", "refine"):
        window.editor.set_param(sampler, "steps", 1)
    _rerun(window, qtbot)
    assert window.run_control.last_result.ok, _errors(window)
    entry = window.viewer.entries()[0]
    graph_file.save(demo_graph(), tmp_path / "other.json")
    window.ask = Answers(unsaved="discard")
    assert window.open_file(str(tmp_path / "other.json"))
    history = window.viewer.history
    item = history.item(0)
    assert item.data(Qt.ItemDataRole.UserRole) is entry
    spot = history.visualItemRect(item).center()
    qtbot.mouseClick(history.viewport(), Qt.MouseButton.LeftButton, pos=spot)  # a double-click's first half
    qtbot.mouseDClick(history.viewport(), Qt.MouseButton.LeftButton, pos=spot)
    assert "image" in window.doc.graph.nodes and window.doc.undo_stack.undoText().startswith("Restore graph")
    _rerun(window, qtbot)
    assert window.run_control.last_result.ok, window.run_control.last_result.error_message
    assert _errors(window) == []


def test_a_picture_saved_from_the_viewer_reopens_with_its_input_picture_found(window, qtbot, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    window.settings.set_engine(absolute_paths=True)  # the privacy setting off: PNGs name files absolutely
    window.runner.set_settings(window.settings.engine_settings())  # (private PNGs: test_picture_privacy.py)
    assert window.open_file(str(_inpainting_copy(tmp_path)))
    _rerun(window, qtbot, ["image"])  # Load Image alone: no model needed
    (tmp_path / "pictures").mkdir()
    saved = tmp_path / "pictures" / "scene.png"
    assert window.save_image(window.viewer.current, str(saved))
    assert read_png_graph(saved)["nodes"]["image"]["params"]["path"] == str(tmp_path / "shared" / "sample_scene.png")
    window.doc.undo_stack.setClean()
    assert window.open_file(str(saved))
    _rerun(window, qtbot, ["image"])
    assert window.run_control.last_result.ok, window.run_control.last_result.error_message


# --- 3: shipped examples are templates ----------------------------------------------------------


def _stub_save_dialog(monkeypatch, answer: str = "") -> list[str]:
    starts: list[str] = []

    def fake(parent, caption, start, filters):
        starts.append(start)
        return answer, filters

    monkeypatch.setattr(QFileDialog, "getSaveFileName", staticmethod(fake))
    return starts


def test_file_menu_lists_the_shipped_examples(window):
    window.files.fill_examples(window.examples_menu)
    names = [a.text() for a in window.examples_menu.actions()]
    assert names == [p.stem.replace("_", " ") for p in sorted(EXAMPLES.glob("*.json"))]
    assert "inpainting" in names


def test_save_on_an_example_asks_for_a_name_in_the_documents_folder(window, examples, monkeypatch, tmp_path):
    shipped = (examples / "inpainting.json").read_bytes()
    window.files.fill_examples(window.examples_menu)
    next(a for a in window.examples_menu.actions() if a.text() == "inpainting").trigger()
    assert window.windowTitle().startswith("inpainting.json (example) —")
    window.editor.set_param("sampler", "steps", 3)
    starts = _stub_save_dialog(monkeypatch)  # the user cancels the dialog
    window.actions["save"].trigger()
    assert [Path(s) for s in starts] == [Path(file_controller.documents_dir()) / "inpainting.json"]
    assert (examples / "inpainting.json").read_bytes() == shipped
    mine = tmp_path / "mine" / "inpainting.json"
    mine.parent.mkdir()
    _stub_save_dialog(monkeypatch, str(mine))
    window.actions["save"].trigger()
    assert graph_file.load(mine).nodes["sampler"].params["steps"] == 3
    assert window.doc.path == str(mine) and (examples / "inpainting.json").read_bytes() == shipped


def _press_enter_on_the_question() -> None:
    box = QApplication.activeModalWidget()
    if isinstance(box, QMessageBox):
        QTest.keyClick(box, Qt.Key.Key_Return)
    else:
        QTimer.singleShot(20, _press_enter_on_the_question)


def _answer_with_enter(window) -> bool:
    """Ask the real unsaved-changes dialog (confirm_discard) and press Enter in it."""
    window.ask = window.files.ask_with_dialog
    QTimer.singleShot(0, _press_enter_on_the_question)
    try:
        return window.confirm_discard()
    finally:
        window.ask = Answers(unsaved="discard")  # closing the window must never wait on a dialog


def test_enter_in_the_unsaved_question_never_overwrites_an_example(window, examples, monkeypatch):
    shipped = (examples / "text_to_image.json").read_bytes()
    assert window.open_file(str(examples / "text_to_image.json"))
    window.editor.rename("sampler", "changed")
    save_dialogs = _stub_save_dialog(monkeypatch)
    assert not _answer_with_enter(window)  # Enter cancels: nothing saved, nothing discarded
    assert save_dialogs == [] and window.doc.dirty
    assert (examples / "text_to_image.json").read_bytes() == shipped


def test_enter_in_the_unsaved_question_saves_the_user_s_own_file(window, tmp_path):
    path = tmp_path / "mine.json"
    graph_file.save(demo_graph(), path)
    assert window.open_file(str(path))
    window.editor.rename("solid", "changed")
    assert _answer_with_enter(window)
    assert graph_file.load(path).nodes["solid"].title == "changed"


# --- 4: pictures dropped on the canvas ----------------------------------------------------------


def _drop(window, paths: list[Path], at: QPoint) -> None:
    """Drag the files in from outside and let go at `at` (viewport coordinates)."""
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(p)) for p in paths])
    target = window.view.viewport()
    enter = QDragEnterEvent(at, Qt.DropAction.CopyAction, mime, Qt.MouseButton.NoButton,
                            Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(target, enter)
    assert enter.isAccepted()
    drop = QDropEvent(QPointF(at), Qt.DropAction.CopyAction, mime, Qt.MouseButton.NoButton,
                      Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(target, drop)
    assert drop.isAccepted()


def test_a_dropped_picture_becomes_a_load_image_node_where_it_was_dropped(window, tmp_path):
    window.doc.set_graph(demo_graph(), None)
    photo = tmp_path / "photo.jpg"
    PILImage.new("RGB", (20, 10), (10, 200, 30)).save(photo)
    before = window.doc.undo_stack.count()
    at = QPoint(300, 200)
    _drop(window, [photo], at)
    added = [n for n in window.doc.graph.nodes.values() if n.type == "LoadImage"]
    assert len(added) == 1 and added[0].params["path"] == str(photo)
    where = window.view.mapToScene(at)
    assert abs(added[0].pos[0] - where.x()) < 30 and abs(added[0].pos[1] - where.y()) < 30
    assert window.doc.undo_stack.count() == before + 1 and "photo.jpg" in window.doc.undo_stack.undoText()
    assert window.doc.path is None and set(window.doc.graph.nodes) >= {"solid", "invert", "preview"}
    window.doc.undo_stack.undo()
    assert not any(n.type == "LoadImage" for n in window.doc.graph.nodes.values())


def test_several_pictures_and_a_png_without_a_graph_are_one_undo_step(window, tmp_path):
    plain = tmp_path / "plain.png"
    PILImage.new("RGB", (8, 8), (255, 0, 0)).save(plain)
    webp = tmp_path / "pic.webp"
    PILImage.new("RGB", (8, 8), (0, 0, 255)).save(webp)
    _drop(window, [plain, webp], QPoint(100, 100))
    paths = sorted(n.params["path"] for n in window.doc.graph.nodes.values())
    assert paths == sorted([str(plain), str(webp)])
    assert window.doc.undo_stack.count() == 1
    window.doc.undo_stack.undo()
    assert window.doc.graph.nodes == {}


def test_a_dropped_kiln_png_opens_the_graph_it_carries(window, tmp_path):
    from engine.graph_file import graph_to_dict

    png = tmp_path / "made.png"
    write_png(png, np.zeros((4, 4, 3), np.uint8), graph_to_dict(demo_graph()), {"seed": 1})
    _drop(window, [png], QPoint(100, 100))
    assert set(window.doc.graph.nodes) == {"solid", "invert", "preview"}
    assert window.doc.undo_stack.count() == 0  # opened, not added
