"""ComfyUI's ImagePadForOutpaint and ImageCompositeMasked.

IMAGE values are engine.values.Image, float32 (B, 3, H, W); MASK values (B, 1, H, W), 1 = regenerate.
torch is imported inside each compute.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from engine.errors import UserInputError
from engine.memory import check_fits
from engine.spec import ComputeContext, Input, NodeSpec, Output, Param, ParamType, SocketType
from engine.values import Image

MAX_SIDE = 16384
GREY = 0.5


def outpaint_feather(height: int, width: int, sides: tuple[bool, bool, bool, bool], feathering: int) -> Any:
    """(H, W) mask over the original picture: 0 inside, rising as ((f - d) / f)^2 within f pixels of each
    padded side (d: distance from the top or left edge, or rows/columns to the bottom or right edge)."""
    import torch

    if feathering <= 0 or feathering * 2 >= height or feathering * 2 >= width:
        return torch.zeros(height, width)
    top, left, bottom, right = sides
    rows = torch.arange(height, dtype=torch.float32)[:, None].expand(height, width)
    cols = torch.arange(width, dtype=torch.float32)[None, :].expand(height, width)
    far_h, far_w = torch.full_like(rows, float(height)), torch.full_like(cols, float(width))
    distances = (rows if top else far_h, height - rows if bottom else far_h,
                 cols if left else far_w, width - cols if right else far_w)
    d = torch.stack(distances).amin(dim=0)
    v = ((feathering - d) / feathering).clamp(min=0)
    return v * v


def _pad(ctx: ComputeContext, inputs: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    import torch

    image: Image = inputs["image"]
    b, c, h, w = image.pixels.shape
    left, top, right, bottom = (params[k] for k in ("left", "top", "right", "bottom"))
    new_h, new_w = h + top + bottom, w + left + right
    if max(new_h, new_w) > MAX_SIDE:
        raise UserInputError(f"the padded picture would be {new_w}x{new_h}, over {MAX_SIDE} pixels a side")
    check_fits("a padded picture", new_w, new_h, b, c, param=None)
    pixels = torch.full((b, c, new_h, new_w), GREY, dtype=torch.float32)
    pixels[..., top:top + h, left:left + w] = image.pixels.float()
    mask = torch.ones((1, 1, new_h, new_w), dtype=torch.float32)
    sides = (top > 0, left > 0, bottom > 0, right > 0)
    mask[0, 0, top:top + h, left:left + w] = outpaint_feather(h, w, sides, params["feathering"])
    return {"image": Image(pixels, tuple(image.seeds)), "mask": mask}


def _batch_to(tensor: Any, batch: int) -> Any:
    """Repeat (or cut) a batch to `batch` items, as ComfyUI does for a composite's source and mask."""
    if tensor.shape[0] == batch:
        return tensor
    repeats = -(-batch // tensor.shape[0])
    return tensor.repeat(repeats, *([1] * (tensor.ndim - 1)))[:batch]


def _composite(ctx: ComputeContext, inputs: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    import torch
    import torch.nn.functional as F

    dest: Image = inputs["destination"]
    out = dest.pixels.float().clone()
    source = inputs["source"].pixels.float()
    if params["resize_source"]:
        source = F.interpolate(source, size=out.shape[-2:], mode="bilinear", align_corners=False)
    source = _batch_to(source, out.shape[0])
    mask = inputs.get("mask")
    if mask is None:
        mask = torch.ones_like(source[:, :1])
    else:
        if mask.ndim != 4 or mask.shape[1] != 1:
            raise UserInputError(f"the mask is not of shape (B, 1, H, W): got {tuple(mask.shape)}")
        mask = F.interpolate(mask.float(), size=source.shape[-2:], mode="bilinear", align_corners=False)
        mask = _batch_to(mask, source.shape[0])
    x, y = params["x"], params["y"]
    h, w = min(source.shape[-2], out.shape[-2] - y), min(source.shape[-1], out.shape[-1] - x)
    if h > 0 and w > 0:
        weight = mask[..., :h, :w]
        region = out[..., y:y + h, x:x + w]
        out[..., y:y + h, x:x + w] = source[..., :h, :w] * weight + region * (1 - weight)
    return {"image": Image(out, tuple(dest.seeds))}


def _side(name: str) -> Param:
    return Param(name, ParamType.INT, 0, f"pixels added on the {name}", min=0, max=MAX_SIDE, step=8, inline=True)


IMAGE_PAD_FOR_OUTPAINT = NodeSpec(
    type="ImagePadForOutpaint", title="Pad Image for Outpainting", category="image",
    aliases=("ImagePadForOutpaint", "Pad Image for Outpainting", "Outpaint", "Extend canvas"),
    help="Extend the picture with mid-grey borders and make the mask to fill them: 1 on the new borders, "
         "0 on the picture except within `feathering` pixels of a padded side, where it rises as the square "
         "of the closeness (no feathering when it is half the picture's width or height or more).",
    compute=_pad,
    inputs=(Input("image", SocketType.IMAGE),),
    outputs=(Output("image", SocketType.IMAGE), Output("mask", SocketType.MASK, "1 = the new borders")),
    params=(_side("left"), _side("top"), _side("right"), _side("bottom"),
            Param("feathering", ParamType.INT, 40, "pixels of the picture, along padded sides, that are "
                  "partly regenerated too", min=0, max=MAX_SIDE)),
)

IMAGE_COMPOSITE_MASKED = NodeSpec(
    type="ImageCompositeMasked", title="Image Composite Masked", category="image",
    aliases=("ImageCompositeMasked", "Image Composite Masked", "Paste image"),
    help="Paste the source onto the destination with its top-left corner at (x, y), cut off where it "
         "overhangs, through the optional mask (resized to the source; 1 = take the source). "
         "resize_source stretches the source to the destination's size first.",
    compute=_composite,
    inputs=(Input("destination", SocketType.IMAGE), Input("source", SocketType.IMAGE),
            Input("mask", SocketType.MASK, optional=True, help="1 = take the source; default all 1")),
    outputs=(Output("image", SocketType.IMAGE),),
    params=(Param("x", ParamType.INT, 0, "left edge of the source, in pixels", min=0, max=MAX_SIDE, inline=True),
            Param("y", ParamType.INT, 0, "top edge of the source, in pixels", min=0, max=MAX_SIDE, inline=True),
            Param("resize_source", ParamType.BOOL, False, "stretch the source to the destination's size")),
)

SPECS = (IMAGE_PAD_FOR_OUTPAINT, IMAGE_COMPOSITE_MASKED)
