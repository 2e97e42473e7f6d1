"""Regional prompts: prompts that act only inside a box or a painted mask, for any cross-attention model.

A CONDITIONING may carry `PromptRegion`s beside its own (global) context. Two ways apply them:

- "attention" (masked cross-attention, one UNet call, the default): the global prompt's tokens and every
  region's tokens are joined into one context. At each latent position an additive attention bias lets a
  region's tokens be seen only where its mask covers the position (bias log(strength * coverage)) and
  lowers the global prompt's tokens there to the background weight (bias log(1 - (1 - background) *
  coverage)). Outside every region a position sees the global prompt alone, exactly as without regions.
- "blend" (ComfyUI's ConditioningSetMask arithmetic, engine.sampling.region_blend): the model runs once per
  prompt and the predictions are averaged with weights strength * mask, the global prompt weighing 1.

Masks stay resolution-free (a normalised box, or a mask resampled to each attention layer's size), so one
conditioning serves every image size. A region may act during part of the schedule only (`start`, `end`:
fractions of the diffusion time, 0 the noisiest end); outside it, or at strength 0, it is left out
entirely, so the model sees exactly what it sees without it.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F

REGION_MODES = ("attention", "blend")
DEFAULT_BACKGROUND = 0.3  # the global prompt's attention weight inside a region (Regional Prompts' default)


@dataclass(frozen=True, eq=False)
class PromptRegion:
    """One prompt that acts in one place: its context, where, how strongly, when, and for which items."""

    crossattn: torch.Tensor  # (1, T, D) the region prompt's context
    box: tuple[float, float, float, float] | None = None  # x0, y0, x1, y1 in [0, 1]; or
    mask: torch.Tensor | None = None  # (H, W) in [0, 1] at any resolution
    strength: float = 1.0
    start: float = 0.0  # active from this fraction of the diffusion time (0 = pure noise) ...
    end: float = 1.0  # ... to this one (1 = clean)
    items: tuple[int, ...] | None = None  # the batch items it applies to; None = all

    def active(self, progress: float) -> bool:
        return self.strength > 0 and self.start <= progress <= self.end

    def coverage(self, h: int, w: int, device: torch.device) -> torch.Tensor:
        """(h, w) in [0, 1]: how much of each cell of an h x w grid the region covers."""
        if self.box is not None:
            x0, y0, x1, y1 = self.box
            return _span_cover(y0, y1, h, device)[:, None] * _span_cover(x0, x1, w, device)[None, :]
        if self.mask is None:
            raise ValueError("a prompt region needs a box or a mask")
        mask = self.mask.to(device, torch.float32)[None, None]
        if mask.shape[-2:] != (h, w):
            mask = F.interpolate(mask, size=(h, w), mode="area" if mask.shape[-1] >= w else "bilinear")
        return mask[0, 0].clamp(0, 1)

    def weight(self, h: int, w: int, device: torch.device) -> torch.Tensor:
        """(h, w) strength times coverage."""
        return self.coverage(h, w, device) * self.strength

    def for_items(self, items: Sequence[int]) -> PromptRegion:
        return replace(self, items=tuple(items))


def _span_cover(lo: float, hi: float, cells: int, device: torch.device) -> torch.Tensor:
    """(cells,) the fraction of each cell that [lo, hi] covers (exact at fractional borders)."""
    edges = torch.arange(cells, device=device, dtype=torch.float32)
    return (torch.minimum(torch.tensor(hi * cells, device=device), edges + 1)
            - torch.maximum(torch.tensor(lo * cells, device=device), edges)).clamp(0, 1)


@dataclass(frozen=True)
class TokenSpan:
    """Context tokens [start, end) of a batch's joined context: one prompt, seen by some items."""

    start: int
    end: int
    items: tuple[int, ...]
    region: PromptRegion | None  # None: the item's global prompt


@dataclass(eq=False)
class RegionalContext:
    """A batch's joined context tokens and, per item, which tokens each latent position may see.

    It replaces the (B, T, D) context tensor on its way through the UNet; each SpatialTransformer asks
    it for the attention bias at its own size."""

    tokens: torch.Tensor  # (B, T, D)
    spans: tuple[TokenSpan, ...]
    background: float = DEFAULT_BACKGROUND
    _biases: dict[tuple, torch.Tensor] = field(default_factory=dict, repr=False)

    def to(self, dtype: torch.dtype) -> RegionalContext:
        if self.tokens.dtype == dtype:
            return self
        return RegionalContext(self.tokens.to(dtype), self.spans, self.background, self._biases)

    @property
    def shape(self) -> torch.Size:
        return self.tokens.shape

    def bias(self, h: int, w: int) -> torch.Tensor:
        """(B, 1, h*w, T) additive attention bias for an h x w feature map, made once per size."""
        key = (h, w, self.tokens.device, self.tokens.dtype)
        if key not in self._biases:
            self._biases[key] = self._make_bias(h, w).to(self.tokens.dtype)[:, None]
        return self._biases[key]

    def _make_bias(self, h: int, w: int) -> torch.Tensor:
        batch, length = self.tokens.shape[:2]
        device = self.tokens.device
        weights = torch.zeros(batch, h * w, length, device=device)  # 0 = not seen (padding, other items)
        covered = torch.zeros(batch, h * w, device=device)
        for span in self.spans:
            if span.region is not None:
                region = span.region.weight(h, w, device).reshape(-1)
                weights[list(span.items), :, span.start:span.end] = region[:, None]
                covered[list(span.items)] = torch.maximum(covered[list(span.items)], region.clamp(max=1))
        for span in self.spans:
            if span.region is None:
                glob = (1 - (1 - self.background) * covered[list(span.items)]).clamp(min=1e-6)
                weights[list(span.items), :, span.start:span.end] = glob[..., None]
        return weights.log()  # log 0 = -inf: not seen


def compile_regions(context: torch.Tensor, regions: Sequence[PromptRegion], batch: int, progress: float,
                    background: float = DEFAULT_BACKGROUND) -> RegionalContext | None:
    """The joined context of a (B|1, T, D) global context and its regions active at `progress`;
    None when none is (the model then sees the global context alone)."""
    active = [r for r in regions if r.active(progress)]
    if not active:
        return None
    glob = _batch_of(context, batch)
    parts, spans, length = [glob], [TokenSpan(0, glob.shape[1], tuple(range(batch)), None)], glob.shape[1]
    for region in active:
        tokens = region.crossattn.to(glob.device, glob.dtype)
        items = tuple(range(batch)) if region.items is None else tuple(i for i in region.items if i < batch)
        parts.append(_batch_of(tokens, batch))
        spans.append(TokenSpan(length, length + tokens.shape[1], items, region))
        length += tokens.shape[1]
    return RegionalContext(torch.cat(parts, dim=1), tuple(spans), background)


def _batch_of(tokens: torch.Tensor, batch: int) -> torch.Tensor:
    if tokens.shape[0] == batch:
        return tokens
    if batch % tokens.shape[0]:
        raise ValueError(f"conditioning batch {tokens.shape[0]} does not divide latent batch {batch}")
    return tokens.repeat_interleave(batch // tokens.shape[0], dim=0)


def regions_for_items(regions: Sequence[PromptRegion], first: int, count: int) -> tuple[PromptRegion, ...]:
    """Regions of a conditioning that takes batch items first..first+count-1 of a stacked batch."""
    out = []
    for region in regions:
        items = range(count) if region.items is None else [i for i in region.items if i < count]
        out.append(region.for_items([first + i for i in items]))
    return tuple(out)
