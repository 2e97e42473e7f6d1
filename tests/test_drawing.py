"""engine.drawing: palette, PNG text, brush/rect/lasso/flood rasterising, edges, files, layout checks."""
from __future__ import annotations

import base64

import numpy as np
import pytest
from PIL import Image as PILImage

from engine import drawing
from engine.drawing import DrawingError
from training import shapes_world


def _disc_count(shape: tuple[int, int], p0: tuple[float, float], p1: tuple[float, float],
                radius: float) -> int:
    """Pixels whose centre lies within radius of the segment (independent brute force)."""
    ys, xs = np.mgrid[0:shape[0], 0:shape[1]] + 0.5
    best = np.full(shape, np.inf)
    for t in np.linspace(0.0, 1.0, 2001):
        cx, cy = p0[0] + t * (p1[0] - p0[0]), p0[1] + t * (p1[1] - p0[1])
        best = np.minimum(best, np.hypot(xs - cx, ys - cy))
    return int((best <= radius + 1e-9).sum())


def test_the_shapes_world_draws_with_the_app_s_palette():
    """One owner, engine.drawing: the scenes the models learn from use the names, colours and class numbers
    the editors offer."""
    assert shapes_world.COLOURS is drawing.COLOURS and shapes_world.BACKGROUNDS is drawing.BACKGROUNDS
    assert shapes_world.NUM_CLASSES == drawing.NUM_SEMANTIC_CLASSES == 21
    colours = drawing.palette(21)
    for seed in (1_000_000, 1_000_001, 1_000_002):
        scene = shapes_world.make_scene(seed)
        background = shapes_world.BACKGROUND_NAMES.index(scene.background)
        assert drawing.SEMANTIC_CLASS_NAMES[background] == f"{scene.background} background"
        assert tuple(colours[background]) == shapes_world.BACKGROUNDS[scene.background]
        for obj in scene.objects:  # the painter names each object's class as its caption does
            assert drawing.SEMANTIC_CLASS_NAMES[obj.class_id] == obj.label
            assert obj.label in drawing.LAYOUT_LABELS
    for name, rgb in shapes_world.COLOURS.items():  # a circle shows in its scene colour
        assert tuple(colours[shapes_world.object_class_id(name, "circle")]) == rgb


def test_palette_colours_are_told_apart_even_with_tolerance():
    colours = drawing.palette(40).astype(int)
    first = colours[:21]
    gaps = np.abs(first[:, None] - first[None]).max(axis=2) + np.eye(21, dtype=int) * 999
    assert gaps.min() > 2 * drawing.PALETTE_TOLERANCE
    assert len({tuple(c) for c in colours}) == 40
    assert drawing.class_names(23)[-2:] == ["class 21", "class 22"]


def test_png_text_round_trip_and_bad_text():
    mask = np.zeros((17, 33), dtype=np.uint8)
    mask[3:9, 5:30] = 200
    text = drawing.encode_png_b64(mask)
    assert np.array_equal(drawing.decode_png_b64(text), mask)
    with pytest.raises(DrawingError, match="painted mask is not valid base64"):
        drawing.decode_png_b64("%%% not base64", "painted mask")
    with pytest.raises(DrawingError, match="not a PNG"):
        drawing.decode_png_b64(base64.b64encode(b"hello world").decode(), "painted mask")


def test_hard_brush_covers_exactly_the_pixels_within_its_radius():
    mask = np.zeros((64, 64), dtype=np.uint8)
    box = drawing.paint_mask_stroke(mask, (10.5, 20.5), (40.5, 27.5), 2.5, hardness=1.0)
    assert int((mask == 255).sum()) == _disc_count(mask.shape, (10.5, 20.5), (40.5, 27.5), 2.5)
    assert set(np.unique(mask)) == {0, 255}
    x0, y0, x1, y1 = box
    ys, xs = np.nonzero(mask)
    assert x0 <= xs.min() and xs.max() < x1 and y0 <= ys.min() and ys.max() < y1


def test_soft_brush_fades_at_its_edge_and_eraser_removes():
    mask = np.zeros((40, 40), dtype=np.uint8)
    drawing.paint_mask_stroke(mask, (20.5, 20.5), (20.5, 20.5), 10.0, hardness=0.5)
    assert mask[20, 20] == 255  # full inside radius * hardness
    ring = mask[20, 20 + 8]  # 8 px out: between 5 and 10
    assert 0 < ring < 255
    assert mask[20, 20 + 11] == 0
    drawing.paint_mask_stroke(mask, (20.5, 20.5), (20.5, 20.5), 4.0, hardness=1.0, erase=True)
    assert mask[20, 20] == 0 and mask[20, 20 + 8] == ring


def test_rect_lasso_and_flood_fill():
    target = np.zeros((32, 32), dtype=np.uint8)
    drawing.fill_rect(target, (29, 19), (10, 10), 255)  # corners in any order, inclusive
    assert int((target == 255).sum()) == 20 * 10
    drawing.fill_rect(target, (-5, -5), (2, 2), 7)  # clipped at the border
    assert int((target == 7).sum()) == 9
    lasso = np.zeros((32, 32), dtype=np.uint8)
    drawing.fill_polygon(lasso, [(2, 3), (12, 3), (12, 8), (2, 8)], 255)
    assert int((lasso == 255).sum()) == 11 * 6
    labels = np.zeros((8, 8), dtype=np.uint8)
    labels[2:5, 2:5] = 1
    labels[5, 5] = 0  # diagonal neighbour of the block: 4-connectivity must not cross the corner
    assert drawing.flood_fill(labels, 3, 3, 9) == 9
    assert int((labels == 9).sum()) == 9 and labels[0, 0] == 0
    assert drawing.flood_fill(labels, 3, 3, 9) == 0


