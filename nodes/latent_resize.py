"""Resizing latents (the "hires fix": sample small, upscale the latent, sample again at low denoise).

Sizes are in picture pixels; a latent cell is 8 pixels (Stable Diffusion's and Kiln's
autoencoders). The noise mask and seeds are kept as they are (the sampler resizes the mask).
torch is imported inside each compute.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from engine.errors import UserInputError
from engine.spec import ComputeContext, Input, NodeSpec, Output, Param, ParamType, SocketType
from engine.values import Latent
from nodes.resize_ops import CROP_METHODS, SCALE_METHODS, resize

CELL = 8  # picture pixels per latent cell
MIN_SIDE = 64  # pixels: a requested side below this is raised to it (as ComfyUI does)
MAX_SIDE = 16384


def _checked_latent(latent: Latent) -> Any:
    samples = latent.samples
    if samples.ndim != 4:
        raise UserInputError(f"the latent has shape {list(samples.shape)}, expected (batch, channels, h, w)")
    return samples


def target_pixels(cells_w: int, cells_h: int, width: int, height: int) -> tuple[int, int]:
    """(width, height) in pixels for a latent of cells_w x cells_h; a 0 side keeps the aspect ratio."""
    if width == 0:
        height = max(MIN_SIDE, height)
        return max(MIN_SIDE, round(cells_w * height / cells_h)), height
    if height == 0:
        width = max(MIN_SIDE, width)
        return width, max(MIN_SIDE, round(cells_h * width / cells_w))
    return max(MIN_SIDE, width), max(MIN_SIDE, height)


def _upscale(ctx: ComputeContext, inputs: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    latent: Latent = inputs["latent"]
    samples = _checked_latent(latent)
    if params["width"] == 0 and params["height"] == 0:
        return {"latent": latent}
    cells_h, cells_w = int(samples.shape[-2]), int(samples.shape[-1])
    width, height = target_pixels(cells_w, cells_h, params["width"], params["height"])
    out = resize(samples, width // CELL, height // CELL, params["upscale_method"], params["crop"])
    return {"latent": Latent(out.contiguous(), latent.noise_mask, tuple(latent.seeds))}


def _upscale_by(ctx: ComputeContext, inputs: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    latent: Latent = inputs["latent"]
    samples = _checked_latent(latent)
    scale = float(params["scale_by"])
    cells_w, cells_h = round(samples.shape[-1] * scale), round(samples.shape[-2] * scale)
    if cells_w < 1 or cells_h < 1:
        raise UserInputError(f"scale_by {scale:g} makes the {samples.shape[-1]}x{samples.shape[-2]}-cell "
                             f"latent smaller than one cell", "scale_by")
    if max(cells_w, cells_h) * CELL > MAX_SIDE:
        raise UserInputError(f"scale_by {scale:g} makes a picture over {MAX_SIDE} pixels a side", "scale_by")
    out = resize(samples, cells_w, cells_h, params["upscale_method"])
    return {"latent": Latent(out.contiguous(), latent.noise_mask, tuple(latent.seeds))}


_METHOD = Param("upscale_method", ParamType.CHOICE, "nearest-exact",
                "nearest-exact, bilinear, area, bicubic, or bislerp (slerps each cell's channel vector, "
                "keeping latent norms)", choices=SCALE_METHODS, inline=True)
_SIDE_HELP = "target picture {} in pixels (8 per latent cell; at least 64); 0 = keep the aspect ratio"

LATENT_UPSCALE = NodeSpec(
    type="LatentUpscale", title="Upscale Latent", category="latent",
    aliases=("LatentUpscale", "Upscale Latent", "Hires fix", "Resize Latent"),
    help="Resize a latent to a picture size in pixels (a latent cell is 8 pixels): the hires fix, sampled "
         "again at denoise 0.5-0.6 afterwards. Width or height 0 follows the other by the aspect ratio; both 0 "
         "leave the latent unchanged. 'center' crop trims the latent to the new aspect ratio first, "
         "otherwise it is stretched. The noise mask and seeds pass through.",
    compute=_upscale,
    inputs=(Input("latent", SocketType.LATENT),),
    outputs=(Output("latent", SocketType.LATENT),),
    params=(_METHOD,
            Param("width", ParamType.INT, 512, _SIDE_HELP.format("width"), min=0, max=MAX_SIDE, step=8,
                  inline=True),
            Param("height", ParamType.INT, 512, _SIDE_HELP.format("height"), min=0, max=MAX_SIDE, step=8,
                  inline=True),
            Param("crop", ParamType.CHOICE, "disabled", "center: trim to the new aspect ratio instead of "
                  "stretching", choices=CROP_METHODS)),
)

LATENT_UPSCALE_BY = NodeSpec(
    type="LatentUpscaleBy", title="Upscale Latent By", category="latent",
    aliases=("LatentUpscaleBy", "Upscale Latent By", "Hires fix"),
    help="Resize a latent by a factor (each side rounded to whole cells): the hires fix, sampled again at "
         "denoise 0.5-0.6 afterwards. The noise mask and seeds pass through.",
    compute=_upscale_by,
    inputs=(Input("latent", SocketType.LATENT),),
    outputs=(Output("latent", SocketType.LATENT),),
    params=(_METHOD,
            Param("scale_by", ParamType.FLOAT, 1.5, "factor for both sides", min=0.01, max=8.0, step=0.01,
                  inline=True)),
)

SPECS = (LATENT_UPSCALE, LATENT_UPSCALE_BY)
