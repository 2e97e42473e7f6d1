"""Latent nodes: empty latents, noise masks, inpainting-model conditioning, pasting results back.

torch is imported inside each compute.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from engine.capabilities import INPAINT_CONVENTIONS, AutoencoderCapabilities, ModelCapabilities
from engine.errors import UserInputError
from engine.memory import check_fits
from engine.model_geometry import nearest_multiples
from engine.spec import ComputeContext, Input, NodeSpec, Output, Param, ParamType, SocketType
from engine.values import Conditioning, Image, Latent

DEFAULT_LATENT_CHANNELS = 4
DEFAULT_DOWNSAMPLE = 8


def _latent_layout(inputs: Mapping[str, Any]) -> tuple[int, int]:
    """(latent channels, downsampling factor) from the autoencoder, else the model, else SD's 4 and 8."""
    if "autoencoder" in inputs:
        ae: AutoencoderCapabilities = inputs["autoencoder"].capabilities
        return ae.latent_channels, ae.factor
    if "model" in inputs:
        model: ModelCapabilities = inputs["model"].capabilities
        return model.latent_channels or DEFAULT_LATENT_CHANNELS, model.latent_factor or DEFAULT_DOWNSAMPLE
    return DEFAULT_LATENT_CHANNELS, DEFAULT_DOWNSAMPLE


def _size_multiple(inputs: Mapping[str, Any], factor: int) -> tuple[int, str]:
    """What picture sides must be multiples of, and why: the UNet's too when the model is connected."""
    model = inputs.get("model")
    if model is not None and model.capabilities.unet_multiple:
        return factor * model.capabilities.unet_multiple, f"which model {model.name!r} needs"
    return factor, "the autoencoder's downsampling factor"


