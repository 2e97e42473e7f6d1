"""Node search finds Kiln's nodes by the names ComfyUI and A1111 users know, typed into the popup."""
from __future__ import annotations

import pytest
from gui_support import close_window, make_window
from PySide6.QtCore import QPointF, Qt


@pytest.fixture
def window(qtbot, tmp_path):
    w = make_window(qtbot, tmp_path)
    yield w
    close_window(w)


def _type(window, qtbot, text: str) -> list[str]:
    """Open the search popup on the canvas, type `text`; the node types listed, best first."""
    window.open_search(QPointF(0, 0))
    assert window.search.isVisible()
    qtbot.keyClicks(window.search.query, text)
    results = window.search.results
    return [results.item(i).data(Qt.ItemDataRole.UserRole) for i in range(results.count())]


@pytest.mark.parametrize("typed, kiln_type", [
    ("ksampler", "Sampler"),
    ("vae decode", "AutoencoderDecode"),
    ("vae encode", "AutoencoderEncode"),
    ("clip text encode", "TextEncode"),
    ("CLIPTextEncode", "TextEncode"),
    ("empty latent image", "EmptyLatent"),
    ("load checkpoint", "CheckpointLoader"),
    ("checkpoint loader", "CheckpointLoader"),
    ("save image", "SaveImage"),
    ("load image", "LoadImage"),
    ("autoencoder encode", "AutoencoderEncode"),
    ("autoencoder decode", "AutoencoderDecode"),
    ("txt2img", "Sampler"),
])
def test_other_tools_names_find_the_kiln_node_first(window, qtbot, typed, kiln_type):
    assert _type(window, qtbot, typed)[0] == kiln_type


def test_upscale_finds_the_resize_and_the_super_resolution_model(window, qtbot):
    # with ComfyUI's Upscale Latent (By): the four upscalers first, whatever their order
    found = set(_type(window, qtbot, "upscale")[:4])
    assert found == {"ImageScale", "SuperResolutionConditioning", "LatentUpscale", "LatentUpscaleBy"}


def test_enter_places_the_node_found_by_its_comfyui_name(window, qtbot):
    _type(window, qtbot, "vae decode")
    qtbot.keyClick(window.search.query, Qt.Key.Key_Return)
    assert [n.type for n in window.doc.graph.nodes.values()] == ["AutoencoderDecode"]


def test_no_match_says_so_in_the_popup(window, qtbot):
    assert _type(window, qtbot, "xyz") == []
    assert window.search.hint.text() == "No node matches 'xyz'"
    window.search.query.selectAll()
    qtbot.keyClicks(window.search.query, "ksampler")
    assert window.search.hint.text() == window.registry["Sampler"].help
