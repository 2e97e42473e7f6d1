"""The shapes world, version 1: scenes, renders, captions, layouts and label maps.

Implements /work/shared/shapes_world.md exactly (that file is normative).
Pure numpy: a scene is a function of its integer seed, and renders at any size
from the same normalised geometry. Anti-aliasing renders at 4x (sample points
at sub-pixel centres) and box-downsamples; a pixel of the semantic map belongs
to an object when at least 8 of its 16 samples are covered.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# The names and colours, and the object labels in class order, are the app's palette: engine.drawing owns them.
from engine.drawing import BACKGROUNDS, COLOURS, LAYOUT_LABELS, SHAPES

SPEC_VERSION = "shapes world v1"

SIZE_RANGES: dict[str, tuple[float, float]] = {"small": (0.15, 0.22), "large": (0.30, 0.42)}
MARGIN = 0.02  # boxes keep this gap from every other box
SUPERSAMPLE = 4
NUM_CLASSES = len(BACKGROUNDS) + len(LAYOUT_LABELS)  # 21
TRAIN_SEEDS = range(1_000_000)
HELD_OUT_SEED_START = 1_000_000

BACKGROUND_NAMES = tuple(BACKGROUNDS)
COLOUR_NAMES = tuple(COLOURS)
POSITION_GRID = (
    ("top left", "top", "top right"),
    ("left", "center", "right"),
    ("bottom left", "bottom", "bottom right"),
)
POSITION_WORDS = tuple(w for row in POSITION_GRID for w in row)

# Every word a caption (full or augmented) can contain, for word-level tokenizers.
VOCABULARY: tuple[str, ...] = tuple(
    dict.fromkeys(
        ["a", "and", "at", "the", "in", "on", "background"]
        + list(SIZE_RANGES)
        + list(COLOURS)
        + list(SHAPES)
        + ["top", "bottom", "left", "right", "center"]
        + list(BACKGROUNDS)
    )
)

_MAX_PLACEMENT_TRIES = 100


@dataclass(frozen=True)
class SceneObject:
    colour: str
    shape: str
    size: str  # "small" | "large"
    d: float  # side of the object's box, as a fraction of the canvas
    box: tuple[float, float, float, float]  # (x0, y0, x1, y1) normalised

    @property
    def centre(self) -> tuple[float, float]:
        x0, y0, x1, y1 = self.box
        return (x0 + x1) / 2, (y0 + y1) / 2

    @property
    def position(self) -> str:
        return position_word(*self.centre)

    @property
    def label(self) -> str:
        return f"{self.colour} {self.shape}"

    @property
    def class_id(self) -> int:
        return object_class_id(self.colour, self.shape)


@dataclass(frozen=True)
class Scene:
    background: str
    objects: tuple[SceneObject, ...] = field(default_factory=tuple)
    seed: int | None = None


def object_class_id(colour: str, shape: str) -> int:
    """Semantic-map class of an object: 3 + 3 * colour index + shape index (its label after the backgrounds)."""
    return len(BACKGROUNDS) + LAYOUT_LABELS.index(f"{colour} {shape}")


def class_name(class_id: int) -> str:
    """'white' .. 'black' for 0..2, else '{colour} {shape}'."""
    if class_id < len(BACKGROUNDS):
        return BACKGROUND_NAMES[class_id]
    return LAYOUT_LABELS[class_id - len(BACKGROUNDS)]


def position_word(cx: float, cy: float) -> str:
    """The 3x3 grid word of a normalised box centre (cells split at 1/3 and 2/3)."""
    col = 0 if cx < 1 / 3 else (1 if cx < 2 / 3 else 2)
    row = 0 if cy < 1 / 3 else (1 if cy < 2 / 3 else 2)
    return POSITION_GRID[row][col]


# ---------------------------------------------------------------- scenes


def _boxes_clash(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    """True when box a overlaps box b grown by MARGIN on every side."""
    return not (
        a[2] <= b[0] - MARGIN or a[0] >= b[2] + MARGIN or a[3] <= b[1] - MARGIN or a[1] >= b[3] + MARGIN
    )


def make_scene(seed: int) -> Scene:
    """The scene of a seed: background, then 1-3 objects placed by rejection sampling.

    An object that finds no free place in a bounded number of tries is left out
    (the first always fits), so a scene never breaks the placement rule.
    """
    rng = np.random.default_rng(seed)
    background = BACKGROUND_NAMES[int(rng.integers(len(BACKGROUNDS)))]
    wanted = int(rng.integers(1, 4))
    objects: list[SceneObject] = []
    for _ in range(wanted):
        colour = COLOUR_NAMES[int(rng.integers(len(COLOURS)))]
        shape = SHAPES[int(rng.integers(len(SHAPES)))]
        size = "small" if rng.random() < 0.5 else "large"
        d = float(rng.uniform(*SIZE_RANGES[size]))
        for _ in range(_MAX_PLACEMENT_TRIES):
            x0, y0 = (float(v) for v in rng.uniform(0.0, 1.0 - d, size=2))
            box = (x0, y0, x0 + d, y0 + d)
            if not any(_boxes_clash(box, o.box) for o in objects):
                objects.append(SceneObject(colour, shape, size, d, box))
                break
    return Scene(background, tuple(objects), seed)


# ---------------------------------------------------------------- rendering


def _pixel_span(lo: float, hi: float, n: int) -> tuple[int, int]:
    """Sample indices i (centres (i+0.5)/n) that can fall in [lo, hi], clipped to [0, n)."""
    return max(0, int(np.floor(lo * n)) - 1), min(n, int(np.ceil(hi * n)) + 1)


def _object_mask(obj: SceneObject, n: int) -> tuple[slice, slice, np.ndarray]:
    """Which samples of an n x n sample grid the object covers, inside its box's window."""
    x0, y0, x1, y1 = obj.box
    i0, i1 = _pixel_span(y0, y1, n)
    j0, j1 = _pixel_span(x0, x1, n)
    ys = ((np.arange(i0, i1) + 0.5) / n)[:, None]  # (h, 1)
    xs = ((np.arange(j0, j1) + 0.5) / n)[None, :]  # (1, w)
    inside_x = (xs >= x0) & (xs < x1)
    inside_y = (ys >= y0) & (ys < y1)
    if obj.shape == "square":
        mask = inside_x & inside_y
    elif obj.shape == "circle":
        r = obj.d / 2
        cx, cy = obj.centre
        mask = (xs - cx) ** 2 + (ys - cy) ** 2 <= r * r
    else:  # triangle: apex at top centre, base on the box's bottom edge
        half_width = (ys - y0) * 0.5  # the half width grows from 0 at the apex to d/2 at the base
        mask = inside_y & (np.abs(xs - (x0 + x1) / 2) <= half_width)
    return slice(i0, i1), slice(j0, j1), mask


