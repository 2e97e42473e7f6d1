"""The shapes world generator follows /work/shared/shapes_world.md."""
from __future__ import annotations

import re

import numpy as np
import pytest

from training.data import held_out_seeds, random_crops, scene_samples
from training.shapes_world import (
    BACKGROUNDS,
    COLOURS,
    MARGIN,
    SIZE_RANGES,
    VOCABULARY,
    Scene,
    SceneObject,
    augmented_caption,
    caption,
    class_name,
    layout,
    make_scene,
    object_class_id,
    position_word,
    render,
    render_with_labels,
    semantic_map,
)

SEEDS = range(400)


def test_same_seed_gives_the_same_image_bytes_and_different_seeds_differ():
    a, b = render(make_scene(1234)), render(make_scene(1234))
    assert a.tobytes() == b.tobytes()
    assert make_scene(1234) == make_scene(1234)
    assert render(make_scene(1235)).tobytes() != a.tobytes()


def test_scenes_obey_count_size_canvas_and_non_overlap_rules():
    counts = set()
    for seed in SEEDS:
        scene = make_scene(seed)
        counts.add(len(scene.objects))
        assert scene.background in BACKGROUNDS
        for obj in scene.objects:
            lo, hi = SIZE_RANGES[obj.size]
            assert lo <= obj.d <= hi
            x0, y0, x1, y1 = obj.box
            assert 0 <= x0 and 0 <= y0 and x1 <= 1 and y1 <= 1
            assert x1 - x0 == pytest.approx(obj.d) and y1 - y0 == pytest.approx(obj.d)
        for i, a in enumerate(scene.objects):
            for b in scene.objects[i + 1 :]:
                gap_x = max(b.box[0] - a.box[2], a.box[0] - b.box[2])
                gap_y = max(b.box[1] - a.box[3], a.box[1] - b.box[3])
                assert max(gap_x, gap_y) >= MARGIN
    assert counts == {1, 2, 3}


def _interior_mask(obj: SceneObject, size: int) -> np.ndarray:
    """Pixels lying well inside the shape (2 px from its edge), from the geometry alone."""
    ys, xs = (np.mgrid[0:size, 0:size] + 0.5) / size
    x0, y0, x1, y1 = obj.box
    cx, cy = obj.centre
    inset = 2 / size
    if obj.shape == "square":
        return (xs > x0 + inset) & (xs < x1 - inset) & (ys > y0 + inset) & (ys < y1 - inset)
    if obj.shape == "circle":
        return np.hypot(xs - cx, ys - cy) < obj.d / 2 - inset
    # triangle edges slope at 2:1, so a distance of `inset` needs ~2.24 * inset horizontally
    return (ys > y0 + 3 * inset) & (ys < y1 - inset) & (np.abs(xs - cx) < (ys - y0) / 2 - 2.24 * inset)


def test_interiors_are_the_exact_flat_colours_and_edges_are_anti_aliased():
    mixed_edges = 0
    palette = np.array(list(COLOURS.values()) + list(BACKGROUNDS.values()), dtype=np.uint8)
    for seed in range(40):
        scene = make_scene(seed)
        image = render(scene, 128)
        ys, xs = (np.mgrid[0:128, 0:128] + 0.5) / 128
        covered = np.zeros((128, 128), bool)
        for obj in scene.objects:
            inside = _interior_mask(obj, 128)
            assert inside.any()
            assert (image[inside] == COLOURS[obj.colour]).all()
            x0, y0, x1, y1 = obj.box
            covered |= (xs > x0 - 1 / 128) & (xs < x1 + 1 / 128) & (ys > y0 - 1 / 128) & (ys < y1 + 1 / 128)
        assert (image[~covered] == BACKGROUNDS[scene.background]).all()  # outside every box: background
        is_palette = (image.reshape(-1, 1, 3) == palette[None]).all(-1).any(-1)
        mixed_edges += int((~is_palette).sum())
    assert mixed_edges > 1000  # anti-aliased edge pixels are mixtures, not palette colours


def test_triangle_is_upright_with_base_on_the_bottom_edge():
    obj = SceneObject("red", "triangle", "large", 0.4, (0.3, 0.3, 0.7, 0.7))
    labels = semantic_map(Scene("white", (obj,)), 100)
    rows = (labels == obj.class_id).sum(axis=1)
    assert rows[32] < 4  # the apex row is narrow
    assert rows[68] >= 38  # the base row spans nearly the whole box
    assert rows[30:70].sum() == pytest.approx(0.5 * 40 * 40, rel=0.03)
    cols = np.nonzero(labels[68] == obj.class_id)[0]
    assert cols.min() + cols.max() == pytest.approx(99, abs=1)  # centred on x = 0.5


