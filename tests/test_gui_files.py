"""Files from the window: save and reopen, Kiln PNGs, drag and drop, autosave recovery, close prompts."""
from __future__ import annotations

import os

import pytest
from gui_support import Answers, close_window, demo_graph, make_settings, make_window, wait_idle
from PySide6.QtCore import QMimeData, QPoint, QPointF, Qt, QUrl
from PySide6.QtGui import QDragEnterEvent, QDropEvent
from PySide6.QtWidgets import QApplication

from engine import graph_file
from engine.pngmeta import read_png_info


@pytest.fixture
def settings(tmp_path):
    return make_settings(tmp_path)


@pytest.fixture
def window(qtbot, tmp_path, settings):
    w = make_window(qtbot, tmp_path, settings)
    yield w
    close_window(w)


def test_save_as_then_reopen_gives_the_same_graph(window, tmp_path):
    window.doc.set_graph(demo_graph(), None)
    window.editor.rename("solid", "Sky")
    assert window.windowTitle().startswith("untitled*")
    path = tmp_path / "mine.json"
    assert window.save_as(str(path))
    saved = path.read_text(encoding="utf-8")
    assert saved == window.doc.dumps()
    assert window.windowTitle().startswith("mine.json —") and not window.doc.dirty
    window.new_graph()
    assert window.doc.graph.nodes == {}
    assert window.open_file(str(path))
    assert window.doc.dumps() == saved
    assert window.settings.recent_files()[0] == str(path)


def test_ctrl_s_on_an_opened_file_writes_it_in_place(window, tmp_path):
    path = tmp_path / "g.json"
    graph_file.save(demo_graph(), path)
    window.open_file(str(path))
    window.editor.set_param("solid", "width", 40)
    window.actions["save"].trigger()
    assert graph_file.load(path).nodes["solid"].params["width"] == 40
    assert not window.doc.dirty


def test_a_saved_picture_reopens_as_the_graph_that_made_it(window, qtbot, tmp_path):
    window.doc.set_graph(demo_graph(), None)
    window.run_graph()
    wait_idle(qtbot, window)
    made_with = window.doc.dumps()
    png = tmp_path / "result.png"
    assert window.save_image(window.viewer.current, str(png))
    assert read_png_info(str(png))["node"] == "preview"
    window.editor.set_param("solid", "color", "#000000")
    window.doc.undo_stack.setClean()
    assert window.open_file(str(png))
    assert window.doc.dumps() == made_with
    assert window.doc.path is None  # saving asks for a new .json name instead of overwriting the PNG


