"""Match Low-Res Input: iterative back-projection (Irani and Peleg, 1991) after super-resolution.

A diffusion upscaler invents the detail the small picture lacks, but nothing
makes its colours and low frequencies agree with that picture exactly. This
node makes them agree: it shrinks the upscaled picture to the small one's size
(box filter, the average of each block of pixels), upsamples the difference
(bicubic) and adds it back, `iterations` times. Edges the model drew stay;
drifts of colour and position go. On the shapes world it adds 1.2 dB of PSNR
to the built-in SR model's output (README).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from engine.errors import UserInputError
from engine.spec import ComputeContext, Input, NodeSpec, Output, Param, ParamType, SocketType
from engine.values import Image


def back_project(large: Any, small: Any, iterations: int) -> Any:
    """(B, 3, H, W) in [0, 1] made to average to `small` (B|1, 3, H/f, W/f) over every f x f block."""
    import torch.nn.functional as F

    factor = large.shape[-1] // small.shape[-1]
    small = small.to(large)
    for _ in range(iterations):
        error = small - F.avg_pool2d(large, factor)  # (B, 3, h, w)
        large = (large + F.interpolate(error, scale_factor=factor, mode="bicubic", align_corners=False)).clamp(0, 1)
    return large


def _check_sizes(large: Image, small: Image) -> None:
    (w, h), (sw, sh) = large.size, small.size
    if w % sw or h % sh or w // sw != h // sh or w == sw:
        raise UserInputError(f"the image is {w}x{h} and the low-res input {sw}x{sh}: the image must be the "
                             f"low-res one scaled up by a whole factor (2x, 4x, ...)")
    b, sb = large.pixels.shape[0], small.pixels.shape[0]
    if sb not in (1, b):
        raise UserInputError(f"the low-res input holds {sb} pictures and the image {b}: give one or {b}")


def _match(ctx: ComputeContext, inputs: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    large, small = inputs["image"], inputs["low_res"]
    _check_sizes(large, small)
    pixels = back_project(large.pixels.float(), small.pixels.float(), params["iterations"])
    return {"image": Image(pixels, tuple(large.seeds))}


MATCH_LOW_RES = NodeSpec(
    type="MatchLowRes", title="Match Low-Res Input", category="image",
    help="After upscaling: makes the picture average to the small input over every block (iterative "
         "back-projection), so colours and shapes stay true to it while the upscaler's edges stay.",
    compute=_match,
    inputs=(Input("image", SocketType.IMAGE, help="the upscaled picture"),
            Input("low_res", SocketType.IMAGE, help="the small picture it was made from")),
    outputs=(Output("image", SocketType.IMAGE),),
    params=(Param("iterations", ParamType.INT, 3, "how many correction passes (0 = pass the image through)",
                  min=0, max=20, inline=True),),
)

SPECS = (MATCH_LOW_RES,)
