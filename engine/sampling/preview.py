"""Live previews: latent -> RGB through a linear projection (no decoder call).

Factors follow one convention: `rgb01 = latent_channels @ weights + bias`, with
`weights` (C, 3) and `bias` (3,), giving pixels in [0, 1]. A first stage may
carry its own factors as `latent_rgb` (fitted by least squares from its
latents to downsampled pixels): either C rows of 3 weights optionally followed
by a bias row, or a mapping {"weights": [[...] * C], "bias": [r, g, b]}.

Where colour is not linear in the latent (the built-in 4x super-resolution
autoencoder's 3 channels: a linear map showed a purple circle blue and a red
square brown), `latent_rgb` may instead be a tiny per-cell network fitted the
same way: {"w1": (C, H), "b1": (H,), "w2": (H, 3), "b2": (3,)} for
`rgb01 = silu(latent @ w1 + b1) @ w2 + b2`, still far cheaper than a decode.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

# Stable Diffusion 1.x (KL f8, scaled latents): the widely used 4x3 projection to
# [-1, 1] (rows: latent channels; columns: R, G, B), halved and shifted to [0, 1].
_SD1_WEIGHTS_PM1 = (
    (0.3512, 0.2297, 0.3227),
    (0.3250, 0.4974, 0.2350),
    (-0.2829, 0.1762, 0.2721),
    (-0.2120, -0.2616, -0.7177),
)
SD1_LATENT_RGB: dict[str, Any] = {
    "weights": [[w / 2 for w in row] for row in _SD1_WEIGHTS_PM1],
    "bias": [0.5, 0.5, 0.5],
}


def rgb_factors(latent_rgb: Any, channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(weights (C, 3), bias (3,)) float32 from a `latent_rgb` value, or a fallback.

    Factors of the wrong size are ignored. Fallback: the SD 1.x factors for 4
    channels, else the first three channels shown around mid grey.
    """
    parsed = _parse(latent_rgb, channels) if latent_rgb is not None else None
    if parsed is not None:
        return parsed
    if channels == 4:
        return _parse(SD1_LATENT_RGB, 4)  # type: ignore[return-value]
    weights = torch.zeros(channels, 3)
    for c in range(min(channels, 3)):
        weights[c, c] = 0.25
    if channels < 3:
        weights[:, channels:] = 0.25 / channels
    return weights, torch.full((3,), 0.5)


def _parse(latent_rgb: Any, channels: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    if isinstance(latent_rgb, Mapping):
        if "weights" not in latent_rgb:  # a network for another channel count
            return None
        weights = torch.tensor(latent_rgb["weights"], dtype=torch.float32)
        bias = torch.tensor(latent_rgb.get("bias", [0.0, 0.0, 0.0]), dtype=torch.float32)
    else:
        rows = torch.tensor([list(r) for r in latent_rgb], dtype=torch.float32)
        has_bias = rows.shape[0] == channels + 1
        weights = rows[:channels] if has_bias else rows
        bias = rows[-1] if has_bias else torch.zeros(3)
    if weights.shape != (channels, 3) or bias.shape != (3,):
        return None
    return weights, bias


def is_preview_network(latent_rgb: Any) -> bool:
    """Whether `latent_rgb` is in the network form (a card's `latent_rgb_network`)."""
    return isinstance(latent_rgb, Mapping) and {"w1", "b1", "w2", "b2"} <= latent_rgb.keys()


def preview_network(latent_rgb: Any, channels: int) -> tuple[torch.Tensor, ...] | None:
    """(w1 (C, H), b1 (H,), w2 (H, 3), b2 (3,)) from a network-form `latent_rgb`; None if it is not one or
    does not fit `channels`."""
    if not is_preview_network(latent_rgb):
        return None
    w1, b1, w2, b2 = (torch.tensor(latent_rgb[k], dtype=torch.float32) for k in ("w1", "b1", "w2", "b2"))
    hidden = b1.shape[0] if b1.dim() == 1 else -1
    if w1.shape != (channels, hidden) or w2.shape != (hidden, 3) or b2.shape != (3,):
        return None
    return w1, b1, w2, b2


class LatentPreviewer:
    """Projects item 0 of a latent batch to a uint8 (h, w, 3) RGB array."""

    def __init__(self, latent_rgb: Any, channels: int):
        self.network = preview_network(latent_rgb, channels)
        self.weights, self.bias = rgb_factors(None if self.network else latent_rgb, channels)

    def __call__(self, latent: torch.Tensor) -> np.ndarray:
        item = latent[0].detach().to("cpu", torch.float32)  # (C, h, w)
        c, h, w = item.shape
        cells = item.reshape(c, h * w).T  # (h*w, C)
        if self.network is not None:
            w1, b1, w2, b2 = self.network
            rgb = torch.addmm(b2, F.silu(torch.addmm(b1, cells, w1)), w2)
        else:
            rgb = torch.addmm(self.bias, cells, self.weights)
        return (rgb.view(h, w, 3).clamp(0, 1) * 255).round().to(torch.uint8).numpy()


def decoded_preview(pixels01: torch.Tensor) -> np.ndarray:
    """Item 0 of a decoded (B, 3, H, W) image in [0, 1] as uint8 (H, W, 3)."""
    item = pixels01[0].detach().to("cpu", torch.float32).clamp(0, 1)
    return (item.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
