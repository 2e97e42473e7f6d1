"""AutoencoderEncodeForInpaint: encode a picture with its hole greyed out and attach the hole as the
latent's noise mask (ComfyUI's "VAE Encode (for Inpainting)", for inpainting models and plain ones).

torch is imported inside the compute.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from engine.spec import ComputeContext, Input, NodeSpec, Output, Param, ParamType, SocketType
from engine.values import Image, Latent
from nodes.autoencoder_nodes import _encode, _fit_to_factor
from nodes.latent_nodes import _pixel_mask

GREY = 0.5
MAX_GROW = 64


def grow_square(mask: Any, size: int) -> Any:
    """A 0/1 mask grown by a size x size square (for an even size, one pixel more down and right)."""
    import torch.nn.functional as F

    if size <= 0:
        return mask
    before = size // 2  # ceil((size - 1) / 2)
    after = size - 1 - before
    padded = F.pad(mask, (before, after, before, after))
    return F.max_pool2d(padded, size, stride=1)


def _encode_for_inpaint(ctx: ComputeContext, inputs: Mapping[str, Any],
                        params: Mapping[str, Any]) -> dict[str, Any]:
    ae, image = inputs["autoencoder"], inputs["image"]
    mask = _pixel_mask(inputs["mask"], image)  # (B|1, 1, H, W), resized when only the scale differs
    factor = ae.capabilities.factor
    pixels = _fit_to_factor(image.pixels.float(), factor)
    hole = _fit_to_factor(mask, factor).round()
    filled = (pixels - GREY) * (1 - hole) + GREY
    latent: Latent = _encode(ctx, ae, Image(filled.contiguous(), tuple(image.seeds)), None, None)["latent"]
    noise_mask = grow_square(hole, params["grow_mask_by"]).contiguous()
    return {"latent": Latent(latent.samples, noise_mask, latent.seeds)}


AUTOENCODER_ENCODE_FOR_INPAINT = NodeSpec(
    type="AutoencoderEncodeForInpaint", title="Autoencoder Encode (for Inpainting)", category="latent",
    aliases=("VAEEncodeForInpaint", "VAE Encode (for Inpainting)", "Autoencoder Encode (for Inpainting)"),
    help="Encode a picture for inpainting: sides are centre-cropped to the autoencoder's factor, the masked "
         "pixels (mask rounded to 0/1) are set to mid grey before encoding, and the mask, grown by "
         "grow_mask_by pixels so the seam is regenerated too, becomes the latent's noise mask. Sample at "
         "denoise 1.0.",
    compute=_encode_for_inpaint,
    inputs=(Input("autoencoder", SocketType.AUTOENCODER),
            Input("image", SocketType.IMAGE, help="the picture to repair (ComfyUI: pixels)"),
            Input("mask", SocketType.MASK, help="1 = the hole to fill")),
    outputs=(Output("latent", SocketType.LATENT),),
    params=(Param("grow_mask_by", ParamType.INT, 6, "pixels the noise mask is grown by (a square of this "
                  "side around each masked pixel)", min=0, max=MAX_GROW, inline=True),),
)

SPECS = (AUTOENCODER_ENCODE_FOR_INPAINT,)
