"""Artist input nodes and mask/image utilities: values, size reconciliation, clear errors,
graph-file round trips, and runs through the executor."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image as PILImage

from engine import drawing, graph_file
from engine.errors import UserInputError
from engine.executor import Executor
from engine.graph import Graph, Link, Node
from engine.spec import EngineSettings
from engine.values import Image, SemanticMap
from nodes import build_registry, image_utils, layout_nodes, mask_nodes, semantic_nodes

REGISTRY = build_registry()


def run_node(type_name: str, inputs: dict | None = None, **params):
    spec = REGISTRY[type_name]
    return spec.compute(None, inputs or {}, {**spec.default_params(), **params})


def image(width: int, height: int, value: float = 0.5, batch: int = 1) -> Image:
    return Image(torch.full((batch, 3, height, width), value))


def painted(width: int, height: int, rect: tuple[int, int, int, int]) -> str:
    mask = np.zeros((height, width), dtype=np.uint8)
    x0, y0, x1, y1 = rect
    mask[y0:y1, x0:x1] = 255
    return drawing.encode_png_b64(mask)


@pytest.fixture
def executor(tmp_path):
    return Executor(REGISTRY, EngineSettings(output_dir=str(tmp_path), cache_dir=str(tmp_path / "cache")))


# --- MaskPainter ----------------------------------------------------------------------


def test_mask_painter_outputs_the_painting_as_a_mask():
    mask = run_node("MaskPainter", mask=painted(64, 48, (8, 4, 28, 14)), width=64, height=48)["mask"]
    assert mask.shape == (1, 1, 48, 64) and mask.dtype == torch.float32
    assert int(mask.sum()) == 20 * 10 and float(mask.max()) == 1.0
    empty = run_node("MaskPainter", width=40, height=24)["mask"]
    assert empty.shape == (1, 1, 24, 40) and float(empty.sum()) == 0.0


def test_mask_painter_follows_its_image_size_and_rescales_a_mask_of_the_same_shape():
    text = painted(64, 64, (0, 0, 32, 64))  # left half
    mask = run_node("MaskPainter", {"image": image(128, 128)}, mask=text)["mask"]
    assert mask.shape == (1, 1, 128, 128) and int(mask.sum()) == 64 * 128
    with pytest.raises(UserInputError) as caught:
        run_node("MaskPainter", {"image": image(128, 64)}, mask=text)
    assert caught.value.param == "mask" and "64x64 but the image is 128x64" in str(caught.value)


def test_mask_painter_invert_grow_feather():
    text = painted(32, 32, (10, 10, 20, 20))
    inverted = run_node("MaskPainter", mask=text, width=32, height=32, invert=True)["mask"]
    assert int(inverted.sum()) == 32 * 32 - 100
    grown = run_node("MaskPainter", mask=text, width=32, height=32, grow=2)["mask"]
    assert int((grown > 0.5).sum()) > 100 and grown[0, 0, 8, 15] == 1.0
    shrunk = run_node("MaskPainter", mask=text, width=32, height=32, grow=-2)["mask"]
    assert int(shrunk.sum()) == 36
    soft = run_node("MaskPainter", mask=text, width=32, height=32, feather=3)["mask"]
    edge = float(soft[0, 0, 15, 10])
    assert 0.0 < edge < 1.0 and float(soft[0, 0, 15, 15]) == pytest.approx(1.0)


def test_mask_painter_reads_a_mask_file(tmp_path):
    white = np.zeros((32, 32, 3), dtype=np.uint8)
    white[:, 16:] = 255
    path = tmp_path / "mask.png"
    PILImage.fromarray(white).save(path)
    mask = run_node("MaskPainter", {"image": image(32, 32)}, path=str(path),
                    mask=painted(32, 32, (0, 0, 4, 4)))
    assert int(mask["mask"].sum()) == 16 * 32  # the file replaces the painting
    with pytest.raises(UserInputError) as caught:
        run_node("MaskPainter", path=str(tmp_path / "nope.png"))
    assert caught.value.param == "path" and "file not found" in str(caught.value)
    with pytest.raises(UserInputError) as caught:
        run_node("MaskPainter", mask="not a png")
    assert caught.value.param == "mask"


def test_mask_painter_through_the_executor_and_a_saved_graph(executor):
    graph = Graph()
    graph.add_node(Node("img", "SolidImage", params={"width": 64, "height": 64, "color": "#ff0000"}))
    graph.add_node(Node("mask", "MaskPainter", params={"mask": painted(32, 32, (0, 0, 16, 8)), "grow": 0}))
    graph.connect(Link("img", "image", "mask", "image"))
    loaded = graph_file.loads(graph_file.dumps(graph))
    assert loaded.nodes["mask"].params == graph.nodes["mask"].params
    result = executor.run(loaded, targets=["mask"])
    assert result.ok and int(result.outputs["mask"]["mask"].sum()) == 32 * 16
    loaded.nodes["img"].params["height"] = 32  # 64x32: another shape than the 32x32 painting
    failed = executor.run(loaded, targets=["mask"])
    assert not failed.ok and failed.error.node_id == "mask" and failed.error.param == "mask"
    assert "different shape" in str(failed.error) and not failed.error.details


# --- mask utilities --------------------------------------------------------------------


def test_mask_from_color_and_threshold():
    pixels = torch.zeros(1, 3, 4, 4)
    pixels[0, 0, :2] = 1.0  # top two rows red
    pixels[0, :, 3, 3] = torch.tensor([1.0, 0.02, 0.0])  # nearly red
    picture = Image(pixels)
    exact = run_node("MaskFromColor", {"image": picture}, color="#ff0000", tolerance=0)["mask"]
    assert exact.shape == (1, 1, 4, 4) and int(exact.sum()) == 8
    loose = run_node("MaskFromColor", {"image": picture}, color="#ff0000", tolerance=8)["mask"]
    assert int(loose.sum()) == 9
    with pytest.raises(UserInputError, match="not a colour"):
        run_node("MaskFromColor", {"image": picture}, color="red")
    red = run_node("MaskThreshold", {"image": picture}, channel="red", threshold=0.5)["mask"]
    luma = run_node("MaskThreshold", {"image": picture}, channel="luma", threshold=0.5)["mask"]
    assert int(red.sum()) == 9 and int(luma.sum()) == 0


def test_mask_combine_operations_and_sizes():
    a = torch.zeros(1, 1, 4, 4)
    a[..., :, :2] = 1  # left half
    b = torch.zeros(1, 1, 4, 4)
    b[..., :2, :] = 1  # top half
    expected = {"union": 12, "intersect": 4, "subtract": 4, "difference": 8}
    for operation, count in expected.items():
        assert int(run_node("MaskCombine", {"a": a, "b": b}, operation=operation)["mask"].sum()) == count
    big_b = torch.nn.functional.interpolate(b, scale_factor=2)
    assert int(run_node("MaskCombine", {"a": a, "b": big_b}, operation="intersect")["mask"].sum()) == 4
    with pytest.raises(UserInputError, match="mask b is 8x4 but mask a is 4x4"):
        run_node("MaskCombine", {"a": a, "b": torch.zeros(1, 1, 4, 8)})


def test_grow_feather_invert_and_mask_to_image():
    mask = torch.zeros(2, 1, 16, 16)
    mask[:, :, 6:10, 6:10] = 1
    grown = run_node("MaskGrowFeather", {"mask": mask}, grow=1)["mask"]
    assert grown.shape == (2, 1, 16, 16)
    assert int(grown[0].sum()) == 6 * 6 - 4  # a round (here cross) kernel: no corners
    inverted = run_node("InvertMask", {"mask": mask})["mask"]
    assert int(inverted.sum()) == 2 * (256 - 16)
    shown = run_node("MaskToImage", {"mask": mask})["image"]
    assert shown.pixels.shape == (2, 3, 16, 16) and float(shown.pixels[1, 2, 7, 7]) == 1.0


# --- image utilities --------------------------------------------------------------------


def test_crop_and_pad_to_multiples_keep_image_and_mask_aligned():
    pixels = torch.arange(21 * 13, dtype=torch.float32).view(1, 1, 13, 21).expand(1, 3, 13, 21) / 300
    mask = torch.zeros(1, 1, 13, 21)
    mask[..., 5, 9] = 1
    cropped = run_node("CropToMultiple", {"image": Image(pixels), "mask": mask}, multiple=8)
    assert cropped["image"].size == (16, 8) and cropped["mask"].shape == (1, 1, 8, 16)
    # centre anchor: 5 columns and 5 rows trimmed, 2 before; the marked pixel moves with the picture
    assert torch.equal(cropped["image"].pixels, pixels[..., 2:10, 2:18])
    assert cropped["mask"][0, 0, 3, 7] == 1
    padded = run_node("PadToMultiple", {"image": Image(pixels), "mask": mask}, multiple=8, anchor="top-left",
                      mode="black")
    assert padded["image"].size == (24, 16)
    assert torch.equal(padded["image"].pixels[..., :13, :21], pixels)
    assert float(padded["image"].pixels[..., 13:, :].abs().sum()) == 0.0
    assert int(padded["mask"].sum()) == 24 * 16 - 21 * 13 + 1  # the new border is to regenerate
    no_mask = run_node("CropToMultiple", {"image": Image(pixels)}, multiple=4)["mask"]
    assert no_mask.shape == (1, 1, 12, 20) and float(no_mask.sum()) == 0.0
    with pytest.raises(UserInputError, match="smaller than one block"):
        run_node("CropToMultiple", {"image": Image(pixels)}, multiple=32)
    with pytest.raises(UserInputError, match="does not match the image"):
        run_node("PadToMultiple", {"image": Image(pixels), "mask": torch.zeros(1, 1, 8, 8)})


# --- LayoutEditor ---------------------------------------------------------------------


def test_layout_editor_outputs_checked_boxes():
    boxes = [{"label": "red circle", "box": [0.125, 0.25, 0.5, 0.75]},
             {"label": "blue square", "box": [0.5, 0.5, 1.0, 1.0]}]
    assert run_node("LayoutEditor", boxes=boxes)["layout"].to_json() == boxes
    assert len(run_node("LayoutEditor")["layout"]) == 0
    bad = boxes + [{"label": "green triangle", "box": [0.5, -0.1, 0.7, 0.4]}]
    with pytest.raises(UserInputError) as caught:
        run_node("LayoutEditor", boxes=bad)
    assert caught.value.param == "boxes" and str(caught.value).startswith('box 3, "box": ')
    free = [{"label": "a sleepy cat", "box": [0, 0, 1, 1]}]
    with pytest.raises(UserInputError, match="box 1, \"label\": 'a sleepy cat' is not one"):
        run_node("LayoutEditor", boxes=free)
    assert run_node("LayoutEditor", boxes=free, labels="free text")["layout"].boxes[0].label == "a sleepy cat"


# --- SemanticPainter --------------------------------------------------------------------


def test_semantic_painter_outputs_class_ids():
    labels = np.zeros((16, 24), dtype=np.uint8)
    labels[2:6, 3:9] = 7
    labels[10:, :] = 1
    out = run_node("SemanticPainter", labels=drawing.encode_png_b64(labels), width=24, height=16)["semantic"]
    assert isinstance(out, SemanticMap) and out.num_classes == 21
    assert out.labels.dtype == torch.int64 and out.labels.shape == (1, 16, 24)
    assert torch.equal(out.labels[0], torch.from_numpy(labels.astype(np.int64)))
    blank = run_node("SemanticPainter", width=8, height=8)["semantic"]
    assert blank.labels.shape == (1, 8, 8) and int(blank.labels.max()) == 0


def test_semantic_painter_resizes_without_mixing_classes_and_refuses_other_shapes():
    labels = np.zeros((8, 8), dtype=np.uint8)
    labels[:, 4:] = 5
    text = drawing.encode_png_b64(labels)
    out = run_node("SemanticPainter", {"image": image(32, 32)}, labels=text)["semantic"]
    assert set(out.labels.unique().tolist()) == {0, 5} and int((out.labels == 5).sum()) == 16 * 32
    with pytest.raises(UserInputError) as caught:
        run_node("SemanticPainter", {"image": image(32, 16)}, labels=text)
    assert caught.value.param == "labels" and "label map is 8x8" in str(caught.value)


def test_semantic_painter_unknown_class_is_a_clear_error(tmp_path):
    labels = np.zeros((8, 8), dtype=np.uint8)
    labels[3, 2] = 30
    with pytest.raises(UserInputError) as caught:
        run_node("SemanticPainter", labels=drawing.encode_png_b64(labels), width=8, height=8)
    assert caught.value.param == "labels"
    assert str(caught.value).startswith("class 30 at pixel (2, 3)") and "num_classes 21" in str(caught.value)
    assert int(run_node("SemanticPainter", labels=drawing.encode_png_b64(labels), width=8, height=8,
                        num_classes=31)["semantic"].labels.max()) == 30


def test_semantic_painter_imports_index_and_colour_pngs(tmp_path):
    labels = np.zeros((12, 12), dtype=np.uint8)
    labels[1:5, 1:5] = 3
    labels[6:, 6:] = 17
    index_path, colour_path = tmp_path / "idx.png", tmp_path / "col.png"
    PILImage.fromarray(labels, mode="L").save(index_path)
    PILImage.fromarray(drawing.labels_to_rgb(labels, 21)).save(colour_path)
    for path in (index_path, colour_path):
        out = run_node("SemanticPainter", path=str(path), width=12, height=12)["semantic"]
        assert torch.equal(out.labels[0], torch.from_numpy(labels.astype(np.int64)))
    odd = drawing.labels_to_rgb(labels, 21)
    odd[0, 11] = (0, 255, 255)
    PILImage.fromarray(odd).save(colour_path)
    with pytest.raises(UserInputError) as caught:
        run_node("SemanticPainter", path=str(colour_path), width=12, height=12)
    assert caught.value.param == "path" and "at pixel (11, 0) is not in the palette" in str(caught.value)


def test_every_input_node_is_registered():
    names = {spec.type for spec in REGISTRY}
    for module in (mask_nodes, image_utils, layout_nodes, semantic_nodes):
        assert {spec.type for spec in module.SPECS} <= names
