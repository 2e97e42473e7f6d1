"""Masks: the MaskPainter node (a mask the artist paints, saved in the graph) and mask utilities.

MASK values are float32 tensors (B, 1, H, W) in [0, 1]; 1 = the region to regenerate.
The painted mask is stored in the `mask` param as base64 PNG text at the image's
resolution (engine.drawing), so a shared graph carries the drawing.
MaskPainter order of operations: source (path, else painted, else empty) -> fit to
the image -> invert -> grow/shrink -> feather.
torch, numpy and OpenCV are imported inside each compute.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from engine.errors import KilnError, UserInputError
from engine.spec import ComputeContext, Input, NodeSpec, Output, Param, ParamType, SocketType
from nodes.image_basic import MAX_SIDE, parse_color

log = logging.getLogger(__name__)

_GROW_LIMIT = 256


# --- shared helpers ------------------------------------------------------------


def fit_to_size(array: Any, size: tuple[int, int], param: str, what: str = "mask",
                labels: bool = False) -> Any:
    """Resize an (H, W) drawing to size (W, H) when only its scale differs; refuse another shape."""
    from engine import drawing

    height, width = array.shape[:2]
    if (width, height) == tuple(size):
        return array
    if not drawing.same_aspect((width, height), size):
        raise UserInputError(f"the {what} is {width}x{height} but the image is {size[0]}x{size[1]}, "
                             f"a different shape; repaint the {what} or crop the image to match", param)
    log.info("%s %dx%d resized to the image's %dx%d", what, width, height, size[0], size[1])
    resize = drawing.resize_labels if labels else drawing.resize_mask
    return resize(array, size[0], size[1])


def mask_to_numpy(mask: Any) -> Any:
    """(B, 1, H, W) tensor -> float32 numpy (B, H, W)."""
    return mask.detach().float().cpu().numpy()[:, 0]


def numpy_to_mask(array: Any) -> Any:
    """float32 numpy (B, H, W) or (H, W) -> (B, 1, H, W) tensor in [0, 1]."""
    import numpy as np
    import torch

    batch = array if array.ndim == 3 else array[None]
    return torch.from_numpy(np.clip(batch, 0.0, 1.0).astype(np.float32)).unsqueeze(1).contiguous()


def _check_mask(mask: Any, name: str) -> None:
    if mask.ndim != 4 or mask.shape[1] != 1:
        raise UserInputError(f"{name} is not a mask of shape (B, 1, H, W): got {tuple(mask.shape)}")


def _edges(masks: Any, grow_px: int, feather_px: int) -> Any:
    """grow/shrink then feather each (H, W) float32 mask of a (B, H, W) batch."""
    import numpy as np

    from engine import drawing

    out = []
    for item in masks:
        item = drawing.grow(np.ascontiguousarray(item, dtype=np.float32), grow_px)
        out.append(drawing.feather(item, feather_px))
    return np.stack(out)


# --- MaskPainter ----------------------------------------------------------------


def _painter(ctx: ComputeContext, inputs: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    import numpy as np

    image = inputs.get("image")
    size = image.size if image is not None else (params["width"], params["height"])
    painted, param = _source_mask(params)
    if painted is None:
        painted = np.zeros((size[1], size[0]), dtype=np.uint8)
    painted = fit_to_size(painted, size, param)
    mask = painted.astype(np.float32) / 255.0
    if params["invert"]:
        mask = 1.0 - mask
    return {"mask": numpy_to_mask(_edges(mask[None], params["grow"], params["feather"]))}


def _source_mask(params: Mapping[str, Any]) -> tuple[Any, str]:
    """(uint8 (H, W) or None, param it came from): the file when `path` is set, else the painting."""
    from engine import drawing

    try:
        if params["path"]:
            return drawing.read_mask_file(params["path"]), "path"
        if params["mask"]:
            return drawing.decode_png_b64(params["mask"], "painted mask"), "mask"
    except KilnError as exc:
        raise UserInputError(str(exc), "path" if params["path"] else "mask") from None
    return None, "mask"


# --- utilities ---------------------------------------------------------------------


def _from_color(ctx: ComputeContext, inputs: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    import torch

    pixels = inputs["image"].pixels  # (B, 3, H, W)
    rgb = torch.tensor(parse_color(params["color"]), dtype=torch.float32).view(1, 3, 1, 1)
    # compare in 0..255 steps so that tolerance 0 means "exactly this 8-bit colour"
    difference = (torch.round(pixels.float() * 255) - torch.round(rgb * 255)).abs().amax(dim=1, keepdim=True)
    return {"mask": (difference <= params["tolerance"]).float()}


_LUMA = (0.299, 0.587, 0.114)
_CHANNELS = {"luma": _LUMA, "red": (1.0, 0.0, 0.0), "green": (0.0, 1.0, 0.0), "blue": (0.0, 0.0, 1.0)}


def _threshold(ctx: ComputeContext, inputs: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    import torch

    pixels = inputs["image"].pixels.float()
    weights = torch.tensor(_CHANNELS[params["channel"]], dtype=torch.float32).view(1, 3, 1, 1)
    value = (pixels * weights).sum(dim=1, keepdim=True)  # (B, 1, H, W)
    return {"mask": (value >= params["threshold"]).float()}


def _combine(ctx: ComputeContext, inputs: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    import torch

    a, b = inputs["a"].float(), inputs["b"].float()
    _check_mask(a, "mask a")
    _check_mask(b, "mask b")
    b = _match_mask(b, a)
    if a.shape[0] != b.shape[0] and 1 not in (a.shape[0], b.shape[0]):
        raise UserInputError(f"cannot combine a batch of {a.shape[0]} masks with a batch of {b.shape[0]}")
    operation = params["operation"]
    if operation == "union":
        out = torch.maximum(a, b)
    elif operation == "intersect":
        out = torch.minimum(a, b)
    elif operation == "subtract":
        out = (a - b).clamp(0.0, 1.0)
    else:  # difference: one or the other, not both
        out = (a - b).abs()
    return {"mask": out.contiguous()}


def _match_mask(mask: Any, like: Any) -> Any:
    """mask resized (bilinear) to like's size when only the scale differs."""
    import torch.nn.functional as F

    from engine import drawing

    (h, w), (th, tw) = mask.shape[-2:], like.shape[-2:]
    if (h, w) == (th, tw):
        return mask
    if not drawing.same_aspect((w, h), (tw, th)):
        raise UserInputError(f"mask b is {w}x{h} but mask a is {tw}x{th}, a different shape")
    return F.interpolate(mask, size=(th, tw), mode="bilinear", align_corners=False).clamp(0.0, 1.0)


