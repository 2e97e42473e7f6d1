"""PNG images carry their graph and run info; other PNGs give clear errors."""
from __future__ import annotations

import io
import json
import os
import zlib

import numpy as np
import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from engine import graph_file, pngmeta
from engine.errors import GraphFileError, KilnError
from engine.graph import Graph, Link, Node

INFO = {
    "seed": 1234567890123,
    "prompt": "a red circle\nabove a blue square",
    "negative_prompt": "blurry",
    "steps": 50,
    "sampler": "plms",
    "cfg_scale": 7.5,
    "width": 16,
    "height": 12,
    "models": [{"role": "model", "file": "shapes-txt2img.safetensors", "sha256": "9f86d081884c7d659a2f"}],
}


def small_graph() -> Graph:
    graph = Graph(meta={"note": "für Ada 🎨"})
    graph.add_node(Node("n", "Number", title="Zahl", params={"value": 3}, pos=(1.0, 2.0)))
    graph.add_node(Node("show", "Show", pos=(200.0, 2.0)))
    graph.connect(Link("n", "value", "show", "value"))
    return graph


def pixels(channels: int = 3) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(12, 16, channels), dtype=np.uint8)


@pytest.mark.parametrize("channels", [3, 4])
def test_graph_info_and_pixels_come_back(tmp_path, channels):
    path = tmp_path / "out.png"
    graph_dict = graph_file.graph_to_dict(small_graph())
    pngmeta.write_png(path, pixels(channels), graph_dict, INFO)
    assert pngmeta.read_png_graph(path) == graph_dict
    assert pngmeta.read_png_info(path) == INFO
    with Image.open(path) as image:
        assert image.mode == ("RGB" if channels == 3 else "RGBA")
        assert np.array_equal(np.asarray(image), pixels(channels))


def test_graph_file_load_reads_the_graph_from_a_png(tmp_path):
    path = tmp_path / "made.png"
    pngmeta.write_png(path, pixels(), graph_file.graph_to_dict(small_graph()), INFO)
    assert graph_file.load(path) == small_graph()


def test_other_tools_see_a_readable_summary(tmp_path):
    path = tmp_path / "out.png"
    pngmeta.write_png(path, pixels(), None, INFO)
    with Image.open(path) as image:
        summary = image.text["parameters"]
    lines = summary.split("\n")
    assert lines[0] == "a red circle above a blue square"
    assert lines[1] == "Negative prompt: blurry"
    assert lines[2].startswith("Steps: 50, Sampler: plms, CFG scale: 7.5, Seed: 1234567890123")
    assert "Size: 16x12" in lines[2] and "Model: shapes-txt2img.safetensors (sha256 9f86d08188)" in lines[2]


def test_numpy_values_in_info_are_stored_as_plain_json():
    data = pngmeta.encode_png(pixels(), None, {"seed": np.int64(5), "sigmas": np.array([1.5, 0.5])})
    with Image.open(io.BytesIO(data)) as image:
        assert json.loads(image.text["kiln.info"]) == {"seed": 5, "sigmas": [1.5, 0.5]}


def test_encode_png_rejects_pixels_that_are_not_uint8_rgb():
    with pytest.raises(ValueError, match="uint8 pixels"):
        pngmeta.encode_png(np.zeros((4, 4, 3), dtype=np.float32), None, None)
    with pytest.raises(ValueError, match="uint8 pixels"):
        pngmeta.encode_png(np.zeros((4, 4), dtype=np.uint8), None, None)


def _plain_png(path, text: dict[str, str]) -> None:
    chunks = PngInfo()
    for key, value in text.items():
        chunks.add_text(key, value)
    Image.fromarray(pixels()).save(path, format="PNG", pnginfo=chunks)


