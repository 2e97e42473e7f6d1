"""What the artist draws, as numpy arrays: masks, label maps, layout boxes. No Qt, no torch.

Masks and label maps are uint8 arrays (H, W). A mask holds 0..255 (255 = the
region to regenerate); a label map holds class ids. Both travel inside graph
files as base64 PNG text (8-bit grey), so a shared graph carries the drawing.

Pixel coordinates: pixel (col, row) covers [col, col + 1) x [row, row + 1);
brush strokes are measured from pixel centres (col + 0.5, row + 0.5).

Semantic palette (display colours of the shapes world's 21 classes):
backgrounds keep their scene RGB; an object class is its scene colour for a
circle, the colour darkened to 60 % for a square, and mixed 45 % toward white
for a triangle, so the three shapes of one colour stay distinguishable while
still reading as that colour. Every two palette colours differ by more than
2 * PALETTE_TOLERANCE in some channel, so colour-coded PNGs decode unambiguously.

numpy and PIL are imported here; OpenCV only inside the functions that use it.
"""
from __future__ import annotations

import base64
import binascii
import colorsys
import io
import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from engine.errors import KilnError

MAX_PIXELS = 8192 * 8192

# The shapes world's names and colours (spec "shapes world v1"), owned here: the app draws with them and
# training.shapes_world renders its scenes with them. Order matters: it numbers the semantic classes.
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "white": (245, 245, 245), "gray": (128, 128, 128), "black": (20, 20, 20)}
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40), "green": (40, 170, 70), "blue": (40, 90, 220),
    "yellow": (240, 210, 40), "purple": (150, 70, 200), "orange": (245, 140, 30)}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")

# The built-in layout model's box labels, "{colour} {shape}" (18).
LAYOUT_LABELS: tuple[str, ...] = tuple(f"{c} {s}" for c in COLOURS for s in SHAPES)
# Semantic classes 0..20: three backgrounds, then 3 + 3 * colour + shape.
SEMANTIC_CLASS_NAMES: tuple[str, ...] = tuple(f"{b} background" for b in BACKGROUNDS) + LAYOUT_LABELS
NUM_SEMANTIC_CLASSES = len(SEMANTIC_CLASS_NAMES)
PALETTE_TOLERANCE = 8  # a colour-coded pixel may be this far (per channel) from its palette colour
LAYOUT_GRID = 64  # the editor snaps box edges to multiples of 1/64


class DrawingError(KilnError):
    """A drawing that cannot be read or used; the message names what and why."""


# --- palette -----------------------------------------------------------------


def _rounded(rgb: Iterable[float]) -> tuple[int, int, int]:
    r, g, b = (round(v) for v in rgb)
    return r, g, b


def _shade(rgb: tuple[int, int, int], shape: str) -> tuple[int, int, int]:
    if shape == "square":
        return _rounded(v * 0.6 for v in rgb)
    if shape == "triangle":
        return _rounded(v + (255 - v) * 0.45 for v in rgb)
    return rgb


SEMANTIC_COLOURS: tuple[tuple[int, int, int], ...] = tuple(BACKGROUNDS.values()) + tuple(
    _shade(rgb, s) for rgb in COLOURS.values() for s in SHAPES)


def class_names(num_classes: int) -> list[str]:
    """Display names of classes 0..num_classes-1 ("class 21" beyond the built-in 21)."""
    return [SEMANTIC_CLASS_NAMES[i] if i < NUM_SEMANTIC_CLASSES else f"class {i}" for i in range(num_classes)]


def palette(num_classes: int) -> np.ndarray:
    """(num_classes, 3) uint8 display colours; classes past 21 get evenly spread hues."""
    colours = list(SEMANTIC_COLOURS[:num_classes])
    for i in range(len(colours), num_classes):
        hue = (i * 0.618033988749895) % 1.0  # golden-ratio steps keep neighbours apart
        colours.append(_rounded(v * 255 for v in colorsys.hsv_to_rgb(hue, 0.55, 0.8 if i % 2 else 0.6)))
    return np.array(colours, dtype=np.uint8).reshape(num_classes, 3)


def layout_label_colour(label: str) -> tuple[int, int, int]:
    """A display colour for a layout box: its shapes-world colour, else one from its text."""
    words = label.lower().split()
    for name, rgb in COLOURS.items():
        if name in words:
            return rgb
    hue = (sum(ord(c) * 31 ** i for i, c in enumerate(label)) % 997) / 997
    return _rounded(v * 255 for v in colorsys.hsv_to_rgb(hue, 0.6, 0.9))