# QDragEnterEvent's only constructor is marked deprecated by PySide6
@pytest.mark.filterwarnings("ignore:Function.*QDragEnterEvent:DeprecationWarning")
def test_dropping_a_graph_file_on_the_window_opens_it(window, qtbot, tmp_path):
    path = tmp_path / "dropped.json"
    graph_file.save(demo_graph(), path)
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(path))])
    target = window.view.viewport()
    enter = QDragEnterEvent(QPoint(50, 50), Qt.DropAction.CopyAction, mime, Qt.MouseButton.NoButton,
                            Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(target, enter)
    assert enter.isAccepted()
    drop = QDropEvent(QPointF(50, 50), Qt.DropAction.CopyAction, mime, Qt.MouseButton.NoButton,
                      Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(target, drop)
    assert window.doc.path == str(path)
    assert set(window.doc.graph.nodes) == {"solid", "invert", "preview"}


def test_a_broken_file_gives_one_clear_line_and_keeps_the_graph(window, tmp_path):
    window.doc.set_graph(demo_graph(), None)
    bad = tmp_path / "bad.json"
    bad.write_text('{"nodes": [1, 2', encoding="utf-8")
    assert not window.open_file(str(bad))
    level, text = window.log.lines[-1]
    assert level == "error" and text.startswith(str(bad))
    assert "\n" not in text
    assert set(window.doc.graph.nodes) == {"solid", "invert", "preview"}


def test_autosave_after_a_crash_is_offered_and_restored(qtbot, tmp_path, settings):
    crashed = make_window(qtbot, tmp_path, settings)
    crashed.autosaver.timer.setInterval(50)
    crashed.doc.set_graph(demo_graph(), None)
    crashed.editor.rename("invert", "Unsaved work")
    qtbot.waitUntil(lambda: os.path.exists(crashed.autosaver.recovery_path), timeout=5000)
    expected = crashed.doc.dumps()
    crashed.runner.shutdown()  # the process "dies": no close, the recovery file stays

    fresh = make_window(qtbot, tmp_path, settings)
    fresh.ask = Answers(recover="yes")
    assert fresh.offer_recovery()
    assert fresh.ask.asked[0][0] == "recover"
    assert fresh.doc.dumps() == expected
    assert fresh.doc.dirty  # still needs saving
    close_window(fresh)
    assert not os.path.exists(settings.recovery_path())
    close_window(crashed)


def test_declining_the_recovery_discards_it(qtbot, tmp_path, settings):
    first = make_window(qtbot, tmp_path, settings)
    first.doc.set_graph(demo_graph(), None)
    first.editor.rename("solid", "x")
    first.autosaver.save_now()
    second = make_window(qtbot, tmp_path, settings)
    second.ask = Answers(recover="no")
    assert not second.offer_recovery()
    assert not os.path.exists(settings.recovery_path())
    assert second.doc.graph.nodes == {}
    close_window(second)
    close_window(first)


def test_closing_with_unsaved_changes_asks_first(window, tmp_path):
    window.doc.set_graph(demo_graph(), None)
    window.editor.rename("solid", "changed")
    window.ask = Answers(unsaved="cancel")
    assert not window.close()
    assert window.isVisible() and window.ask.asked[0][0] == "unsaved"
    window.ask = Answers(unsaved="discard")
    assert window.close()


def test_copy_puts_graph_json_on_the_system_clipboard(window):
    window.doc.set_graph(demo_graph(), None)
    window.scene.select_nodes(["solid", "invert"])
    window.actions["copy"].trigger()
    text = QApplication.clipboard().text()
    copied = graph_file.loads(text)
    assert set(copied.nodes) == {"solid", "invert"} and len(copied.links) == 1
    window.actions["paste"].trigger()
    assert len(window.doc.graph.nodes) == 5


def test_settings_persist_in_the_isolated_store(tmp_path, settings):
    from PySide6.QtCore import QSettings

    from app.settings import AppSettings

    settings.set_engine(device="cpu", precision="fp16", memory_cache_gib=1.5, model_dirs=["/a", "/b"])
    again = AppSettings(QSettings(settings.store.fileName(), QSettings.Format.IniFormat))
    engine = again.engine_settings()
    assert (engine.device, engine.precision, engine.model_dirs) == ("cpu", "fp16", ("/a", "/b"))
    assert engine.memory_cache_bytes == int(1.5 * 1024**3)
    assert engine.cache_dir == str(tmp_path / "cache")
    assert str(tmp_path) in settings.store.fileName()


def test_a_graph_with_an_unknown_node_type_still_opens_and_says_what_is_missing(window, qtbot, tmp_path):
    from engine.graph import Link, Node

    graph = demo_graph()
    graph.add_node(Node("future", "FancyUpscaler9000", params={"strength": 3}, pos=(0.0, 300.0)))
    graph.connect(Link("future", "image", "preview", "image"))
    path = tmp_path / "shared.json"
    graph_file.save(graph, path)
    assert window.open_file(str(path))
    item = window.scene.nodes["future"]
    assert item.title() == "FancyUpscaler9000 (unknown type)"
    qtbot.waitUntil(lambda: "FancyUpscaler9000" in item.issue, timeout=5000)
    window.editor.rename("solid", "still editable")
    window.actions["undo"].trigger()
    assert window.doc.dumps() == path.read_text(encoding="utf-8")  # nothing of the unknown node is lost


def test_the_settings_dialog_writes_what_the_user_chose(window, settings):
    from app.settings import SettingsDialog

    dialog = SettingsDialog(settings, window)
    dialog.device.setCurrentText("cuda:1")
    dialog.memory.setValue(1.5)
    dialog.model_dirs.addItem("/models/extra")
    dialog.accept()
    engine = settings.engine_settings()
    assert engine.device == "cuda:1" and engine.memory_cache_bytes == int(1.5 * 1024**3)
    assert engine.model_dirs == ("/models/extra",)


def test_save_as_into_another_folder_keeps_the_pictures_the_graph_loads(window, tmp_path):
    from PIL import Image as PILImage
    from toy_nodes import build_graph

    shared = tmp_path / "shared"
    shared.mkdir()
    PILImage.new("RGB", (8, 8), (200, 0, 0)).save(shared / "scene.png")
    graph = build_graph({"image": ("LoadImage", {"path": "scene.png"})})
    graph_file.save(graph, shared / "graph.json")
    assert window.open_file(str(shared / "graph.json"))
    (tmp_path / "mine").mkdir()
    assert window.save_as(str(tmp_path / "mine" / "copy.json"))
    moved = os.path.join("..", "shared", "scene.png")
    assert window.doc.graph.nodes["image"].params["path"] == moved
    assert graph_file.load(tmp_path / "mine" / "copy.json").nodes["image"].params["path"] == moved
    assert graph_file.load(shared / "graph.json").nodes["image"].params["path"] == "scene.png"


def test_the_mask_painter_starts_from_the_mask_file_beside_the_graph(window, tmp_path, monkeypatch):
    import numpy as np
    from PIL import Image as PILImage
    from toy_nodes import build_graph

    shared = tmp_path / "shared"
    shared.mkdir()
    mask = np.zeros((16, 16), np.uint8)
    mask[4:12, 2:9] = 255
    PILImage.fromarray(mask, mode="L").save(shared / "hole.png")
    graph_file.save(build_graph({"mask": ("MaskPainter", {"width": 16, "height": 16, "path": "hole.png"})}),
                    shared / "graph.json")
    monkeypatch.chdir(tmp_path)
    assert window.open_file(str(shared / "graph.json"))
    dialog = window.open_node_editor("mask")
    try:
        assert (dialog.mask > 127).sum() == 8 * 7 and dialog.mask[5, 3] == 255
    finally:
        dialog.reject()


def test_a_file_param_browses_from_the_graph_folder(window, tmp_path, monkeypatch):
    from PIL import Image as PILImage
    from toy_nodes import build_graph

    from app.param_widgets import PathEditor

    shared = tmp_path / "shared"
    shared.mkdir()
    PILImage.new("RGB", (8, 8)).save(shared / "scene.png")
    graph_file.save(build_graph({"image": ("LoadImage", {"path": "scene.png"})}), shared / "graph.json")
    monkeypatch.chdir(tmp_path)
    assert window.open_file(str(shared / "graph.json"))
    window.properties.show_node("image")
    path_editor = window.properties.editors["path"]
    assert isinstance(path_editor, PathEditor)
    assert path_editor.dialog_start() == str(shared / "scene.png")
    path_editor.edit.setText("")
    assert path_editor.dialog_start() == str(shared)


def test_a_failed_save_leaves_the_open_graph_s_paths_as_they_were(window, tmp_path):
    from PIL import Image as PILImage
    from toy_nodes import build_graph

    from engine.errors import KilnError

    shared = tmp_path / "shared"
    shared.mkdir()
    PILImage.new("RGB", (8, 8)).save(shared / "scene.png")
    graph_file.save(build_graph({"image": ("LoadImage", {"path": "scene.png"})}), shared / "graph.json")
    assert window.open_file(str(shared / "graph.json"))
    with pytest.raises(KilnError):
        window.doc.save(str(tmp_path / "no such folder" / "copy.json"))
    assert window.doc.graph.nodes["image"].params["path"] == "scene.png"
    assert window.doc.graph.base_dir == str(shared)


def test_undo_after_save_as_into_another_folder_brings_back_the_same_files(window, tmp_path):
    from PIL import Image as PILImage
    from toy_nodes import build_graph

    from app.commands import RemoveCommand, SetParamCommand

    shared = tmp_path / "shared"
    shared.mkdir()
    for name in ("scene.png", "other.png"):
        PILImage.new("RGB", (8, 8)).save(shared / name)
    graph_file.save(build_graph({"image": ("LoadImage", {"path": "scene.png"}),
                                 "extra": ("LoadImage", {"path": "scene.png"})}), shared / "graph.json")
    assert window.open_file(str(shared / "graph.json"))
    doc = window.doc
    doc.undo_stack.push(SetParamCommand(doc, "image", "path", "other.png"))  # typed in the shared folder
    doc.undo_stack.push(RemoveCommand(doc, ["extra"]))
    (tmp_path / "mine").mkdir()
    assert window.save_as(str(tmp_path / "mine" / "copy.json"))
    doc.undo_stack.undo()  # the deleted node comes back reading the same picture
    assert doc.graph.nodes["extra"].params["path"] == os.path.join("..", "shared", "scene.png")
    doc.undo_stack.undo()
    assert doc.graph.nodes["image"].params["path"] == os.path.join("..", "shared", "scene.png")
    doc.undo_stack.redo()
    assert doc.graph.nodes["image"].params["path"] == os.path.join("..", "shared", "other.png")
