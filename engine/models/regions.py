"""Layout boxes as concat channels: a resolution-free region list, painted at the latent's size.

A Kiln model with `DiffusionConfig.region_channels` K > 0 reads, after its
inpainting channels, K channels that paint each layout box at the latent's own
resolution: channel 0 is the box (the fraction of each latent cell it covers),
channels 1.. the words of its label that the model knows (`region_words`), so
"red circle" lights the box in the `red` and `circle` channels. Convolutions see
where each object goes directly, which cross-attention on box tokens learns
only slowly. The list is kept free of any size (`Conditioning.regions`) so one
conditioning serves every latent size, and the painting happens in the model.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch


def layout_regions(layouts: Sequence[Sequence[dict[str, Any]]], words: Sequence[str]) -> torch.Tensor:
    """(B, N, 4 + 1 + len(words)) boxes [x0, y0, x1, y1] and channel values; rows of zeros pad short layouts."""
    index = {w: i for i, w in enumerate(words)}
    n = max((len(layout) for layout in layouts), default=0)
    out = torch.zeros(len(layouts), max(n, 1), 5 + len(words))
    for b, layout in enumerate(layouts):
        for i, item in enumerate(layout):
            out[b, i, :4] = torch.tensor([float(v) for v in item["box"]])
            out[b, i, 4] = 1.0
            for word in str(item["label"]).lower().split():
                if word in index:
                    out[b, i, 5 + index[word]] = 1.0
    return out


def paint_regions(regions: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(B, N, 4 + K) regions -> (B, K, height, width): each box's cell coverage times its channel values."""
    boxes, values = regions[..., :4].float(), regions[..., 4:].float()
    xs = _coverage(boxes[..., 0], boxes[..., 2], width)  # (B, N, w)
    ys = _coverage(boxes[..., 1], boxes[..., 3], height)  # (B, N, h)
    cover = ys[..., :, None] * xs[..., None, :]  # (B, N, h, w)
    return torch.einsum("bnhw,bnk->bkhw", cover, values).clamp(max=1.0)


def _coverage(start: torch.Tensor, end: torch.Tensor, cells: int) -> torch.Tensor:
    """(B, N) spans in [0, 1] -> (B, N, cells): the fraction of each cell the span covers."""
    lo = torch.arange(cells, dtype=start.dtype, device=start.device)  # in cell units, so edges on cell
    overlap = torch.minimum(end[..., None] * cells, lo + 1) - torch.maximum(start[..., None] * cells, lo)  # borders are exact
    return overlap.clamp(0.0, 1.0)


def pad_regions(a: torch.Tensor, n: int) -> torch.Tensor:
    """(B, N, F) -> (B, n, F) with rows of zeros (no box) added."""
    if a.shape[1] >= n:
        return a
    return torch.cat([a, a.new_zeros(a.shape[0], n - a.shape[1], a.shape[2])], dim=1)
