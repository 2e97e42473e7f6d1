"""Regional prompts by blending predictions (the "blend" region mode; ComfyUI's ConditioningSetMask arithmetic).

The model runs once per prompt on the whole latent: the global prompt and each active region's prompt.
The conditional prediction is their average weighted by strength * mask, the global prompt weighing 1
everywhere: x0 = (x0_global + sum_r w_r x0_r) / (1 + sum_r w_r). All passes (and the unconditional one)
go into one UNet call when their contexts can be stacked, else one call each; both give the same result.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

from engine.models.regional import PromptRegion
from engine.values import Conditioning

Run = Callable[[torch.Tensor, "torch.Tensor | float", "Conditioning | None"], torch.Tensor]


def uses_blend(cond: Conditioning | None) -> bool:
    return cond is not None and bool(cond.prompt_regions) and cond.region_mode == "blend"


def blend_passes(cond: Conditioning, progress: float) -> tuple[list[Conditioning], list[PromptRegion]]:
    """The plain conditionings to run (the global prompt first) and the active regions they stand for."""
    plain = cond.with_(prompt_regions=())
    active = [r for r in cond.prompt_regions if r.active(progress)]
    return [plain] + [plain.with_(crossattn=r.crossattn) for r in active], active


def blended(predictions: Sequence[torch.Tensor], regions: Sequence[PromptRegion]) -> torch.Tensor:
    """Weighted average of [global, region 1, ...] predictions (B, C, h, w) under the regions' masks."""
    total = predictions[0].clone()
    weights = torch.ones_like(predictions[0][:, :1])
    h, w = predictions[0].shape[-2:]
    for prediction, region in zip(predictions[1:], regions, strict=True):
        weight = region.weight(h, w, prediction.device).to(prediction.dtype)[None, None]  # (1, 1, h, w)
        if region.items is not None:
            weight = weight * _item_mask(region.items, prediction.shape[0], prediction)
        total = total + prediction * weight
        weights = weights + weight
    return total / weights


def _item_mask(items: Sequence[int], batch: int, like: torch.Tensor) -> torch.Tensor:
    mask = torch.zeros(batch, 1, 1, 1, dtype=like.dtype, device=like.device)
    mask[[i for i in items if i < batch]] = 1
    return mask


def run_all(run: Run, x: torch.Tensor, sigma: torch.Tensor | float, conds: Sequence[Conditioning],
            batched: bool = True) -> list[torch.Tensor]:
    """One prediction per conditioning: in one UNet call when they stack (and `batched`), else one each."""
    stacked = stack_plain(conds, x.shape[0]) if batched and len(conds) > 1 else None
    if stacked is None:
        return [run(x, sigma, cond) for cond in conds]
    n = len(conds)
    many = torch.cat([sigma] * n) if isinstance(sigma, torch.Tensor) and sigma.ndim else sigma
    return list(run(x.repeat(n, 1, 1, 1), many, stacked).chunk(n))


def stack_plain(conds: Sequence[Conditioning], batch: int) -> Conditioning | None:
    """Conditionings without regional prompts as one of len(conds) * batch items; None when they differ
    in what they carry or in shape."""
    fields: dict[str, Any] = {}
    for name in ("crossattn", "concat", "y", "regions"):
        tensors = [getattr(c, name) for c in conds]
        if all(t is None for t in tensors):
            fields[name] = None
            continue
        if any(t is None for t in tensors):
            return None
        if name == "crossattn":
            tensors = _equal_lengths(tensors)
        tensors = [_batch_of(t, batch) for t in tensors]
        if any(t is None or t.shape[1:] != tensors[0].shape[1:] for t in tensors):
            return None
        fields[name] = torch.cat([t.to(tensors[0]) for t in tensors])
    return Conditioning(**fields, meta=dict(conds[0].meta))


def _equal_lengths(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """Repeat each context along its tokens to their common length (attention output is unchanged)."""
    target = math.lcm(*(t.shape[1] for t in tensors))
    if target > 77 * 12:
        return tensors
    return [t.repeat(1, target // t.shape[1], 1) for t in tensors]


def _batch_of(t: torch.Tensor, batch: int) -> torch.Tensor | None:
    if t.shape[0] == batch:
        return t
    if batch % t.shape[0]:
        return None
    return t.repeat_interleave(batch // t.shape[0], dim=0)