@pytest.mark.parametrize("seed", [3, 17, 101])
def test_geometry_is_the_same_at_32_128_and_512(seed):
    scene = make_scene(seed)
    big = semantic_map(scene, 512)
    for size in (32, 128):
        small = semantic_map(scene, size)
        down = big.reshape(size, 512 // size, size, 512 // size)
        # each coarse pixel's label is the majority of its fine pixels, except along edges
        agree = (down == small[:, None, :, None]).mean(axis=(1, 3)) >= 0.5
        assert agree.mean() > (0.97 if size == 32 else 0.99)
        for obj in scene.objects:
            area = (small == obj.class_id).sum() / size**2
            big_area = (big == obj.class_id).sum() / 512**2
            assert area == pytest.approx(big_area, rel=0.12 if size == 32 else 0.03)


def test_semantic_map_classes_and_half_coverage_rule():
    seen = set()
    for seed in range(200):
        scene = make_scene(seed)
        image, labels = render_with_labels(scene, 64)
        assert labels.shape == (64, 64) and labels.max() <= 20
        assert np.array_equal(labels, semantic_map(scene, 64)) and np.array_equal(image, render(scene, 64))
        seen |= set(np.unique(labels).tolist())
    assert seen == set(range(21))
    assert object_class_id("red", "circle") == 3 and object_class_id("orange", "triangle") == 20
    assert class_name(1) == "gray" and class_name(13) == "yellow square"
    # a square covering exactly half of a pixel column belongs to it; a little less does not
    half = SceneObject("blue", "square", "small", 0.2, (0.5 + 0.5 / 16, 0.25, 0.7 + 0.5 / 16, 0.45))
    labels = semantic_map(Scene("black", (half,)), 16)
    assert labels[5, 8] == half.class_id and labels[5, 11] == half.class_id
    assert labels[5, 7] == 2


def test_position_words_follow_the_3x3_grid():
    assert position_word(0.1, 0.1) == "top left"
    assert position_word(0.5, 0.2) == "top"
    assert position_word(0.9, 0.5) == "right"
    assert position_word(0.5, 0.5) == "center"
    assert position_word(1 / 3, 2 / 3) == "bottom"  # cells split at 1/3 and 2/3, lower bound inclusive
    assert position_word(0.2, 0.99) == "bottom left"


def test_caption_grammar():
    a = SceneObject("red", "circle", "large", 0.35, (0.05, 0.05, 0.40, 0.40))
    b = SceneObject("blue", "triangle", "small", 0.2, (0.40, 0.75, 0.60, 0.95))
    c = SceneObject("green", "square", "small", 0.2, (0.40, 0.40, 0.60, 0.60))
    assert caption(Scene("gray", (a, b))) == (
        "a large red circle at the top left and a small blue triangle at the bottom on a gray background"
    )
    assert caption(Scene("white", (c,))) == "a small green square in the center on a white background"
    assert layout(Scene("gray", (a,))) == [{"label": "red circle", "box": [0.05, 0.05, 0.40, 0.40]}]


def test_augmented_captions_drop_parts_with_the_right_rate_and_use_the_vocabulary():
    rng = np.random.default_rng(0)
    scene = Scene("black", (SceneObject("red", "circle", "large", 0.35, (0.05, 0.05, 0.4, 0.4)),
                            SceneObject("yellow", "square", "small", 0.2, (0.7, 0.7, 0.9, 0.9))))
    texts = [augmented_caption(scene, rng) for _ in range(2000)]
    no_background = np.mean([not t.endswith("background") for t in texts])
    no_size = np.mean(["large" not in t for t in texts])
    no_position = np.mean([" at the " not in t for t in texts])
    red_first = np.mean([t.startswith("a ") and t.index("red") < t.index("yellow") for t in texts])
    for rate in (no_background, no_size, no_position):
        assert rate == pytest.approx(0.3, abs=0.04)
    assert red_first == pytest.approx(0.5, abs=0.05)
    assert "a red circle and a yellow square" in texts or "a yellow square and a red circle" in texts
    vocabulary = set(VOCABULARY)
    for seed in SEEDS:
        for text in (caption(make_scene(seed)), augmented_caption(make_scene(seed), rng)):
            assert re.fullmatch(r"[a-z]+( [a-z]+)*", text)
            assert set(text.split()) <= vocabulary


def test_data_helpers_use_held_out_seeds_and_crop_inside_images():
    assert held_out_seeds(3) == [1_000_000, 1_000_001, 1_000_002]
    samples = scene_samples([5, 6], 64, np.random.default_rng(0))
    assert samples[0].image.shape == (64, 64, 3) and samples[0].labels.shape == (64, 64)
    assert samples[1].layout == layout(make_scene(6))
    images = np.stack([s.image for s in samples])
    crops = random_crops(np.random.default_rng(1), images, 32)
    assert crops.shape == (2, 32, 32, 3)
    windows = [images[0, y : y + 32, x : x + 32] for y in range(33) for x in range(33)]
    assert any(np.array_equal(crops[0], window) for window in windows)
