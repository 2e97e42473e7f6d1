"""Image and mask sizing for the autoencoder.

The autoencoder downsamples by 8 (or another factor), so images must have sides that
are multiples of it: CropToMultiple trims, PadToMultiple extends (the new border is
marked 1 in the mask, so inpainting fills it). Resizing is ImageScale (image_basic);
pasting through a mask is CompositeMasked (latent_nodes).
torch is imported inside each compute.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from engine.errors import UserInputError
from engine.spec import ComputeContext, Input, NodeSpec, Output, Param, ParamType, SocketType
from engine.values import Image


def _offsets(extra: int, anchor: str) -> tuple[int, int]:
    """(before, after) split of `extra` pixels for an anchor ("center" or "top-left")."""
    before = extra // 2 if anchor == "center" else 0
    return before, extra - before


def _input_mask(inputs: Mapping[str, Any], image: Image) -> Any:
    """The optional MASK input, checked against the image size; zeros when absent."""
    import torch

    w, h = image.size
    mask = inputs.get("mask")
    if mask is None:
        return torch.zeros((1, 1, h, w), dtype=torch.float32)
    if mask.ndim != 4 or mask.shape[1] != 1 or tuple(mask.shape[-2:]) != (h, w):
        raise UserInputError(f"the mask {tuple(mask.shape)} does not match the image's {w}x{h}; "
                             f"both are cut or padded the same way, so they must be the same size")
    return mask.float()


def _crop(ctx: ComputeContext, inputs: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    image: Image = inputs["image"]
    mask = _input_mask(inputs, image)
    m = params["multiple"]
    w, h = image.size
    new_w, new_h = w // m * m, h // m * m
    if new_w == 0 or new_h == 0:
        raise UserInputError(f"a {w}x{h} image is smaller than one block of {m} pixels", "multiple")
    left, _ = _offsets(w - new_w, params["anchor"])
    top, _ = _offsets(h - new_h, params["anchor"])
    window = (..., slice(top, top + new_h), slice(left, left + new_w))
    return {"image": Image(image.pixels[window].contiguous(), image.seeds), "mask": mask[window].contiguous()}


def _pad(ctx: ComputeContext, inputs: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    import torch.nn.functional as F

    image: Image = inputs["image"]
    mask = _input_mask(inputs, image)
    m = params["multiple"]
    w, h = image.size
    left, right = _offsets(-w % m, params["anchor"])
    top, bottom = _offsets(-h % m, params["anchor"])
    pads = (left, right, top, bottom)
    mode = params["mode"]
    if mode == "reflect" and (max(left, right) >= w or max(top, bottom) >= h):
        raise UserInputError(f"a {w}x{h} image is too small to reflect into its border; use 'edge'", "mode")
    if mode == "black":
        pixels = F.pad(image.pixels, pads, mode="constant", value=0.0)
    else:
        pixels = F.pad(image.pixels, pads, mode="replicate" if mode == "edge" else "reflect")
    return {"image": Image(pixels.contiguous(), image.seeds),
            "mask": F.pad(mask, pads, mode="constant", value=1.0).contiguous()}


_MULTIPLE = Param("multiple", ParamType.INT, 8, "sides become multiples of this (8 for most autoencoders)",
                  min=1, max=512, inline=True)
_ANCHOR = Param("anchor", ParamType.CHOICE, "center", "where the picture stays",
                choices=("center", "top-left"))
_IMAGE_MASK_IN = (Input("image", SocketType.IMAGE),
                  Input("mask", SocketType.MASK, optional=True, help="cut or padded along with the image"))

CROP_TO_MULTIPLE = NodeSpec(
    type="CropToMultiple", title="Crop To Multiple", category="image",
    aliases=("Crop Image",),
    help="Trim the image (and mask) so that width and height are multiples of `multiple`.",
    compute=_crop,
    inputs=_IMAGE_MASK_IN,
    outputs=(Output("image", SocketType.IMAGE),
             Output("mask", SocketType.MASK, "zeros without a mask input")),
    params=(_MULTIPLE, _ANCHOR),
)

PAD_TO_MULTIPLE = NodeSpec(
    type="PadToMultiple", title="Pad To Multiple", category="image",
    aliases=("Pad Image",),
    help="Extend the image (and mask) so that width and height are multiples of `multiple`. "
         "The new border is 1 in the mask, so inpainting can fill it.",
    compute=_pad,
    inputs=_IMAGE_MASK_IN,
    outputs=(Output("image", SocketType.IMAGE), Output("mask", SocketType.MASK, "1 on the added border")),
    params=(_MULTIPLE, _ANCHOR,
            Param("mode", ParamType.CHOICE, "edge", "how the border is filled",
                  choices=("edge", "reflect", "black"))),
)

SPECS = (CROP_TO_MULTIPLE, PAD_TO_MULTIPLE)
