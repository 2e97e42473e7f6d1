"""Socket values as pictures to show: RGB uint8 (H, W, 3) numpy arrays. No Qt.

What a value looks like is decided by its socket type, never by its shape: IMAGE
and MASK show each batch item (a mask in grey), LAYOUT its boxes drawn over a dark
square, LATENT each item through the live preview's colour projection. torch is
imported inside the functions that need it (only for values that hold tensors).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from engine.spec import SocketType

DISPLAYABLE = frozenset({SocketType.IMAGE, SocketType.MASK, SocketType.LAYOUT, SocketType.LATENT})
LAYOUT_SIDE = 256  # pixels a side of a drawn layout
MAX_ITEMS = 16  # batch items shown at most


def to_rgb(value: Any, socket_type: SocketType, limit: int = MAX_ITEMS) -> list[np.ndarray]:
    """Up to `limit` pictures of a value that travels on `socket_type`; [] when it has none to show
    (an empty layout, a socket type without pictures)."""
    if socket_type is SocketType.IMAGE:
        return _pictures(value.pixels[:limit])
    if socket_type is SocketType.MASK:
        return _pictures(_mask_batch(value)[:limit])
    if socket_type is SocketType.LAYOUT:
        return [_drawn_layout(value)] if len(value) else []
    if socket_type is SocketType.LATENT:
        return _latent_previews(value.samples[:limit])
    return []


def thumbnail(rgb: np.ndarray, side: int) -> np.ndarray:
    """The picture at most `side` pixels a side, each pixel the mean of those it covers."""
    from PIL import Image as PILImage

    h, w = rgb.shape[:2]
    scale = side / max(h, w)
    if scale >= 1:
        return rgb
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(PILImage.fromarray(rgb).resize(size, PILImage.Resampling.BOX))


def _pictures(batch: Any) -> list[np.ndarray]:
    """(B, 1 or 3, H, W) floats in [0, 1] -> B arrays (H, W, 3); grey repeated to three channels."""
    import torch

    pixels = batch.detach().float().cpu().clamp(0, 1)
    if pixels.shape[1] == 1:
        pixels = pixels.expand(-1, 3, -1, -1)
    rgb = (pixels * 255).round().to(torch.uint8).permute(0, 2, 3, 1)
    return [np.ascontiguousarray(item.numpy()) for item in rgb]


def _mask_batch(mask: Any) -> Any:
    """A MASK as (B, 1, H, W): masks made without batch or channel dimensions get them."""
    if mask.ndim == 2:
        return mask[None, None]
    return mask[:, None] if mask.ndim == 3 else mask


def _drawn_layout(layout: Any) -> np.ndarray:
    from engine.drawing import render_layout

    return render_layout(layout.to_json(), LAYOUT_SIDE)


def _latent_previews(samples: Any) -> list[np.ndarray]:
    from engine.sampling.preview import LatentPreviewer

    project = LatentPreviewer(None, int(samples.shape[1]))
    return [project(samples[i:i + 1]) for i in range(samples.shape[0])]
