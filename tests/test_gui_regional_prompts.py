"""Regional prompts from the editor: draw a box in the Layout Editor (free text), type its prompt in the box
table, run, and the picture changes inside that box."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from gui_support import close_window, make_window, wait_idle
from PySide6.QtWidgets import QApplication
from test_editors import drag

EXAMPLE = Path(__file__).resolve().parents[1] / "resources" / "graphs" / "regional_prompts.json"


@pytest.fixture
def window(qtbot, tmp_path):
    w = make_window(qtbot, tmp_path)
    yield w
    close_window(w)


def _run(window, qtbot) -> np.ndarray:
    window.run_control.last_result = None
    window.run_graph(None)
    wait_idle(qtbot, window, timeout=120_000)
    assert window.run_control.last_result.ok, window.run_control.last_result.error_message
    return window.viewer.current.pixels.astype(np.float32)


def _red(pixels: np.ndarray) -> np.ndarray:
    r, g, b = pixels[..., 0], pixels[..., 1], pixels[..., 2]
    return (r > 150) & (g < 110) & (b < 110)


def test_a_drawn_box_with_a_typed_prompt_changes_the_picture_inside_it(window, qtbot):
    assert window.open_file(str(EXAMPLE))
    window.editor.set_param("sampler", "steps", 12)
    window.editor.set_param("regions", "boxes", [])
    before = _run(window, qtbot)  # the global prompt alone: "on a white background"

    dialog = window.open_node_editor("regions")
    qtbot.waitExposed(dialog)
    dialog.activateWindow()
    qtbot.waitUntil(lambda: QApplication.activeWindow() is dialog, timeout=2000)
    dialog.view.set_zoom(1.0)  # the 512 x 512 blank canvas, one screen pixel per canvas pixel
    dialog.view.centerOn(0, 0)
    assert dialog.vocabulary_combo.currentText() == "free text"
    assert dialog.table.horizontalHeaderItem(0).text() == "Label / prompt"
    drag(dialog.view, [(64, 64), (200, 200), (320, 320)])  # a box over 0.125 .. 0.625 of the picture
    assert len(dialog.boxes) == 1
    dialog.table.item(0, 0).setText("a large red circle")
    assert dialog.boxes[0]["label"] == "a large red circle"
    dialog.accept()
    boxes = window.doc.graph.nodes["regions"].params["boxes"]
    assert [b["label"] for b in boxes] == ["a large red circle"]
    x0, y0, x1, y1 = (round(v * 128) for v in boxes[0]["box"])

    after = _run(window, qtbot)
    inside = np.zeros(after.shape[:2], bool)
    inside[y0:y1, x0:x1] = True
    change = np.abs(after - before).mean(-1)
    assert change[inside].mean() > 4 * change[~inside].mean()
    red_inside, red_outside = _red(after)[inside].sum(), _red(after)[~inside].sum()
    assert red_inside > 200 and red_outside < 0.05 * red_inside  # a red object, in the box (edges may spill)
    assert _red(before).sum() < 20