def _empty_latent(ctx: ComputeContext, inputs: Mapping[str, Any],
                  params: Mapping[str, Any]) -> dict[str, Any]:
    import torch

    channels, factor = _latent_layout(inputs)
    multiple, why = _size_multiple(inputs, factor)
    for name in ("width", "height"):
        if params[name] % multiple:
            lower, upper = nearest_multiples(params[name], multiple)
            raise UserInputError(f"{name} {params[name]} is not a multiple of {multiple}, {why}: "
                                 f"use {lower} or {upper}", name)
    check_fits("a latent for a picture", params["width"], params["height"], params["batch_size"],
               channels, param=None, scale=factor * factor)
    shape = (params["batch_size"], channels, params["height"] // factor, params["width"] // factor)
    return {"latent": Latent(torch.zeros(shape, dtype=torch.float32))}


def _as_mask(mask: Any) -> Any:
    """A MASK tensor as (B, 1, H, W) float32 in [0, 1]."""
    mask = mask.float()
    if mask.ndim == 2:
        mask = mask[None, None]
    elif mask.ndim == 3:
        mask = mask[:, None]
    if mask.ndim != 4 or mask.shape[1] != 1:
        raise UserInputError(f"a mask has shape (batch, 1, H, W); got {tuple(mask.shape)}")
    return mask.clamp(0, 1)


def _check_mask_batch(mask: Any, batch: int, what: str) -> None:
    if mask.shape[0] not in (1, batch):
        raise UserInputError(f"the mask has {mask.shape[0]} items but the {what} has {batch}")


def _set_noise_mask(ctx: ComputeContext, inputs: Mapping[str, Any],
                    params: Mapping[str, Any]) -> dict[str, Any]:
    latent: Latent = inputs["latent"]
    mask = _as_mask(inputs["mask"])
    _check_mask_batch(mask, latent.samples.shape[0], "latent")
    h, w = latent.samples.shape[-2:]
    mh, mw = mask.shape[-2:]
    if abs(mw / mh - w / h) > 0.01 * (w / h):
        raise UserInputError(f"the mask is {mw}x{mh} but the latent is {w}x{h} (times the autoencoder factor): "
                             f"a different shape")
    return {"latent": Latent(latent.samples, mask, latent.seeds)}


def _inpaint_conditioning(ctx: ComputeContext, inputs: Mapping[str, Any],
                          params: Mapping[str, Any]) -> dict[str, Any]:
    import torch

    # LDM inpainting_big takes no prompt: its only conditioning is the masked image and the mask
    cond: Conditioning = inputs.get("conditioning") or Conditioning()
    ae, image = inputs["autoencoder"], inputs["image"]
    mask = _pixel_mask(inputs["mask"], image)
    hole = (mask >= 0.5).float()  # the inpainting models were trained on hard masks
    convention = params["convention"]
    if convention == "auto":
        convention = ae.capabilities.inpaint_convention
    with torch.no_grad():
        concat = inpaint_concat(ae, image.pixels.float(), hole, convention)
    return {"conditioning": cond.with_(concat=concat, meta={**cond.meta, "inpaint": convention})}


def inpaint_concat(ae: Any, pixels: Any, hole: Any, convention: str) -> Any:
    """(B, C_concat, h, w) concat channels for an inpainting model; hole (B|1, 1, H, W) is 1 where to fill.

    stable_diffusion: [mask, latent of the image with the hole mid grey]
    ldm (inpainting_big): [latent of the image with the hole black, mask scaled to -1..1]
    kiln (built-in): [latent of the whole image zeroed in the hole, mask]; the latent-size mask
    counts a latent pixel as hole when any of its image pixels is.
    """
    import torch
    import torch.nn.functional as F

    if convention == "ldm":
        latent = ae.encode_pixels(pixels * (1 - hole)).float().cpu()
        small = F.interpolate(hole, size=latent.shape[-2:], mode="nearest") * 2 - 1
        return torch.cat([latent, small.expand(latent.shape[0], -1, -1, -1)], dim=1)
    if convention == "kiln":
        latent = ae.encode_pixels(pixels).float().cpu()
        small = F.adaptive_max_pool2d(hole, latent.shape[-2:]).expand(latent.shape[0], -1, -1, -1)
        return torch.cat([latent * (1 - small), small], dim=1)
    latent = ae.encode_pixels(pixels * (1 - hole) + 0.5 * hole).float().cpu()
    small = F.interpolate(hole, size=latent.shape[-2:], mode="nearest")
    return torch.cat([small.expand(latent.shape[0], -1, -1, -1), latent], dim=1)


def _pixel_mask(mask: Any, image: Image) -> Any:
    """The mask resized to the image (same shape required), batch checked."""
    import torch.nn.functional as F

    mask = _as_mask(mask)
    _check_mask_batch(mask, image.pixels.shape[0], "image")
    w, h = image.size
    mh, mw = mask.shape[-2:]
    if (mw, mh) != (w, h):
        if abs(mw / mh - w / h) > 0.01 * (w / h):
            raise UserInputError(f"the mask is {mw}x{mh} but the image is {w}x{h}, a different shape")
        mask = F.interpolate(mask, size=(h, w), mode="bilinear", align_corners=False).clamp(0, 1)
    return mask


def feathered_weight(mask: Any, feather: int) -> Any:
    """mask times a ramp that rises from 0 at the mask's edge to 1 `feather` pixels inside it.

    Zero wherever the mask is zero, so a composite with it leaves those pixels exact.
    """
    import torch.nn.functional as F

    if feather <= 0:
        return mask
    inside = (mask > 0).float()
    k = 2 * feather + 1
    blurred = F.avg_pool2d(F.pad(inside, (feather, feather, 0, 0), mode="replicate"), (1, k), stride=1)
    blurred = F.avg_pool2d(F.pad(blurred, (0, 0, feather, feather), mode="replicate"), (k, 1), stride=1)
    return mask * ((blurred - 0.5) * 2 * (k / (k - 1))).clamp(0, 1)


def _composite_masked(ctx: ComputeContext, inputs: Mapping[str, Any],
                      params: Mapping[str, Any]) -> dict[str, Any]:
    import torch

    dest: Image = inputs["destination"]
    source: Image = inputs["source"]
    if source.size != dest.size:
        raise UserInputError(f"the source is {source.size[0]}x{source.size[1]} but the destination is "
                             f"{dest.size[0]}x{dest.size[1]}; decode the latent made from this image")
    batches = {dest.pixels.shape[0], source.pixels.shape[0]} - {1}
    if len(batches) > 1:
        raise UserInputError(f"batch sizes {sorted(batches)} do not match")
    mask = _pixel_mask(inputs["mask"], dest)
    weight = feathered_weight(mask, params["feather"])
    d, s = dest.pixels.float(), source.pixels.float()
    pixels = torch.where(weight > 0, d + (s - d) * weight, d)
    return {"image": Image(pixels.contiguous(), tuple(source.seeds) or tuple(dest.seeds))}


_SIZE_HELP = "in pixels; a multiple of the autoencoder's downsampling factor (8 for SD)"

EMPTY_LATENT = NodeSpec(
    type="EmptyLatent", title="Empty Latent", category="latent",
    aliases=("Empty Latent Image", "EmptyLatentImage"),
    help="A blank latent to sample from (text to image). Connect the autoencoder (or the model) so that "
         "the latent has the right channels and size; without either it is SD's 4 channels at 1/8 size. "
         "Width and height must also suit the model's UNet (32 for the built-in models): a size that does "
         "not is refused before sampling, naming the nearest sizes that do, rather than padded and "
         "cropped, since padding would shift the composition and the masks and maps made at that size.",
    compute=_empty_latent,
    inputs=(Input("autoencoder", SocketType.AUTOENCODER, optional=True, help="gives channels and factor"),
            Input("model", SocketType.MODEL, optional=True, help="gives channels and factor")),
    outputs=(Output("latent", SocketType.LATENT),),
    params=(Param("width", ParamType.INT, 128, _SIZE_HELP, min=8, max=8192, step=8, inline=True, multiple=8),
            Param("height", ParamType.INT, 128, _SIZE_HELP, min=8, max=8192, step=8, inline=True, multiple=8),
            Param("batch_size", ParamType.INT, 1, "pictures made at once; item k uses seed + k",
                  min=1, max=64, inline=True)),
)

SET_LATENT_NOISE_MASK = NodeSpec(
    type="SetLatentNoiseMask", title="Set Latent Noise Mask", category="latent",
    help="Limit sampling to the masked region (1 = regenerate): elsewhere the sampler keeps the latent, "
         "re-noised to each step's level, and returns it unchanged.",
    compute=_set_noise_mask,
    inputs=(Input("latent", SocketType.LATENT), Input("mask", SocketType.MASK, help="1 = regenerate")),
    outputs=(Output("latent", SocketType.LATENT),),
)

INPAINT_CONDITIONING = NodeSpec(
    type="InpaintConditioning", title="Inpaint Conditioning", category="conditioning",
    aliases=("InpaintModelConditioning", "Inpaint"),
    help="For inpainting models: adds the encoded masked image and the mask (at latent size) as concat "
         "channels (the sampler gives the negative the positive's when it has none). Stable Diffusion "
         "inpainting: mask then masked-image latent, hole grey. LDM inpainting_big: masked-image latent then "
         "mask in [-1, 1], hole black. Kiln's built-in models: image latent zeroed in the hole, then mask. "
         "'auto' uses the one the checkpoint's config names, else LDM for VQ autoencoders, else Stable "
         "Diffusion.",
    compute=_inpaint_conditioning,
    inputs=(Input("conditioning", SocketType.CONDITIONING, optional=True,
                  help="the prompt's, for text models; leave out for LDM inpainting_big"),
            Input("autoencoder", SocketType.AUTOENCODER),
            Input("image", SocketType.IMAGE, help="the picture to repair"),
            Input("mask", SocketType.MASK, help="1 = the hole to fill")),
    outputs=(Output("conditioning", SocketType.CONDITIONING),),
    params=(Param("convention", ParamType.CHOICE, "auto", "how the model expects its concat channels",
                  choices=("auto", *INPAINT_CONVENTIONS)),),
)

COMPOSITE_MASKED = NodeSpec(
    type="CompositeMasked", title="Paste Inpainted Result", category="latent",
    aliases=("Paste back",),
    help="Pastes the decoded result onto the original through the mask, feathered inwards only, so every "
         "pixel outside the mask is exactly the original (the autoencoder round trip never touches it).",
    compute=_composite_masked,
    inputs=(Input("destination", SocketType.IMAGE, help="the original picture"),
            Input("source", SocketType.IMAGE, help="the decoded sampler result"),
            Input("mask", SocketType.MASK, help="1 = take the source")),
    outputs=(Output("image", SocketType.IMAGE),),
    params=(Param("feather", ParamType.INT, 8, "pixels over which the paste fades in, inside the mask",
                  min=0, max=256, inline=True),),
)

SPECS = (EMPTY_LATENT, SET_LATENT_NOISE_MASK, INPAINT_CONDITIONING, COMPOSITE_MASKED)
