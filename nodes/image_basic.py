"""Model-free image nodes: a solid colour, invert, blend, scale.

IMAGE values are engine.values.Image: float32 (B, 3, H, W) in [0, 1] plus seeds.
torch is imported inside each compute.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from engine.errors import UserInputError, quote
from engine.memory import check_fits
from engine.spec import ComputeContext, Input, NodeSpec, Output, Param, ParamType, SocketType
from engine.values import Image
from nodes.resize_ops import CROP_METHODS, center_crop_to_aspect

MAX_SIDE = 8192


def parse_color(text: str, param: str = "color") -> tuple[float, float, float]:
    """'#rrggbb' or '#rgb' -> RGB floats in [0, 1]."""
    digits = text.strip().lstrip("#")
    if len(digits) == 3:
        digits = "".join(c * 2 for c in digits)
    try:
        if len(digits) != 6:
            raise ValueError
        return tuple(int(digits[i:i + 2], 16) / 255.0 for i in (0, 2, 4))  # type: ignore[return-value]
    except ValueError:
        raise UserInputError(f"{quote(text)} is not a colour like #ff8800", param) from None


def _solid(ctx: ComputeContext, inputs: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    import torch

    b, h, w = params["batch_size"], params["height"], params["width"]
    check_fits("a picture", w, h, b, 3)
    rgb = torch.tensor(parse_color(params["color"]), dtype=torch.float32)
    pixels = rgb.view(1, 3, 1, 1).expand(b, 3, h, w).contiguous()  # (B, 3, H, W)
    return {"image": Image(pixels)}


def _invert(ctx: ComputeContext, inputs: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    image: Image = inputs["image"]
    return {"image": Image(1.0 - image.pixels, image.seeds)}


def _resize(pixels: Any, width: int, height: int, method: str) -> Any:
    import torch.nn.functional as F

    if method in ("nearest", "nearest-exact"):
        return F.interpolate(pixels, size=(height, width), mode="nearest-exact")
    if method == "area":
        return F.interpolate(pixels, size=(height, width), mode="area")
    if method in ("bilinear", "lanczos"):
        from nodes.resize_ops import resize

        return resize(pixels, width, height, method).clamp(0.0, 1.0)
    out = F.interpolate(pixels, size=(height, width), mode="bicubic", align_corners=False, antialias=True)
    return out.clamp(0.0, 1.0)


def _blend(ctx: ComputeContext, inputs: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    a: Image = inputs["a"]
    b: Image = inputs["b"]
    pb = b.pixels
    if pb.shape[-2:] != a.pixels.shape[-2:]:
        pb = _resize(pb, a.size[0], a.size[1], "bicubic")
    if pb.shape[0] != a.pixels.shape[0] and 1 not in (pb.shape[0], a.pixels.shape[0]):
        raise UserInputError(f"cannot blend a batch of {a.pixels.shape[0]} with a batch of {pb.shape[0]}")
    f = float(params["factor"])
    return {"image": Image(a.pixels * (1.0 - f) + pb * f, a.seeds or b.seeds)}


def scale_size(size: tuple[int, int], factor: float, width: int, height: int) -> tuple[int, int]:
    """(width, height) for ImageScale: both given; one given, the other by the aspect ratio; or by factor."""
    w, h = size
    if width and height:
        return width, height
    if width:
        return width, max(1, round(h * width / w))
    if height:
        return max(1, round(w * height / h)), height
    return max(1, round(w * factor)), max(1, round(h * factor))


def _scale(ctx: ComputeContext, inputs: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    image: Image = inputs["image"]
    width, height = scale_size(image.size, float(params["factor"]), params["width"], params["height"])
    if width > MAX_SIDE or height > MAX_SIDE:
        given = [name for name in ("width", "height") if params[name]]
        raise UserInputError(f"{width}x{height} is larger than {MAX_SIDE} pixels a side",
                             given[0] if len(given) == 1 else "width" if given else "factor")
    pixels = image.pixels
    if params["crop"] == "center":
        pixels = center_crop_to_aspect(pixels, width, height)
    return {"image": Image(_resize(pixels, width, height, params["method"]), image.seeds)}


SOLID_IMAGE = NodeSpec(
    type="SolidImage", title="Solid Image", category="image",
    aliases=("Empty Image", "EmptyImage"),
    help="An image of one colour.",
    compute=_solid,
    outputs=(Output("image", SocketType.IMAGE),),
    params=(
        Param("width", ParamType.INT, 128, "pixels", min=1, max=MAX_SIDE, step=8, inline=True),
        Param("height", ParamType.INT, 128, "pixels", min=1, max=MAX_SIDE, step=8, inline=True),
        Param("color", ParamType.STRING, "#808080", "hex colour, e.g. #ff8800", inline=True),
        Param("batch_size", ParamType.INT, 1, "number of images", min=1, max=64),
    ),
)

IMAGE_INVERT = NodeSpec(
    type="ImageInvert", title="Invert Image", category="image",
    help="1 - pixel value in every channel.",
    compute=_invert,
    inputs=(Input("image", SocketType.IMAGE),),
    outputs=(Output("image", SocketType.IMAGE),),
)

IMAGE_BLEND = NodeSpec(
    type="ImageBlend", title="Blend Images", category="image",
    aliases=("Image Blend",),
    help="Mix two images: a * (1 - factor) + b * factor. b is resized to a's size.",
    compute=_blend,
    inputs=(Input("a", SocketType.IMAGE), Input("b", SocketType.IMAGE)),
    outputs=(Output("image", SocketType.IMAGE),),
    params=(Param("factor", ParamType.FLOAT, 0.5, "0 = a, 1 = b", min=0.0, max=1.0, step=0.05, inline=True),),
)

IMAGE_SCALE = NodeSpec(
    type="ImageScale", title="Scale Image", category="image",
    aliases=("Upscale Image", "Upscale Image By", "ImageScaleBy", "Resize Image", "Hires fix"),
    help="Resize to width x height; with one of them 0, the other follows the aspect ratio; with both 0, "
         "by the factor. 'center' crop trims the picture to the new aspect ratio first instead of "
         "stretching it. bicubic is antialiased; lanczos is PIL's filter.",
    version=2,
    compute=_scale,
    inputs=(Input("image", SocketType.IMAGE),),
    outputs=(Output("image", SocketType.IMAGE),),
    params=(
        Param("factor", ParamType.FLOAT, 2.0, "scale when width/height are 0", min=0.01, max=16.0,
              step=0.25, inline=True),
        Param("width", ParamType.INT, 0, "target width (0 = from the height's aspect, or the factor)",
              min=0, max=MAX_SIDE),
        Param("height", ParamType.INT, 0, "target height (0 = from the width's aspect, or the factor)",
              min=0, max=MAX_SIDE),
        Param("method", ParamType.CHOICE, "bicubic", "resampling filter (nearest is nearest-exact)",
              choices=("bicubic", "area", "nearest", "nearest-exact", "bilinear", "lanczos")),
        Param("crop", ParamType.CHOICE, "disabled", "center: trim to the new aspect ratio instead of "
              "stretching", choices=CROP_METHODS),
    ),
)

SPECS = (SOLID_IMAGE, IMAGE_INVERT, IMAGE_BLEND, IMAGE_SCALE)
