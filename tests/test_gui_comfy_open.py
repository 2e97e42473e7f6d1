"""The editor opens a ComfyUI workflow with node types Kiln lacks: the rest is editable, the missing
nodes are marked, the log says what happened, and Save never writes over the workflow."""
from __future__ import annotations

import pytest
from comfy_support import FIXTURES
from gui_support import close_window, make_settings, make_window


@pytest.fixture
def window(qtbot, tmp_path):
    w = make_window(qtbot, tmp_path, make_settings(tmp_path))
    yield w
    close_window(w)


def test_a_comfyui_workflow_with_missing_types_opens_marked(window, qtbot):
    assert window.open_file(str(FIXTURES / "missing_types_ui.json"))
    graph = window.doc.graph
    assert graph.nodes["3"].type == "Sampler" and graph.nodes["12"].type == "comfyui:ControlNetLoader"
    assert window.doc.path is None  # Save asks for a name
    assert set(window.scene.nodes) == set(graph.nodes)
    assert "(unknown type)" not in window.scene.nodes["12"].title()  # titled "Missing: ControlNetLoader"
    lines = "\n".join(text for _level, text in window.log.lines)
    assert "converted from a ComfyUI workflow" in lines
    assert "ControlNetLoader (node 12), ControlNetApplyAdvanced (nodes 14, 15)" in lines