def test_a_png_without_a_graph_says_so(tmp_path):
    path = tmp_path / "photo.png"
    _plain_png(path, {"Software": "GIMP"})
    with pytest.raises(GraphFileError) as caught:
        pngmeta.read_png_graph(path)
    assert str(caught.value) == f"{path}: has no Kiln graph embedded"
    with pytest.raises(GraphFileError, match="photo.png: has no Kiln graph embedded"):
        graph_file.load(path)
    with pytest.raises(GraphFileError, match="photo.png: has no Kiln run info embedded"):
        pngmeta.read_png_info(path)


def test_a_comfyui_png_is_recognised(tmp_path):
    path = tmp_path / "ComfyUI_00001_.png"
    _plain_png(path, {"prompt": '{"3": {"class_type": "KSampler"}}', "workflow": "{}"})
    with pytest.raises(GraphFileError, match="is a ComfyUI image; it has no Kiln graph embedded"):
        pngmeta.read_png_graph(path)
    assert graph_file.load(path).nodes["3"].type == "Sampler"  # converted (engine.comfy; tests/test_comfy_import.py)


def test_a_file_that_is_not_a_png(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("hello", encoding="utf-8")
    with pytest.raises(GraphFileError, match="notes.png: is not a PNG image"):
        pngmeta.read_png_graph(path)
    with pytest.raises(GraphFileError, match="absent.png: cannot be read"):
        pngmeta.read_png_graph(tmp_path / "absent.png")


def test_damaged_pngs_give_clear_errors(tmp_path):
    good = pngmeta.encode_png(pixels(), graph_file.graph_to_dict(small_graph()), INFO)
    cut = tmp_path / "cut.png"
    cut.write_bytes(good[: len(good) // 2])
    with pytest.raises(GraphFileError, match="cut.png: is a damaged PNG \\(cut short\\)"):
        graph_file.load(cut)
    flipped = bytearray(good)
    flipped[good.index(b"kiln.graph") + 20] ^= 0xFF
    bad = tmp_path / "bad.png"
    bad.write_bytes(bytes(flipped))
    with pytest.raises(GraphFileError, match="bad.png: is a damaged PNG \\(bad checksum in its 'iTXt' chunk\\)"):
        graph_file.load(bad)


def test_an_embedded_graph_that_is_not_json_is_reported(tmp_path):
    path = tmp_path / "odd.png"
    _plain_png(path, {"kiln.graph": "{not json"})
    with pytest.raises(GraphFileError, match="odd.png: has a damaged Kiln graph embedded"):
        graph_file.load(path)


def test_a_newer_graph_inside_a_png_names_the_png(tmp_path):
    path = tmp_path / "future.png"
    pngmeta.write_png(path, pixels(), {"format": "kiln.graph", "version": 2, "nodes": {}}, None)
    with pytest.raises(GraphFileError, match="future.png: made by a newer Kiln \\(graph version 2"):
        graph_file.load(path)


def test_the_graph_chunk_is_compressed(tmp_path):
    graph = small_graph()
    graph.nodes["n"].params["layout"] = [{"label": "circle", "box": [0.1, 0.1, 0.5, 0.5]}] * 200
    data = pngmeta.encode_png(pixels(), graph_file.graph_to_dict(graph), None)
    text_size = len(json.dumps(graph_file.graph_to_dict(graph)))
    assert len(data) < text_size / 4
    start = data.index(b"kiln.graph\0") + len(b"kiln.graph\0")
    assert data[start:start + 2] == b"\x01\x00"  # iTXt compressed with zlib
    inflated = zlib.decompressobj().decompress(data[start + 4:])
    assert json.loads(inflated) == graph_file.graph_to_dict(graph)


def test_write_png_is_atomic_and_reports_unwritable_paths(tmp_path):
    path = tmp_path / "a.png"
    pngmeta.write_png(path, pixels(), None, None)
    pngmeta.write_png(path, pixels(4), None, None)
    assert os.listdir(tmp_path) == ["a.png"]
    with Image.open(path) as image:
        assert image.mode == "RGBA"
    with pytest.raises(KilnError, match="missing.*b.png: cannot be written"):
        pngmeta.write_png(tmp_path / "missing" / "b.png", pixels(), None, None)