def test_grow_shrink_and_feather():
    mask = np.zeros((40, 40), dtype=np.uint8)
    mask[10:20, 10:20] = 255
    grown = drawing.grow(mask, 3)
    ys, xs = np.nonzero(grown)
    assert (xs.min(), xs.max(), ys.min(), ys.max()) == (7, 22, 7, 22)
    shrunk = drawing.grow(mask, -3)
    ys, xs = np.nonzero(shrunk)
    assert (xs.min(), xs.max(), ys.min(), ys.max()) == (13, 16, 13, 16)
    soft = drawing.feather(mask, 4)
    assert soft[15, 15] == 255 and soft[0, 0] == 0
    assert 0 < soft[15, 10] < 255
    assert np.array_equal(drawing.grow(mask, 0), mask) and np.array_equal(drawing.feather(mask, 0), mask)


def _png(path, array, mode=None):
    PILImage.fromarray(array, mode=mode).save(path)
    return str(path)


def test_mask_file_from_alpha_or_brightness(tmp_path):
    rgba = np.full((10, 12, 4), 255, dtype=np.uint8)
    rgba[2:4, 3:6, 3] = 0
    from_alpha = drawing.read_mask_file(_png(tmp_path / "a.png", rgba))
    assert int((from_alpha == 255).sum()) == 6 and int((from_alpha == 0).sum()) == 120 - 6
    grey = np.zeros((10, 12, 3), dtype=np.uint8)
    grey[5:, :] = 255
    from_white = drawing.read_mask_file(_png(tmp_path / "g.png", grey))
    assert int((from_white == 255).sum()) == 60
    with pytest.raises(DrawingError, match="file not found"):
        drawing.read_mask_file(str(tmp_path / "missing.png"))


def test_label_files_as_indices_or_colours(tmp_path):
    labels = np.zeros((16, 16), dtype=np.uint8)
    labels[4:8, 4:8] = 12
    labels[10:, :] = 20
    assert np.array_equal(drawing.read_label_file(_png(tmp_path / "i.png", labels), 21), labels)
    as_rgb = np.repeat(labels[:, :, None], 3, axis=2)
    assert np.array_equal(drawing.read_label_file(_png(tmp_path / "irgb.png", as_rgb), 21), labels)
    coded = drawing.labels_to_rgb(labels, 21)
    coded[0, 0] = coded[0, 0] - 5  # a little off (a lossy save) still reads as its class
    assert np.array_equal(drawing.read_label_file(_png(tmp_path / "c.png", coded), 21), labels)
    black = np.full((4, 4, 3), 20, dtype=np.uint8)  # a colour-coded all-black-background map
    assert (drawing.read_label_file(_png(tmp_path / "b.png", black), 21) == 2).all()
    coded[3, 5] = (1, 250, 250)
    with pytest.raises(DrawingError, match=r"colour \(1, 250, 250\) at pixel \(5, 3\)"):
        drawing.read_label_file(_png(tmp_path / "bad.png", coded), 21)


def test_snap_and_aspect():
    assert drawing.snap(0.2) == 13 / 64 and drawing.snap(1.3) == 1.0 and drawing.snap(-0.1) == 0.0
    assert drawing.same_aspect((512, 512), (64, 64)) and drawing.same_aspect((1000, 563), (512, 288))
    assert not drawing.same_aspect((64, 32), (64, 64))


def test_png_file_written_by_write_png_reads_back(tmp_path):
    labels = (np.arange(64, dtype=np.uint8) % 21).reshape(8, 8)
    path = str(tmp_path / "out.png")
    drawing.write_png(path, labels)
    with PILImage.open(path) as img:
        assert img.mode == "L"
    assert np.array_equal(drawing.read_label_file(path, 21), labels)
    assert drawing.first_unknown_class(labels, 21) is None
    assert drawing.first_unknown_class(labels, 20) == (20, 4, 2, 3)


def test_a_layout_is_drawn_as_outlined_boxes_in_its_labels_colours():
    from engine.drawing import layout_label_colour, render_layout

    background = (34, 34, 38)
    picture = render_layout([{"label": "red circle", "box": [0.25, 0.25, 0.75, 0.75]},
                             {"label": "blue square", "box": [0.0, 0.8, 0.1, 1.0]}], size=64, background=background)
    red, blue = np.array(layout_label_colour("red circle")), np.array(layout_label_colour("blue square"))
    assert picture.shape == (64, 64, 3) and picture.dtype == np.uint8
    assert (picture[16, 16] == red).all() and (picture[16, 40] == red).all()  # the outline
    assert np.abs(picture[32, 32].astype(int) - (np.array(background) + 0.35 * (red - background))).max() <= 1
    assert (picture[2, 2] == background).all() and (picture[63, 0] == blue).all()
    assert (render_layout([], size=8) == np.array(background)).all()
