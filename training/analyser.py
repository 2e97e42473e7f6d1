"""Reads a shapes-world image back into a scene, and scores images against requests.

Follows /work/shared/shapes_world.md. Every pixel is explained as a mixture of
the background colour B and one object colour C (anti-aliased edges are such
mixtures, since objects never touch): alpha = <p - B, C - B> / |C - B|^2, and
the colour whose mixture line passes nearest to the pixel wins. A pixel is the
object's when alpha >= ~0.5 (the spec's "at least half covered"), connected
components give the objects, and alpha-weighted moments give sub-pixel area and
centre, hence the shape (fill ratio and how far the mass sits below the box
centre), the size `d` and the box.
"""
from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

from engine.errors import KilnError
from training.shapes_world import (
    BACKGROUND_NAMES,
    BACKGROUNDS,
    COLOUR_NAMES,
    COLOURS,
    POSITION_WORDS,
    SHAPES,
    SIZE_RANGES,
    Scene,
    object_class_id,
    position_word,
)

ALPHA_THRESHOLD = 0.47  # coverage is a multiple of 1/16: this splits 7/16 from 8/16 with rounding slack
MAX_RESIDUAL = 60.0  # RGB distance from every mixture line beyond which a pixel is noise
MIN_AREA = 0.004  # components smaller than this fraction of the canvas are specks, not objects
SIZE_SPLIT = (SIZE_RANGES["small"][1] + SIZE_RANGES["large"][0]) / 2
# Per shape: fill ratio of its d x d box, and skewness of the mass along y (y points down:
# an upright triangle's mass grows linearly towards its base, skewness -2*sqrt(2)/5).
_SHAPE_FEATURES = {"circle": (np.pi / 4, 0.0), "square": (1.0, 0.0), "triangle": (0.5, -2 * np.sqrt(2) / 5)}


class CaptionError(KilnError):
    """A caption that the shapes-world grammar cannot read."""


@dataclass(frozen=True)
class DetectedObject:
    colour: str
    shape: str
    size: str
    d: float  # estimated side of the object's box, normalised
    box: tuple[float, float, float, float]  # (x0, y0, x1, y1) normalised
    position: str
    area: float  # pixels covered (sub-pixel, alpha-weighted)

    @property
    def label(self) -> str:
        return f"{self.colour} {self.shape}"

    @property
    def class_id(self) -> int:
        return object_class_id(self.colour, self.shape)


@dataclass
class Analysis:
    background: str
    objects: list[DetectedObject]
    size: int  # canvas side in pixels
    labels: np.ndarray = field(repr=False)  # (S, S) uint8 class ids

    def scene_tuple(self) -> tuple[str, tuple[tuple[str, str, str, str], ...]]:
        """Background and the sorted (colour, shape, size, position) of each object."""
        return self.background, tuple(sorted((o.colour, o.shape, o.size, o.position) for o in self.objects))


# ---------------------------------------------------------------- per-pixel colour mixtures

_BG_RGB = np.asarray([BACKGROUNDS[n] for n in BACKGROUND_NAMES], dtype=np.float32)  # (3, 3)
_OBJ_RGB = np.asarray([COLOURS[n] for n in COLOUR_NAMES], dtype=np.float32)  # (6, 3)


def _check_image(image: np.ndarray) -> np.ndarray:
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] != image.shape[1]:
        raise KilnError(f"analyser: expected a square (S, S, 3) RGB image, got shape {tuple(image.shape)}")
    return image.astype(np.float32)


