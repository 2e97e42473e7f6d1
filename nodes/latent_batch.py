"""Latent batches and pasting: LatentFromBatch, RepeatLatentBatch, LatentComposite.

Positions and sizes are in picture pixels, 8 per latent cell. Noise masks and seeds follow
the items they belong to. torch is imported inside each compute.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from engine.errors import UserInputError
from engine.spec import ComputeContext, Input, NodeSpec, Output, Param, ParamType, SocketType
from engine.values import Latent

CELL = 8
MAX_BATCH = 64
MAX_PIXELS = 16384


def _mask_per_item(mask: Any, batch: int) -> Any:
    """A noise mask with one item per latent item (a single mask is shared, so it stays single);
    fewer masks each cover consecutive items, as the sampler reads them."""
    if mask is None or mask.shape[0] in (1, batch):
        return mask
    if batch % mask.shape[0]:
        raise UserInputError(f"the noise mask has {mask.shape[0]} items but the latent has {batch}")
    return mask.repeat_interleave(batch // mask.shape[0], dim=0)


def _from_batch(ctx: ComputeContext, inputs: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    latent: Latent = inputs["latent"]
    batch = int(latent.samples.shape[0])
    index = params["batch_index"]
    if index >= batch:
        raise UserInputError(f"batch_index {index} is out of range: the latent holds {batch} item"
                             f"{'s' if batch != 1 else ''} (indices 0 to {batch - 1})", "batch_index")
    stop = min(batch, index + params["length"])
    mask = _mask_per_item(latent.noise_mask, batch)
    if mask is not None and mask.shape[0] == batch:
        mask = mask[index:stop].clone()
    seeds = tuple(latent.seeds[index:stop]) if len(latent.seeds) == batch else tuple(latent.seeds)
    return {"latent": Latent(latent.samples[index:stop].clone(), mask, seeds)}


def _repeat(ctx: ComputeContext, inputs: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    latent: Latent = inputs["latent"]
    amount = params["amount"]
    samples = latent.samples
    if samples.shape[0] * amount > MAX_BATCH * MAX_BATCH:
        raise UserInputError(f"{samples.shape[0]} items repeated {amount} times is too large a batch", "amount")
    mask = latent.noise_mask
    if mask is not None and mask.shape[0] > 1:
        mask = _mask_per_item(mask, samples.shape[0])
        mask = mask.repeat(amount, *([1] * (mask.ndim - 1)))
    seeds = tuple(latent.seeds) * amount
    return {"latent": Latent(samples.repeat(amount, 1, 1, 1), mask, seeds)}


def feather_ramp(length: int, feather: int, start: bool, end: bool) -> Any:
    """(length,) weights: 1, times a ramp 1/feather, 2/feather, ... 1 from each edge that blends."""
    import torch

    weights = torch.ones(length)
    n = min(feather, length)
    if n <= 0:
        return weights
    ramp = torch.arange(1, n + 1, dtype=torch.float32) / feather
    if start:
        weights[:n] *= ramp
    if end:
        weights[length - n:] *= ramp.flip(0)
    return weights


def _composite(ctx: ComputeContext, inputs: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    dest: Latent = inputs["destination"]
    source = inputs["source"].samples
    to = dest.samples
    _check_composite(to, source, params)
    x, y, feather = params["x"] // CELL, params["y"] // CELL, params["feather"] // CELL
    h, w = min(source.shape[-2], to.shape[-2] - y), min(source.shape[-1], to.shape[-1] - x)
    piece = source[..., :h, :w]
    out = to.clone()
    if feather == 0:
        out[..., y:y + h, x:x + w] = piece
    else:
        wy = feather_ramp(h, feather, y != 0, y + h < to.shape[-2])
        wx = feather_ramp(w, feather, x != 0, x + w < to.shape[-1])
        weight = (wy[:, None] * wx[None, :]).to(out.dtype)
        region = out[..., y:y + h, x:x + w]
        out[..., y:y + h, x:x + w] = piece * weight + region * (1 - weight)
    return {"latent": Latent(out, dest.noise_mask, tuple(dest.seeds))}


def _check_composite(to: Any, source: Any, params: Mapping[str, Any]) -> None:
    if to.ndim != 4 or source.ndim != 4 or to.shape[1] != source.shape[1]:
        raise UserInputError(f"the latents have shapes {list(to.shape)} and {list(source.shape)}: "
                             f"they must have the same channels (made by the same model)")
    if source.shape[0] not in (1, to.shape[0]):
        raise UserInputError(f"the source holds {source.shape[0]} items but the destination {to.shape[0]}: "
                             f"use one source item or as many as the destination")
    for name, side in (("x", -1), ("y", -2)):
        pixels = to.shape[side] * CELL
        if params[name] >= pixels:
            size = "width" if name == "x" else "height"
            raise UserInputError(f"{name} {params[name]} is outside the destination, whose {size} is "
                                 f"{pixels} pixels", name)


_LATENT_IN = Input("latent", SocketType.LATENT)
_LATENT_OUT = Output("latent", SocketType.LATENT)

LATENT_FROM_BATCH = NodeSpec(
    type="LatentFromBatch", title="Latent From Batch", category="latent",
    aliases=("LatentFromBatch", "Latent From Batch", "Pick from batch"),
    help="Take `length` items of a latent batch starting at `batch_index` (fewer when the batch ends "
         "first), with their noise masks and seeds.",
    compute=_from_batch,
    inputs=(_LATENT_IN,),
    outputs=(_LATENT_OUT,),
    params=(Param("batch_index", ParamType.INT, 0, "the first item, counting from 0", min=0,
                  max=MAX_BATCH - 1, inline=True),
            Param("length", ParamType.INT, 1, "how many items", min=1, max=MAX_BATCH, inline=True)),
)

REPEAT_LATENT_BATCH = NodeSpec(
    type="RepeatLatentBatch", title="Repeat Latent Batch", category="latent",
    aliases=("RepeatLatentBatch", "Repeat Latent Batch"),
    help="Repeat the whole latent batch `amount` times (e.g. one encoded picture into several variations "
         "with img2img); noise masks and seeds repeat with it.",
    compute=_repeat,
    inputs=(_LATENT_IN,),
    outputs=(_LATENT_OUT,),
    params=(Param("amount", ParamType.INT, 1, "copies of the batch", min=1, max=MAX_BATCH, inline=True),),
)

LATENT_COMPOSITE = NodeSpec(
    type="LatentComposite", title="Latent Composite", category="latent",
    aliases=("LatentComposite", "Latent Composite", "Paste latent"),
    help="Paste the source latent onto the destination with its top-left corner at (x, y) pixels, "
         "cut off where it overhangs. With feather, the paste fades in linearly over that many pixels "
         "from each of its edges that lies inside the destination. Sizes are in pixels, 8 per latent cell.",
    compute=_composite,
    inputs=(Input("destination", SocketType.LATENT, help="the latent pasted onto (ComfyUI: samples_to)"),
            Input("source", SocketType.LATENT, help="the latent pasted (ComfyUI: samples_from)")),
    outputs=(_LATENT_OUT,),
    params=(Param("x", ParamType.INT, 0, "left edge of the paste, in pixels", min=0, max=MAX_PIXELS, step=8,
                  multiple=CELL, inline=True),
            Param("y", ParamType.INT, 0, "top edge of the paste, in pixels", min=0, max=MAX_PIXELS, step=8,
                  multiple=CELL, inline=True),
            Param("feather", ParamType.INT, 0, "pixels over which the paste fades in at its inner edges",
                  min=0, max=MAX_PIXELS, step=8, multiple=CELL)),
)

SPECS = (LATENT_FROM_BATCH, REPEAT_LATENT_BATCH, LATENT_COMPOSITE)
