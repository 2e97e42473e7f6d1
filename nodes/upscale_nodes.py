"""Latent super-resolution (LDM-SR): the low-resolution picture conditions the sampler by concatenation.

An SR model samples a latent of the large picture in its own autoencoder's
latent space, with the small picture, in [-1, 1] and resized to the latent's
size, concatenated at every UNet call. For 4x SR with an f=4 autoencoder the
small picture already has the latent's size: 32 px in, 128 px out; 128 px in,
512 px out. The model is fully convolutional, so any size works. torch is
imported inside compute.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from engine.capabilities import AutoencoderCapabilities
from engine.errors import UserInputError
from engine.spec import ComputeContext, Input, NodeSpec, Output, Param, ParamType, SocketType
from engine.values import Image, Latent
from nodes.semantic_conditioning import require_accepts

MAX_SIDE = 8192


def _sr_conditioning(ctx: ComputeContext, inputs: Mapping[str, Any],
                     params: Mapping[str, Any]) -> dict[str, Any]:
    conditioner, image = inputs["conditioner"], inputs["image"]
    require_accepts(conditioner, "image", "low-resolution image")
    latent = inputs.get("latent")
    size = tuple(latent.samples.shape[-2:]) if latent is not None else tuple(image.pixels.shape[-2:])
    h, w = image.pixels.shape[-2:]
    if abs(w / h - size[1] / size[0]) > 0.01 * (size[1] / size[0]):
        raise UserInputError(f"the image is {w}x{h} but the latent is {size[1]}x{size[0]}: a different shape")
    cond = conditioner.encode(image.pixels, size=size)
    return {"conditioning": cond.with_(meta={**cond.meta, "low_resolution": f"{w}x{h}"})}


def _empty_latent_like(ctx: ComputeContext, inputs: Mapping[str, Any],
                       params: Mapping[str, Any]) -> dict[str, Any]:
    import torch

    image: Image = inputs["image"]
    ae: AutoencoderCapabilities = inputs["autoencoder"].capabilities
    scale, f = params["scale"], ae.factor
    w, h = image.size
    width, height = w * scale, h * scale
    if width % f or height % f:
        raise UserInputError(f"{width}x{height} ({w}x{h} times {scale}) is not a multiple of {f}, the "
                             f"autoencoder's downsampling factor", "scale")
    if max(width, height) > MAX_SIDE:
        raise UserInputError(f"{width}x{height} is larger than {MAX_SIDE} pixels a side", "scale")
    shape = (image.pixels.shape[0], ae.latent_channels, height // f, width // f)
    return {"latent": Latent(torch.zeros(shape, dtype=torch.float32), seeds=tuple(image.seeds))}


SR_CONDITIONING = NodeSpec(
    type="SuperResolutionConditioning", title="Super-Resolution Conditioning", category="conditioning",
    aliases=("Upscale Image (using Model)", "Upscaler", "SR"),
    help="Conditions a super-resolution model on a small picture: the picture, in [-1, 1] and resized "
         "(bicubic) to the latent's size when it differs, is concatenated to the latent. Sample with cfg 1.",
    compute=_sr_conditioning,
    inputs=(Input("conditioner", SocketType.CONDITIONER, help="from Load Checkpoint (an SR model)"),
            Input("image", SocketType.IMAGE, help="the small picture to upscale"),
            Input("latent", SocketType.LATENT, optional=True, help="the latent to sample; sets the size")),
    outputs=(Output("conditioning", SocketType.CONDITIONING),),
)

EMPTY_LATENT_LIKE = NodeSpec(
    type="EmptyLatentLike", title="Empty Latent Like Image", category="latent",
    help="A blank latent for a picture `scale` times the size of the input image, in the given autoencoder's "
         "latent space (the SR model's own): 4 turns a 128 px picture into a 512 px one. A result the "
         "model's UNet cannot take (not a multiple of its size step) is refused by the Sampler before any "
         "step, naming the nearest sizes that work, rather than padded and cropped.",
    compute=_empty_latent_like,
    inputs=(Input("image", SocketType.IMAGE, help="the small picture; sets the size and batch"),
            Input("autoencoder", SocketType.AUTOENCODER, help="the model whose latent space to use")),
    outputs=(Output("latent", SocketType.LATENT),),
    params=(Param("scale", ParamType.INT, 4, "the output is this many times larger on each side",
                  min=1, max=16, inline=True),),
)

SPECS = (SR_CONDITIONING, EMPTY_LATENT_LIKE)