def object_index_map(scene: Scene, n: int) -> np.ndarray:
    """(n, n) uint8: 0 for background, k for the k-th object (1-based), objects drawn in order."""
    index = np.zeros((n, n), dtype=np.uint8)
    for k, obj in enumerate(scene.objects, start=1):
        rows, cols, mask = _object_mask(obj, n)
        index[rows, cols][mask] = k  # advanced indexing on a view writes through
    return index


def _coverage_counts(scene: Scene, size: int) -> list[tuple[slice, slice, np.ndarray]]:
    """Per object: the pixel window around it and (h, w) counts of its covered samples (0..16).

    Objects are drawn in list order, so a later object hides an earlier one
    where they overlap (never the case in generated scenes).
    """
    k = SUPERSAMPLE
    fine = object_index_map(scene, size * k)
    counts = []
    for idx, obj in enumerate(scene.objects, start=1):
        i0, i1 = _pixel_span(obj.box[1], obj.box[3], size)
        j0, j1 = _pixel_span(obj.box[0], obj.box[2], size)
        window = fine[i0 * k : i1 * k, j0 * k : j1 * k] == idx
        count = window.reshape(i1 - i0, k, j1 - j0, k).sum(axis=(1, 3), dtype=np.int32)
        counts.append((slice(i0, i1), slice(j0, j1), count))
    return counts


def _compose(scene: Scene, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The rendered image and semantic map, from one supersampled pass."""
    k2 = SUPERSAMPLE * SUPERSAMPLE
    background = np.asarray(BACKGROUNDS[scene.background], dtype=np.int32)
    summed = np.broadcast_to(background * k2, (size, size, 3)).copy()  # sum of the 16 samples
    labels = np.full((size, size), BACKGROUND_NAMES.index(scene.background), dtype=np.uint8)
    for obj, (rows, cols, count) in zip(scene.objects, _coverage_counts(scene, size)):
        colour = np.asarray(COLOURS[obj.colour], dtype=np.int32)
        summed[rows, cols] += count[..., None] * (colour - background)
        labels[rows, cols][count * 2 >= k2] = obj.class_id
    image = ((summed + k2 // 2) // k2).astype(np.uint8)
    return image, labels


def render(scene: Scene, size: int = 128) -> np.ndarray:
    """(size, size, 3) uint8 RGB, anti-aliased by 4x supersampling and a box filter."""
    return _compose(scene, size)[0]


def semantic_map(scene: Scene, size: int = 128) -> np.ndarray:
    """(size, size) uint8 class ids 0..20; a pixel is an object's when >= half its samples are."""
    return _compose(scene, size)[1]


def render_with_labels(scene: Scene, size: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """render() and semantic_map() in one pass."""
    return _compose(scene, size)


def layout(scene: Scene) -> list[dict]:
    """One {"label": "red circle", "box": [x0, y0, x1, y1]} per object, in list order."""
    return [{"label": o.label, "box": [float(v) for v in o.box]} for o in scene.objects]


# ---------------------------------------------------------------- captions


def object_phrase(obj: SceneObject, with_size: bool = True, with_position: bool = True) -> str:
    words = ["a"] + ([obj.size] if with_size else []) + [obj.colour, obj.shape]
    if with_position:
        position = obj.position
        words += ["in the center"] if position == "center" else ["at the", position]
    return " ".join(words)


def caption(scene: Scene) -> str:
    """The full caption: every object with size and position, then the background."""
    objects = " and ".join(object_phrase(o) for o in scene.objects)
    return f"{objects} on a {scene.background} background"


def augmented_caption(scene: Scene, rng: np.random.Generator) -> str:
    """A training caption: size, position and background each dropped with p=0.3, objects shuffled."""
    return augmented_caption_and_order(scene, rng)[0]


def augmented_caption_and_order(scene: Scene, rng: np.random.Generator) -> tuple[str, list[int]]:
    """augmented_caption() and the order in which it names the scene's objects."""
    with_size = rng.random() >= 0.3
    with_position = rng.random() >= 0.3
    with_background = rng.random() >= 0.3
    order = rng.permutation(len(scene.objects))
    text = " and ".join(object_phrase(scene.objects[i], with_size, with_position) for i in order)
    if with_background:
        text += f" on a {scene.background} background"
    return text, [int(i) for i in order]
