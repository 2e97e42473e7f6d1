"""ComfyUI's classic mask nodes: SolidMask, MaskComposite, GrowMask, FeatherMask, LoadImageMask.

MASK values are float32 (B, 1, H, W) in [0, 1]; 1 = the region to regenerate.
torch is imported inside each compute.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from engine.errors import UserInputError
from engine.memory import check_fits
from engine.spec import ComputeContext, Input, NodeSpec, Output, Param, ParamType, SocketType
from nodes.image_io import read_rgba

MAX_SIDE = 16384
MAX_GROW = 1024
OPERATIONS = ("multiply", "add", "subtract", "and", "or", "xor")
CHANNELS = ("alpha", "red", "green", "blue")


def _checked(mask: Any, name: str) -> Any:
    if mask.ndim != 4 or mask.shape[1] != 1:
        raise UserInputError(f"{name} is not a mask of shape (B, 1, H, W): got {tuple(mask.shape)}")
    return mask.float()


def _solid(ctx: ComputeContext, inputs: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    import torch

    width, height = params["width"], params["height"]
    check_fits("a mask", width, height, 1, 1)
    return {"mask": torch.full((1, 1, height, width), float(params["value"]), dtype=torch.float32)}


def _combine(dest: Any, source: Any, operation: str) -> Any:
    import torch

    if operation == "multiply":
        return dest * source
    if operation == "add":
        return dest + source
    if operation == "subtract":
        return dest - source
    logic = {"and": torch.logical_and, "or": torch.logical_or, "xor": torch.logical_xor}[operation]
    return logic(dest.round().bool(), source.round().bool()).float()


def _composite(ctx: ComputeContext, inputs: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    dest = _checked(inputs["destination"], "destination")
    source = _checked(inputs["source"], "source")
    batches = {dest.shape[0], source.shape[0]}
    if len(batches - {1}) > 1:
        raise UserInputError(f"cannot combine a batch of {dest.shape[0]} masks with a batch of {source.shape[0]}")
    out = dest.expand(max(batches), -1, -1, -1).clone()
    x, y = params["x"], params["y"]
    h, w = min(source.shape[-2], dest.shape[-2] - y), min(source.shape[-1], dest.shape[-1] - x)
    if h > 0 and w > 0:
        region = out[..., y:y + h, x:x + w]
        out[..., y:y + h, x:x + w] = _combine(region, source[..., :h, :w], params["operation"])
    return {"mask": out.clamp(0.0, 1.0)}


def dilate(mask: Any, square: bool) -> Any:
    """One 3x3 grey dilation (max) step, a square or a cross neighbourhood; edges repeat outwards."""
    import torch
    import torch.nn.functional as F

    padded = F.pad(mask, (1, 1, 1, 1), mode="replicate")
    if square:
        return F.max_pool2d(padded, 3, stride=1)
    h, w = mask.shape[-2:]
    shifted = (padded[..., 1:h + 1, 0:w], padded[..., 1:h + 1, 2:w + 2],
               padded[..., 0:h, 1:w + 1], padded[..., 2:h + 2, 1:w + 1])
    out = mask
    for side in shifted:
        out = torch.maximum(out, side)
    return out


def _grow(ctx: ComputeContext, inputs: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    mask = _checked(inputs["mask"], "mask")
    expand, square = params["expand"], not params["tapered_corners"]
    out = mask if expand >= 0 else -mask  # erosion is dilation of the negative
    for _ in range(abs(expand)):
        out = dilate(out, square)
    return {"mask": (out if expand >= 0 else -out).contiguous()}


def _feather(ctx: ComputeContext, inputs: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    import torch

    mask = _checked(inputs["mask"], "mask")
    h, w = int(mask.shape[-2]), int(mask.shape[-1])
    wx, wy = torch.ones(w), torch.ones(h)
    for weights, near, far in ((wx, params["left"], params["right"]), (wy, params["top"], params["bottom"])):
        near, far = min(near, len(weights)), min(far, len(weights))
        if near:
            weights[:near] *= torch.arange(1, near + 1, dtype=torch.float32) / near
        if far:
            weights[len(weights) - far:] *= torch.arange(far, 0, -1, dtype=torch.float32) / far
    return {"mask": (mask * wy[:, None] * wx[None, :]).contiguous()}


def _load_mask(ctx: ComputeContext, inputs: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    import torch

    rgba = read_rgba(params["path"])  # (H, W, 4) uint8
    index = {"red": 0, "green": 1, "blue": 2, "alpha": 3}[params["channel"]]
    plane = torch.from_numpy(rgba[..., index].copy()).float() / 255.0
    if params["channel"] == "alpha":
        plane = 1.0 - plane  # transparent = 1, to regenerate
    return {"mask": plane[None, None].contiguous()}


_MASK_IN = Input("mask", SocketType.MASK)
_MASK_OUT = Output("mask", SocketType.MASK, "1 = regenerate")


def _side(name: str, help_text: str) -> Param:
    return Param(name, ParamType.INT, 0, help_text, min=0, max=MAX_SIDE)


SOLID_MASK = NodeSpec(
    type="SolidMask", title="Solid Mask", category="mask",
    aliases=("SolidMask", "Solid Mask"),
    help="A mask of one value everywhere (1 = regenerate all), e.g. a canvas for Mask Composite.",
    compute=_solid,
    outputs=(_MASK_OUT,),
    params=(Param("value", ParamType.FLOAT, 1.0, "0..1", min=0.0, max=1.0, step=0.01, inline=True),
            Param("width", ParamType.INT, 512, "pixels", min=1, max=MAX_SIDE, step=8, inline=True),
            Param("height", ParamType.INT, 512, "pixels", min=1, max=MAX_SIDE, step=8, inline=True)),
)

MASK_COMPOSITE = NodeSpec(
    type="MaskComposite", title="Mask Composite", category="mask",
    aliases=("MaskComposite", "Mask Composite"),
    help="Combine the source mask into the destination with its top-left corner at (x, y): multiply, add, "
         "subtract, or and/or/xor of the masks rounded to 0/1. Outside the source the destination is kept; "
         "the result is clamped to 0..1.",
    compute=_composite,
    inputs=(Input("destination", SocketType.MASK), Input("source", SocketType.MASK)),
    outputs=(_MASK_OUT,),
    params=(Param("x", ParamType.INT, 0, "left edge of the source, in pixels", min=0, max=MAX_SIDE, inline=True),
            Param("y", ParamType.INT, 0, "top edge of the source, in pixels", min=0, max=MAX_SIDE, inline=True),
            Param("operation", ParamType.CHOICE, "multiply", choices=OPERATIONS, inline=True)),
)

GROW_MASK = NodeSpec(
    type="GrowMask", title="Grow Mask", category="mask",
    aliases=("GrowMask", "Grow Mask", "Shrink Mask", "Dilate", "Erode"),
    help="Grow (expand > 0) or shrink (expand < 0) the mask one pixel per step with a 3x3 max (min) filter: "
         "a cross with tapered corners, which rounds them, or a full square, which keeps them square.",
    compute=_grow,
    inputs=(_MASK_IN,),
    outputs=(_MASK_OUT,),
    params=(Param("expand", ParamType.INT, 0, "pixels to grow; negative shrinks", min=-MAX_GROW, max=MAX_GROW,
                  inline=True),
            Param("tapered_corners", ParamType.BOOL, True, "cross-shaped steps (rounded corners)", inline=True)),
)

FEATHER_MASK = NodeSpec(
    type="FeatherMask", title="Feather Mask", category="mask",
    aliases=("FeatherMask", "Feather Mask"),
    help="Fade the mask towards each edge of the picture: over `left` pixels the left columns are "
         "multiplied by 1/left, 2/left, ... 1, and likewise from the other edges.",
    compute=_feather,
    inputs=(_MASK_IN,),
    outputs=(_MASK_OUT,),
    params=(_side("left", "pixels faded from the left edge"), _side("top", "pixels faded from the top edge"),
            _side("right", "pixels faded from the right edge"),
            _side("bottom", "pixels faded from the bottom edge")),
)

LOAD_IMAGE_MASK = NodeSpec(
    type="LoadImageMask", title="Load Image (as Mask)", category="mask",
    aliases=("LoadImageMask", "Load Image (as Mask)", "Load Mask"),
    help="Read one channel of a picture file as a mask: red, green or blue as they are (white = 1), or "
         "alpha inverted (transparent = 1, to regenerate).",
    compute=_load_mask,
    outputs=(_MASK_OUT,),
    params=(Param("path", ParamType.PATH, "", "image file", inline=True),
            Param("channel", ParamType.CHOICE, "alpha", "the channel that becomes the mask", choices=CHANNELS,
                  inline=True)),
)

SPECS = (SOLID_MASK, MASK_COMPOSITE, GROW_MASK, FEATHER_MASK, LOAD_IMAGE_MASK)