def _dot(vectors: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """(..., 3) . (K, 3) -> (..., K), written out per channel (a BLAS call is slower for 3-vectors)."""
    return sum(vectors[..., i : i + 1] * rows[:, i] for i in range(3))


def _background_index(pixels: np.ndarray) -> int:
    """The background colour that most pixels are nearest to (objects never use these colours)."""
    palette = np.concatenate([_BG_RGB, _OBJ_RGB])  # (9, 3)
    flat = pixels.reshape(-1, 3)
    distance = (palette**2).sum(-1) - 2 * _dot(flat, palette)  # (N, 9), squared distance less |p|^2
    counts = np.bincount(distance.argmin(1), minlength=len(palette))[: len(_BG_RGB)]
    if counts.max() > 0:
        return int(counts.argmax())
    return int(((_BG_RGB - np.median(flat, axis=0)) ** 2).sum(-1).argmin())


def _mixtures(pixels: np.ndarray, background: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per pixel: best object colour index, the coverage alpha of every colour (S, S, 6), best residual."""
    offset = pixels - background  # (S, S, 3)
    direction = _OBJ_RGB - background  # (6, 3)
    length2 = (direction**2).sum(-1)  # (6,)
    along = _dot(offset, direction)  # (S, S, 6)
    alpha = np.clip(along / length2, 0.0, 1.0)
    # |offset - alpha * direction|^2, expanded so that no (S, S, 6, 3) array is needed
    residual2 = (offset**2).sum(-1, keepdims=True) - 2 * alpha * along + alpha**2 * length2
    best = residual2.argmin(-1)
    pick = best[..., None]
    residual = np.sqrt(np.maximum(np.take_along_axis(residual2, pick, -1)[..., 0], 0.0))
    return best, alpha, residual


# ---------------------------------------------------------------- objects


def _classify_shape(fill: float, skew: float) -> str:
    """Nearest shape prototype in (fill ratio, vertical skewness of the mass) space."""
    def distance(shape: str) -> float:
        f, k = _SHAPE_FEATURES[shape]
        return ((fill - f) / 0.25) ** 2 + ((skew - k) / 0.3) ** 2

    return min(SHAPES, key=distance)


def _shape_and_box(weights: np.ndarray, x0: int, y0: int, size: int) -> tuple[str, float, tuple]:
    """Shape, side d and box (normalised) of one object from its alpha weights in a window."""
    area = float(weights.sum())
    ys, xs = np.mgrid[0 : weights.shape[0], 0 : weights.shape[1]].astype(np.float64) + 0.5
    mx = float((weights * xs).sum() / area)
    my = float((weights * ys).sum() / area)
    var_y = float((weights * (ys - my) ** 2).sum() / area)
    skew = float((weights * (ys - my) ** 3).sum() / area) / max(var_y, 1e-6) ** 1.5
    extent = max(float(weights.sum(1).max()), float(weights.sum(0).max()), 1.0)  # widest row, tallest column
    shape = _classify_shape(area / (extent * extent), skew)
    d = {"square": np.sqrt(area), "circle": np.sqrt(4 * area / np.pi), "triangle": np.sqrt(2 * area)}[shape]
    cx, cy = mx + x0, my + y0
    if shape == "triangle":
        cy -= d / 6  # the mass centre of an upright triangle sits d/6 below its box centre
    box = tuple(float(v) / size for v in (cx - d / 2, cy - d / 2, cx + d / 2, cy + d / 2))
    return shape, float(d) / size, box


def _components(best: np.ndarray, alpha: np.ndarray, valid: np.ndarray, size: int):
    """Yield (colour index, component mask window, alpha weights window, x0, y0) per object.

    Objects never touch, so a connected region of object pixels of any colour is
    one object; its colour is the one most of its pixels are nearest to (a
    decoder may tint part of a yellow object towards orange, say).
    """
    min_pixels = MIN_AREA * size * size
    kernel = np.ones((3, 3), np.uint8)
    best_alpha = np.take_along_axis(alpha, best[..., None], -1)[..., 0]
    solid = (valid & (best_alpha >= ALPHA_THRESHOLD)).astype(np.uint8)
    n, comp, stats, _ = cv2.connectedComponentsWithStats(solid, connectivity=8)
    for k in range(1, n):
        x, y, w, h, pixels = stats[k]
        if pixels < min_pixels:
            continue
        x0, y0 = max(x - 1, 0), max(y - 1, 0)
        x1, y1 = min(x + w + 1, size), min(y + h + 1, size)
        mask = comp[y0:y1, x0:x1] == k
        votes = np.bincount(best[y0:y1, x0:x1][mask], weights=best_alpha[y0:y1, x0:x1][mask],
                            minlength=len(COLOUR_NAMES))
        c = int(votes.argmax())
        ring = cv2.dilate(mask.astype(np.uint8), kernel).astype(bool)  # plus its anti-aliased edge
        edge = ring & ~mask & valid[y0:y1, x0:x1] & (best[y0:y1, x0:x1] == c)
        weights = np.where(mask | edge, alpha[y0:y1, x0:x1, c], 0.0)
        yield c, mask, weights, x0, y0


def analyse(image: np.ndarray) -> Analysis:
    """Background, objects (colour, shape, size, box, position, area) and the label map of an image."""
    pixels = _check_image(image)
    size = pixels.shape[0]
    bg_index = _background_index(pixels)
    best, alpha, residual = _mixtures(pixels, _BG_RGB[bg_index])
    valid = residual < MAX_RESIDUAL
    labels = np.full((size, size), bg_index, dtype=np.uint8)
    objects: list[DetectedObject] = []
    for c, mask, weights, x0, y0 in _components(best, alpha, valid, size):
        shape, d, box = _shape_and_box(weights, x0, y0, size)
        colour = COLOUR_NAMES[c]
        centre = ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)
        size_word = "small" if d < SIZE_SPLIT else "large"
        objects.append(
            DetectedObject(colour, shape, size_word, d, box, position_word(*centre), float(weights.sum()))
        )
        window = labels[y0 : y0 + mask.shape[0], x0 : x0 + mask.shape[1]]
        window[mask] = object_class_id(colour, shape)
    objects.sort(key=lambda o: (o.box[1], o.box[0]))
    return Analysis(BACKGROUND_NAMES[bg_index], objects, size, labels)


def label_map(image: np.ndarray) -> np.ndarray:
    """(S, S) uint8 class ids (0..20) of an image, as the semantic map spec defines them."""
    return analyse(image).labels


def scene_matches(analysis: Analysis, scene: Scene) -> bool:
    """True when background and every object's colour, shape, size and position agree exactly."""
    wanted = scene.background, tuple(sorted((o.colour, o.shape, o.size, o.position) for o in scene.objects))
    return analysis.scene_tuple() == wanted


# ---------------------------------------------------------------- captions


@dataclass(frozen=True)
class RequestedObject:
    colour: str
    shape: str
    size: str | None = None  # None: the caption did not say
    position: str | None = None


@dataclass(frozen=True)
class Request:
    objects: tuple[RequestedObject, ...]
    background: str | None = None


_PHRASE = re.compile(
    r"^a (?:(?P<size>small|large) )?(?P<colour>\w+) (?P<shape>\w+)"
    r"(?: (?:in the (?P<center>center)|at the (?P<position>[a-z ]+)))?$"
)
_BACKGROUND = re.compile(r"^(?P<objects>.+) on a (?P<background>\w+) background$")


def parse_caption(text: str) -> Request:
    """Read a full or shortened shapes-world caption into the objects and background it asks for."""
    words = " ".join(text.lower().split())
    background = None
    m = _BACKGROUND.match(words)
    if m:
        words, background = m["objects"], m["background"]
        if background not in BACKGROUNDS:
            raise CaptionError(f"caption {text!r}: unknown background {background!r}")
    objects = []
    for phrase in words.split(" and "):
        p = _PHRASE.match(phrase)
        if not p or p["colour"] not in COLOURS or p["shape"] not in SHAPES:
            raise CaptionError(f"caption {text!r}: cannot read the object phrase {phrase!r}")
        position = "center" if p["center"] else p["position"]
        if p["position"] is not None and (p["position"] not in POSITION_WORDS or p["position"] == "center"):
            raise CaptionError(f"caption {text!r}: unknown position {p['position']!r}")
        objects.append(RequestedObject(p["colour"], p["shape"], p["size"], position))
    return Request(tuple(objects), background)


def request_of_scene(scene: Scene) -> Request:
    objects = tuple(RequestedObject(o.colour, o.shape, o.size, o.position) for o in scene.objects)
    return Request(objects, scene.background)


# ---------------------------------------------------------------- matching


def _best_assignment(score: np.ndarray) -> list[int | None]:
    """For each row, the column it is matched to (one-to-one) maximising the total score.

    Exhaustive over permutations of the zero-padded square matrix for the small
    problems of this world (up to 7 rows/columns), greedy beyond that.
    """
    rows, cols = score.shape
    n = max(rows, cols)
    if n <= 7:
        square = np.zeros((n, n))
        square[:rows, :cols] = score
        best = max(itertools.permutations(range(n)), key=lambda perm: square[range(n), perm].sum())
        return [c if c < cols else None for c in best[:rows]]
    result: list[int | None] = [None] * rows
    taken: set[int] = set()
    for flat in np.argsort(-score, axis=None, kind="stable"):
        r, c = divmod(int(flat), cols)
        if result[r] is None and c not in taken:
            result[r] = c
            taken.add(c)
    return result


@dataclass(frozen=True)
class ObjectMatch:
    requested: RequestedObject
    detected: DetectedObject | None
    colour_ok: bool
    shape_ok: bool
    size_ok: bool | None  # None when the request did not name a size
    position_ok: bool | None

    @property
    def ok(self) -> bool:
        optional_ok = self.size_ok is not False and self.position_ok is not False
        return self.colour_ok and self.shape_ok and optional_ok


@dataclass(frozen=True)
class CaptionMatch:
    objects: tuple[ObjectMatch, ...]
    n_requested: int
    n_detected: int
    background_ok: bool | None  # None when the request did not name a background

    @property
    def count_ok(self) -> bool:
        return self.n_requested == self.n_detected

    @property
    def scene_ok(self) -> bool:
        return self.count_ok and self.background_ok is not False and all(m.ok for m in self.objects)

    def accuracy(self, attribute: str) -> float | None:
        """Fraction of requested objects right in 'colour', 'shape', 'size', 'position' or 'object'."""
        name = "ok" if attribute == "object" else f"{attribute}_ok"
        values = [getattr(m, name) for m in self.objects]
        values = [v for v in values if v is not None]
        return float(np.mean(values)) if values else None


def _object_match(req: RequestedObject, det: DetectedObject | None) -> ObjectMatch:
    if det is None:
        return ObjectMatch(req, None, False, False, None if req.size is None else False,
                           None if req.position is None else False)
    return ObjectMatch(
        req,
        det,
        det.colour == req.colour,
        det.shape == req.shape,
        None if req.size is None else det.size == req.size,
        None if req.position is None else det.position == req.position,
    )


def match_caption(analysis: Analysis, scene_or_caption: Scene | Request | str) -> CaptionMatch:
    """Compare what an image shows with what a scene or caption asked for, object by object."""
    if isinstance(scene_or_caption, Scene):
        request = request_of_scene(scene_or_caption)
    elif isinstance(scene_or_caption, str):
        request = parse_caption(scene_or_caption)
    else:
        request = scene_or_caption
    detected = analysis.objects
    score = np.zeros((len(request.objects), len(detected)))
    for i, req in enumerate(request.objects):
        for j, det in enumerate(detected):
            m = _object_match(req, det)
            score[i, j] = 4 * m.colour_ok + 4 * m.shape_ok + (m.size_ok is True) + (m.position_ok is True)
    assignment = _best_assignment(score)
    matches = tuple(
        _object_match(req, None if j is None else detected[j]) for req, j in zip(request.objects, assignment)
    )
    background_ok = None if request.background is None else analysis.background == request.background
    return CaptionMatch(matches, len(request.objects), len(detected), background_ok)


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def layout_ious(analysis: Analysis, boxes: Sequence[dict], same_label: bool = True) -> list[float]:
    """Per requested {"label", "box"}: IoU with its one-to-one matched detection of that label (0 if none).

    With same_label=False any detection may match: where objects are placed, whatever they are."""
    score = np.zeros((len(boxes), len(analysis.objects)))
    for i, item in enumerate(boxes):
        for j, det in enumerate(analysis.objects):
            if det.label == item["label"] or not same_label:
                score[i, j] = box_iou(item["box"], det.box)
    return [0.0 if j is None else float(score[i, j]) for i, j in enumerate(_best_assignment(score))]


def layout_iou(analysis: Analysis, boxes: Sequence[dict]) -> float:
    """Mean IoU between requested layout boxes and the detected objects of the right label."""
    if not boxes:
        raise KilnError("layout_iou: the layout has no boxes")
    return float(np.mean(layout_ious(analysis, boxes)))


# ---------------------------------------------------------------- pixels


def psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """PSNR in dB; uint8 images peak at 255, float images at 1. mask (H, W) weights pixels."""
    peak = 255.0 if a.dtype == np.uint8 and b.dtype == np.uint8 else 1.0
    err = (a.astype(np.float64) - b.astype(np.float64)) ** 2
    if err.ndim == 3:
        err = err.mean(-1)
    if mask is None:
        mse = float(err.mean())
    else:
        weights = mask.astype(np.float64)
        if weights.sum() <= 0:
            raise KilnError("psnr: the mask selects no pixel")
        mse = float((err * weights).sum() / weights.sum())
    return float("inf") if mse == 0 else 10.0 * np.log10(peak * peak / mse)


def label_map_accuracy(predicted: np.ndarray, target: np.ndarray) -> float:
    """Fraction of pixels whose class ids agree."""
    if predicted.shape != target.shape:
        raise KilnError(f"label maps differ in shape: {predicted.shape} vs {target.shape}")
    return float((predicted == target).mean())


def label_map_miou(predicted: np.ndarray, target: np.ndarray, num_classes: int = 21) -> float:
    """Mean intersection over union over the classes present in either map."""
    ious = []
    for c in range(num_classes):
        p, t = predicted == c, target == c
        union = (p | t).sum()
        if union:
            ious.append((p & t).sum() / union)
    return float(np.mean(ious))