def _grow_feather(ctx: ComputeContext, inputs: Mapping[str, Any],
                  params: Mapping[str, Any]) -> dict[str, Any]:
    mask = inputs["mask"]
    _check_mask(mask, "mask")
    return {"mask": numpy_to_mask(_edges(mask_to_numpy(mask), params["grow"], params["feather"]))}


def _invert(ctx: ComputeContext, inputs: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    return {"mask": (1.0 - inputs["mask"].float()).contiguous()}


def _to_image(ctx: ComputeContext, inputs: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    from engine.values import Image

    mask = inputs["mask"].float()
    _check_mask(mask, "mask")
    return {"image": Image(mask.expand(-1, 3, -1, -1).contiguous())}


_GROW = Param("grow", ParamType.INT, 0, "pixels to grow the region (negative shrinks)",
              min=-_GROW_LIMIT, max=_GROW_LIMIT, inline=True)
_FEATHER = Param("feather", ParamType.INT, 0, "soften the edge over this many pixels",
                 min=0, max=_GROW_LIMIT, inline=True)
_MASK_OUT = Output("mask", SocketType.MASK, "1 = regenerate")

MASK_PAINTER = NodeSpec(
    type="MaskPainter", title="Mask Painter", category="mask",
    aliases=("Mask Editor", "Inpaint sketch"),
    help="Paint the region to regenerate (white) over the input image or a blank canvas; "
         "double-click to open the painter. The painting is saved in the graph. A mask file "
         "(white = regenerate, or transparency) replaces the painting when `path` is set.",
    compute=_painter,
    editor="mask", paints_over="image",
    inputs=(Input("image", SocketType.IMAGE, optional=True,
                  help="the picture to paint over; sets the size"),),
    outputs=(_MASK_OUT,),
    params=(
        Param("mask", ParamType.JSON, "", "the painted mask (base64 PNG); empty = nothing painted",
              drawing="mask"),
        Param("path", ParamType.PATH, "", "optional mask file used instead of the painting"),
        Param("width", ParamType.INT, 128, "canvas width without an image", min=1, max=MAX_SIDE, step=8),
        Param("height", ParamType.INT, 128, "canvas height without an image", min=1, max=MAX_SIDE, step=8),
        Param("invert", ParamType.BOOL, False, "regenerate everything except the painted region",
              inline=True),
        _GROW,
        _FEATHER,
    ),
)

MASK_FROM_COLOR = NodeSpec(
    type="MaskFromColor", title="Mask From Colour", category="mask",
    aliases=("Image Color To Mask", "ImageColorToMask", "Mask From Color"),
    help="1 where a pixel is within `tolerance` (0..255 per channel) of the colour.",
    compute=_from_color,
    inputs=(Input("image", SocketType.IMAGE),),
    outputs=(_MASK_OUT,),
    params=(Param("color", ParamType.STRING, "#ffffff", "hex colour, e.g. #ff8800", inline=True),
            Param("tolerance", ParamType.INT, 8, "largest difference per channel (0..255)", min=0, max=255,
                  inline=True)),
)

MASK_THRESHOLD = NodeSpec(
    type="MaskThreshold", title="Mask Threshold", category="mask",
    aliases=("ThresholdMask", "Threshold Mask"),
    help="1 where the chosen channel (or luma) is at least the threshold.",
    compute=_threshold,
    inputs=(Input("image", SocketType.IMAGE),),
    outputs=(_MASK_OUT,),
    params=(Param("channel", ParamType.CHOICE, "luma", "what to compare", choices=tuple(_CHANNELS),
                  inline=True),
            Param("threshold", ParamType.FLOAT, 0.5, "0..1", min=0.0, max=1.0, step=0.05, inline=True)),
)

MASK_COMBINE = NodeSpec(
    type="MaskCombine", title="Combine Masks", category="mask",
    aliases=("Merge Masks", "Mask union"),
    help="union (either), intersect (both), subtract (a but not b) or difference (one, not both). "
         "b is resized to a when only the scale differs.",
    compute=_combine,
    inputs=(Input("a", SocketType.MASK), Input("b", SocketType.MASK)),
    outputs=(_MASK_OUT,),
    params=(Param("operation", ParamType.CHOICE, "union",
                  choices=("union", "intersect", "subtract", "difference"), inline=True),),
)

MASK_GROW_FEATHER = NodeSpec(
    type="MaskGrowFeather", title="Grow / Feather Mask", category="mask",
    aliases=("Expand Mask", "Soften Mask"),
    help="Grow (or shrink) the region by a round kernel, then soften its edge.",
    compute=_grow_feather,
    inputs=(Input("mask", SocketType.MASK),),
    outputs=(_MASK_OUT,),
    params=(_GROW, _FEATHER),
)

INVERT_MASK = NodeSpec(
    type="InvertMask", title="Invert Mask", category="mask",
    help="1 - mask: regenerate what was kept and keep what was regenerated.",
    compute=_invert,
    inputs=(Input("mask", SocketType.MASK),),
    outputs=(_MASK_OUT,),
)

MASK_TO_IMAGE = NodeSpec(
    type="MaskToImage", title="Mask To Image", category="mask",
    aliases=("Convert Mask to Image",),
    help="Show a mask as a grey image (white = regenerate), e.g. to preview it.",
    compute=_to_image,
    inputs=(Input("mask", SocketType.MASK),),
    outputs=(Output("image", SocketType.IMAGE),),
)

SPECS = (MASK_PAINTER, MASK_FROM_COLOR, MASK_THRESHOLD, MASK_COMBINE, MASK_GROW_FEATHER, INVERT_MASK,
         MASK_TO_IMAGE)
