"""Shared PNGs keep file locations private by default: `main.py run` records paths relative to the
graph's folder plus each file's sha256; --absolute-paths records absolute ones. A private PNG
placed where its relative paths resolve re-runs; elsewhere the missing file is named with its hash."""
from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pytest
from PIL import Image as PILImage
from toy_nodes import build_graph

from engine import graph_file
from engine.pngmeta import read_png_graph
from engine.provenance import missing_files
from kiln.cli import main


@pytest.fixture
def project(tmp_path):
    folder = tmp_path / "secret-home" / "project"
    (folder / "photos").mkdir(parents=True)
    PILImage.fromarray(np.full((8, 12, 3), 90, np.uint8)).save(folder / "photos" / "cat.png")
    graph = build_graph({"load": ("LoadImage", {"path": "photos/cat.png"}), "inv": ("ImageInvert", {}),
                         "save": ("SaveImage", {"prefix": "pic"})},
                        ["load.image -> inv.image", "inv.image -> save.image"])
    graph_file.save(graph, folder / "graph.json")
    return folder


def run(graph, out, *flags: str) -> int:
    return main(["run", str(graph), "--out", str(out), "--cache-dir", str(out.parent / "cache"), *flags])


def only_png(folder):
    found = sorted(folder.glob("*.png"))
    assert len(found) == 1, found
    return found[0]


def test_default_records_relative_paths_and_hashes_not_the_home_folder(project, tmp_path):
    assert run(project / "graph.json", tmp_path / "out") == 0
    data = read_png_graph(str(only_png(tmp_path / "out")))
    assert "secret-home" not in json.dumps(data)
    assert data["nodes"]["load"]["params"]["path"] == "photos/cat.png"
    digest = hashlib.sha256((project / "photos" / "cat.png").read_bytes()).hexdigest()
    assert data["files"] == [{"node": "load", "param": "path", "path": "photos/cat.png", "sha256": digest}]


def test_absolute_paths_when_the_user_keeps_them_on(project, tmp_path):
    assert run(project / "graph.json", tmp_path / "out", "--absolute-paths") == 0
    data = read_png_graph(str(only_png(tmp_path / "out")))
    assert data["nodes"]["load"]["params"]["path"] == str(project / "photos" / "cat.png")
    assert "files" not in data


def test_a_private_png_reruns_beside_its_files_and_names_a_missing_one(project, tmp_path, capsys):
    assert run(project / "graph.json", tmp_path / "out") == 0
    beside = project / "shared.png"
    shutil.copy(only_png(tmp_path / "out"), beside)
    assert missing_files(read_png_graph(str(beside)), str(project)) == []
    assert run(beside, tmp_path / "again") == 0
    assert (only_png(tmp_path / "again")).exists()

    elsewhere = tmp_path / "inbox" / "shared.png"
    elsewhere.parent.mkdir()
    shutil.copy(beside, elsewhere)
    capsys.readouterr()
    assert run(elsewhere, tmp_path / "third") != 0
    err = capsys.readouterr().err
    digest = hashlib.sha256((project / "photos" / "cat.png").read_bytes()).hexdigest()
    assert "photos/cat.png" in err and digest[:12] in err and "missing" in err


def test_gui_save_image_is_private_while_history_restore_keeps_finding_files(qtbot, project, tmp_path):
    from gui_support import close_window, make_settings, make_window, wait_idle

    window = make_window(qtbot, tmp_path, make_settings(tmp_path))
    assert window.open_file(str(project / "graph.json"))
    window.run_graph()
    wait_idle(qtbot, window)
    entry = window.viewer.current
    png = tmp_path / "saved.png"
    assert window.save_image(entry, str(png))
    assert read_png_graph(str(png))["nodes"]["load"]["params"]["path"] == "photos/cat.png"
    window.new_graph()
    assert window.files.restore_from_history(entry)
    assert window.doc.graph.nodes["load"].params["path"] == str(project / "photos" / "cat.png")
    close_window(window)


def test_settings_default_to_private_and_the_dialog_keeps_the_choice(qtbot, tmp_path):
    from gui_support import make_settings

    from app.settings import SettingsDialog

    settings = make_settings(tmp_path)
    assert settings.engine_settings().absolute_paths is False
    dialog = SettingsDialog(settings)
    qtbot.addWidget(dialog)
    dialog.absolute_paths.setChecked(True)
    dialog.accept()
    assert settings.engine_settings().absolute_paths is True