def labels_to_rgb(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """(H, W) class ids -> (H, W, 3) uint8 palette colours (ids must be < num_classes)."""
    return palette(num_classes)[labels]


def rgb_to_labels(rgb: np.ndarray, num_classes: int, source: str = "image") -> np.ndarray:
    """Inverse of labels_to_rgb; a colour off the palette is an error naming its first pixel."""
    colours = palette(num_classes).astype(np.int16)  # (N, 3)
    flat = rgb.reshape(-1, 3).astype(np.int16)
    unique, inverse = np.unique(flat, axis=0, return_inverse=True)
    distance = np.abs(unique[:, None, :] - colours[None, :, :]).max(axis=2)  # (U, N)
    best = distance.argmin(axis=1)
    bad = distance[np.arange(len(unique)), best] > PALETTE_TOLERANCE
    if bad.any():
        colour = unique[int(np.flatnonzero(bad)[0])]
        index = int(np.flatnonzero((flat == colour).all(axis=1))[0])
        y, x = divmod(index, rgb.shape[1])
        raise DrawingError(f"{source}: colour {tuple(int(v) for v in colour)} at pixel ({x}, {y}) is not "
                           f"in the palette of {num_classes} classes")
    return best[inverse.reshape(-1)].reshape(rgb.shape[:2]).astype(np.uint8)


# --- PNG as base64 text ------------------------------------------------------------


def encode_png_b64(array: np.ndarray) -> str:
    """(H, W) uint8 -> base64 text of an 8-bit grey PNG."""
    from PIL import Image as PILImage

    buffer = io.BytesIO()
    grey = PILImage.fromarray(np.ascontiguousarray(array, dtype=np.uint8), mode="L")
    grey.save(buffer, "PNG", optimize=True)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def decode_png_b64(text: str, what: str = "drawing") -> np.ndarray:
    """base64 PNG text -> (H, W) uint8 grey values. Bad text raises DrawingError naming `what`."""
    if not isinstance(text, str):
        raise DrawingError(f"the {what} is not base64 PNG text")
    try:
        data = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise DrawingError(f"the {what} is not valid base64 text") from None
    return _open_png(io.BytesIO(data), f"the {what}", grey=True)


def _open_png(source: Any, name: str, grey: bool) -> np.ndarray:
    """Decode an image file or buffer; grey=True gives (H, W), else the image in RGBA (H, W, 4)."""
    from PIL import Image as PILImage
    from PIL import UnidentifiedImageError

    try:
        with PILImage.open(source) as img:
            if img.width * img.height > MAX_PIXELS:
                raise DrawingError(f"{name}: {img.width}x{img.height} is too large")
            if grey:
                return _grey_values(img)
            return np.array(img.convert("RGBA"))
    except FileNotFoundError:
        raise DrawingError(f"{name}: file not found") from None
    except PILImage.DecompressionBombError:
        raise DrawingError(f"{name}: too large to load") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DrawingError(f"{name}: not a PNG Kiln can read ({type(exc).__name__})") from None


def _grey_values(img: Any) -> np.ndarray:
    """Grey values as stored: 'L' as is, 16-bit/32-bit ints clipped, colour through luma."""
    if img.mode == "L":
        return np.array(img)
    if img.mode in ("I", "I;16", "I;16B", "I;16L"):
        return np.clip(np.array(img), 0, 255).astype(np.uint8)
    return np.array(img.convert("L"))


# --- reading files -------------------------------------------------------------------


def read_mask_file(path: str) -> np.ndarray:
    """A mask from an image file: its alpha channel when it has transparency (transparent =
    regenerate, as LoadImage does), else its brightness (white = regenerate)."""
    rgba = _open_png(path, path, grey=False)
    alpha = rgba[..., 3]
    if (alpha < 255).any():
        return (255 - alpha).astype(np.uint8)
    rgb = rgba[..., :3].astype(np.float32)
    luma = rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return np.clip(np.rint(luma), 0, 255).astype(np.uint8)


def read_label_file(path: str, num_classes: int) -> np.ndarray:
    """A label map from a PNG of class indices (grey values = class ids) or a colour-coded
    PNG using the palette. Ids are not checked against num_classes here."""
    from PIL import Image as PILImage

    try:
        with PILImage.open(path) as img:
            mode = img.mode
    except FileNotFoundError:
        raise DrawingError(f"{path}: file not found") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise DrawingError(f"{path}: not a PNG Kiln can read ({type(exc).__name__})") from None
    if mode in ("L", "I", "I;16", "I;16B", "I;16L"):
        return _open_png(path, path, grey=True)
    rgb = _open_png(path, path, grey=False)[..., :3]
    if _looks_like_indices(rgb, num_classes):
        return rgb[..., 0].copy()
    return rgb_to_labels(rgb, num_classes, path)


def _looks_like_indices(rgb: np.ndarray, num_classes: int) -> bool:
    """Grey pixels all below num_classes: class ids saved as RGB. One flat background grey
    (a colour-coded empty map, e.g. all (20, 20, 20)) counts as colour-coded."""
    grey = (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all()
    if not grey or int(rgb.max()) >= num_classes:
        return False
    values = np.unique(rgb[..., 0])
    return not (len(values) == 1 and any(int(values[0]) == bg[0] for bg in BACKGROUNDS.values()))


def write_png(path: str, array: np.ndarray) -> None:
    """Write (H, W) grey or (H, W, 3) colour uint8 as a PNG file."""
    from PIL import Image as PILImage

    try:
        PILImage.fromarray(np.ascontiguousarray(array, dtype=np.uint8)).save(path, "PNG")
    except OSError as exc:
        raise DrawingError(f"{path}: cannot write ({exc.strerror or exc})") from None


def first_unknown_class(labels: np.ndarray, num_classes: int) -> tuple[int, int, int, int] | None:
    """(class id, x, y, pixel count) of the first id >= num_classes, or None when all are known."""
    bad = labels >= num_classes
    if not bad.any():
        return None
    index = int(np.flatnonzero(bad)[0])
    y, x = divmod(index, labels.shape[1])
    return int(labels[y, x]), x, y, int(bad.sum())


# --- sizes ---------------------------------------------------------------------------


def same_aspect(a: tuple[int, int], b: tuple[int, int], tolerance: float = 0.01) -> bool:
    """True when (w, h) sizes a and b have the same shape up to rounding (1 % by default)."""
    ra, rb = a[0] / a[1], b[0] / b[1]
    return abs(ra - rb) <= tolerance * max(ra, rb)


def resize_mask(mask: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resize grey values smoothly (area average down, bilinear up)."""
    import cv2

    shrinking = width * height < mask.shape[0] * mask.shape[1]
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return cv2.resize(mask, (width, height), interpolation=interpolation)


def resize_labels(labels: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resize class ids without mixing them (nearest neighbour)."""
    import cv2

    return cv2.resize(labels, (width, height), interpolation=cv2.INTER_NEAREST_EXACT)


# --- painting --------------------------------------------------------------------------


def brush_alpha(shape: tuple[int, int], p0: tuple[float, float], p1: tuple[float, float],
                radius: float, hardness: float) -> tuple[tuple[slice, slice], np.ndarray] | None:
    """Coverage of a round brush dragged from p0 to p1 (pixel coordinates), inside its bounding box.

    Returns (rows, cols) slices and float32 alpha in [0, 1]: 1 within radius * hardness
    of the segment, falling linearly to 0 at `radius`. None when nothing is covered.
    """
    h, w = shape
    x0, x1 = sorted((p0[0], p1[0]))
    y0, y1 = sorted((p0[1], p1[1]))
    c0, c1 = max(0, math.floor(x0 - radius)), min(w, math.ceil(x1 + radius) + 1)
    r0, r1 = max(0, math.floor(y0 - radius)), min(h, math.ceil(y1 + radius) + 1)
    if c0 >= c1 or r0 >= r1:
        return None
    xs = np.arange(c0, c1, dtype=np.float32) + 0.5
    ys = np.arange(r0, r1, dtype=np.float32)[:, None] + 0.5
    distance = _segment_distance(xs, ys, p0, p1)  # (rows, cols)
    hardness = min(max(hardness, 0.0), 1.0)
    if hardness >= 1.0:
        alpha = (distance <= radius).astype(np.float32)
    else:
        alpha = np.clip((radius - distance) / (radius * (1.0 - hardness)), 0.0, 1.0).astype(np.float32)
    return (slice(r0, r1), slice(c0, c1)), alpha


def _segment_distance(xs: np.ndarray, ys: np.ndarray, p0: tuple[float, float],
                      p1: tuple[float, float]) -> np.ndarray:
    dx, dy = p1[0] - p0[0], p1[1] - p0[1]
    length2 = dx * dx + dy * dy
    if length2 == 0:
        t = np.zeros((1, 1), dtype=np.float32)
    else:
        t = np.clip(((xs - p0[0]) * dx + (ys - p0[1]) * dy) / length2, 0.0, 1.0)
    return np.hypot(xs - (p0[0] + t * dx), ys - (p0[1] + t * dy))


def paint_mask_stroke(mask: np.ndarray, p0: tuple[float, float], p1: tuple[float, float], radius: float,
                      hardness: float, erase: bool = False) -> tuple[int, int, int, int] | None:
    """Paint (or erase) one brush segment into mask in place; returns the touched (x0, y0, x1, y1)."""
    covered = brush_alpha(mask.shape, p0, p1, radius, hardness)
    if covered is None:
        return None
    (rows, cols), alpha = covered
    region = mask[rows, cols]
    if erase:
        np.minimum(region, np.rint((1.0 - alpha) * 255).astype(np.uint8), out=region)
    else:
        np.maximum(region, np.rint(alpha * 255).astype(np.uint8), out=region)
    return cols.start, rows.start, cols.stop, rows.stop


def paint_label_stroke(labels: np.ndarray, p0: tuple[float, float], p1: tuple[float, float], radius: float,
                       class_id: int) -> tuple[int, int, int, int] | None:
    """Set class_id under a hard round brush segment, in place; returns the touched box."""
    covered = brush_alpha(labels.shape, p0, p1, radius, 1.0)
    if covered is None:
        return None
    (rows, cols), alpha = covered
    labels[rows, cols][alpha > 0] = class_id
    return cols.start, rows.start, cols.stop, rows.stop


def fill_rect(target: np.ndarray, corner_a: tuple[int, int], corner_b: tuple[int, int], value: int) -> None:
    """Fill the pixels from corner_a to corner_b inclusive (pixel indices, any order), clipped."""
    h, w = target.shape[:2]
    x0, x1 = sorted((corner_a[0], corner_b[0]))
    y0, y1 = sorted((corner_a[1], corner_b[1]))
    target[max(0, y0):min(h, y1 + 1), max(0, x0):min(w, x1 + 1)] = value


def fill_polygon(target: np.ndarray, points: Sequence[tuple[int, int]], value: int) -> None:
    """Fill a closed polygon through pixel indices (a lasso), edges included."""
    import cv2

    if len(points) < 3:
        return
    polygon = np.array([[int(x), int(y)] for x, y in points], dtype=np.int32)
    cv2.fillPoly(target, [polygon], color=int(value))


def flood_fill(labels: np.ndarray, x: int, y: int, value: int) -> int:
    """Set the 4-connected region of equal ids around (x, y) to value, in place; returns pixels changed."""
    import cv2

    h, w = labels.shape
    if not (0 <= x < w and 0 <= y < h) or int(labels[y, x]) == value:
        return 0
    region = np.zeros((h + 2, w + 2), dtype=np.uint8)
    flags = 4 | cv2.FLOODFILL_MASK_ONLY | (1 << 8)
    cv2.floodFill(labels, region, (int(x), int(y)), 0, loDiff=0, upDiff=0, flags=flags)
    inside = region[1:-1, 1:-1].astype(bool)
    labels[inside] = value
    return int(inside.sum())


def grow(mask: np.ndarray, pixels: int) -> np.ndarray:
    """Grow (pixels > 0) or shrink (< 0) the masked region by a round kernel. uint8 or float32."""
    import cv2

    if pixels == 0:
        return mask.copy()
    size = 2 * abs(int(pixels)) + 1
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))
    operation = cv2.dilate if pixels > 0 else cv2.erode
    return operation(mask, kernel, borderType=cv2.BORDER_REPLICATE)


def feather(mask: np.ndarray, pixels: int) -> np.ndarray:
    """Soften the edges: a Gaussian blur over 2 * pixels + 1 (sigma pixels / 2). uint8 or float32."""
    import cv2

    if pixels <= 0:
        return mask.copy()
    size = 2 * int(pixels) + 1
    return cv2.GaussianBlur(mask, (size, size), sigmaX=pixels / 2.0, borderType=cv2.BORDER_REPLICATE)


# --- layout boxes -----------------------------------------------------------------------


def snap(value: float, grid: int = LAYOUT_GRID) -> float:
    """The nearest multiple of 1/grid, clamped to [0, 1]."""
    return min(1.0, max(0.0, round(value * grid) / grid))


def render_layout(layout: Sequence[dict], size: int = 256, background: tuple[int, int, int] = (34, 34, 38),
                  outline: int = 2) -> np.ndarray:
    """(size, size, 3) uint8: a LAYOUT's boxes drawn in their labels' colours (a node's thumbnail).

    Each box is filled at 35 % over the background and outlined at full colour, so
    overlapping boxes stay readable; later boxes are drawn over earlier ones."""
    picture = np.empty((size, size, 3), dtype=np.float32)
    picture[:] = background
    for item in layout:
        x0, y0, x1, y1 = (min(size, max(0, round(float(v) * size))) for v in item["box"])
        if x1 <= x0 or y1 <= y0:
            continue
        colour = np.asarray(layout_label_colour(str(item.get("label", ""))), dtype=np.float32)
        inside = picture[y0:y1, x0:x1]
        inside += 0.35 * (colour - inside)
        w = max(1, min(outline, (x1 - x0) // 2, (y1 - y0) // 2))
        for rows, cols in ((slice(y0, y0 + w), slice(x0, x1)), (slice(y1 - w, y1), slice(x0, x1)),
                           (slice(y0, y1), slice(x0, x0 + w)), (slice(y0, y1), slice(x1 - w, x1))):
            picture[rows, cols] = colour
    return picture.round().astype(np.uint8)
