"""Autoencoder nodes: images to latents and back, whole or in overlapping tiles.

The AUTOENCODER value is engine.models.first_stage.FirstStage. Tile sizes are in
image pixels for both directions; torch is imported inside each compute.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from engine.capabilities import AutoencoderCapabilities
from engine.errors import UserInputError
from engine.spec import ComputeContext, Input, NodeSpec, Output, Param, ParamType, SocketType
from engine.values import Image, Latent

MAX_TILE = 8192


def _progress(ctx: ComputeContext) -> Callable[[int, int], None]:
    def on_tile(done: int, total: int) -> None:
        ctx.check_cancelled()
        ctx.progress(done, total)
    return on_tile


def _decode(ctx: ComputeContext, ae: Any, latent: Latent, tile: int | None,
            overlap: int | None) -> dict[str, Any]:
    samples = latent.samples
    capabilities: AutoencoderCapabilities = ae.capabilities
    if samples.dim() != 4:
        raise UserInputError(f"the latent has shape {list(samples.shape)}, expected (batch, channels, h, w)")
    if samples.shape[1] != capabilities.latent_channels:
        raise UserInputError(f"the latent has {samples.shape[1]} channels but autoencoder {ae.name!r} "
                             f"decodes {capabilities.latent_channels}: was it made by another model?")
    f = capabilities.factor
    tile_l = None if tile is None else max(1, tile // f)
    overlap_l = None if overlap is None else overlap // f
    from engine.models.loader import fixed_cpu_threads
    from engine.oom import decode_with_fallback, decoding_workload

    with fixed_cpu_threads():  # the same bytes whatever the thread setting or the machine's load
        # out of device memory: again in ever smaller tiles (engine.oom)
        pixels = decode_with_fallback(lambda t: ae.decode_latents(samples, tile=t, overlap=overlap_l,
                                                                  on_tile=_progress(ctx)),
                                      tile_l, decoding_workload(ae, samples))
    return {"image": Image(pixels.float().cpu(), tuple(latent.seeds))}


def _fit_to_factor(pixels: Any, f: int) -> Any:
    """Centre-crop (B, 3, H, W) so that both sides are multiples of the downsampling factor."""
    h, w = pixels.shape[-2:]
    nh, nw = h // f * f, w // f * f
    if nh == 0 or nw == 0:
        raise UserInputError(f"the image is {w}x{h}; the autoencoder needs at least {f}x{f} pixels")
    top, left = (h - nh) // 2, (w - nw) // 2
    return pixels[..., top:top + nh, left:left + nw]


def _encode(ctx: ComputeContext, ae: Any, image: Image, tile: int | None,
            overlap: int | None) -> dict[str, Any]:
    pixels = _fit_to_factor(image.pixels, ae.capabilities.factor)
    samples = ae.encode_pixels(pixels, tile=tile, overlap=overlap, on_tile=_progress(ctx))
    return {"latent": Latent(samples.float().cpu(), seeds=tuple(image.seeds))}


def _auto_tile(params: Mapping[str, Any]) -> int | None:
    return params["tile_size"] or None  # 0 = let the autoencoder decide


def _decode_auto(ctx: ComputeContext, inputs: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    return _decode(ctx, inputs["autoencoder"], inputs["latent"], _auto_tile(params), None)


def _encode_auto(ctx: ComputeContext, inputs: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    return _encode(ctx, inputs["autoencoder"], inputs["image"], _auto_tile(params), None)


def _checked_overlap(params: Mapping[str, Any]) -> int:
    if params["overlap"] * 2 > params["tile_size"]:
        raise UserInputError(f"overlap {params['overlap']} is more than half the tile size "
                             f"{params['tile_size']}", "overlap")
    return params["overlap"]


def _decode_tiled(ctx: ComputeContext, inputs: Mapping[str, Any],
                  params: Mapping[str, Any]) -> dict[str, Any]:
    overlap = _checked_overlap(params)
    return _decode(ctx, inputs["autoencoder"], inputs["latent"], params["tile_size"], overlap)


def _encode_tiled(ctx: ComputeContext, inputs: Mapping[str, Any],
                  params: Mapping[str, Any]) -> dict[str, Any]:
    overlap = _checked_overlap(params)
    return _encode(ctx, inputs["autoencoder"], inputs["image"], params["tile_size"], overlap)


_AE_IN = Input("autoencoder", SocketType.AUTOENCODER)
_AUTO_TILE = Param("tile_size", ParamType.INT, 0, "tile side in pixels for large images (0 = automatic)",
                   min=0, max=MAX_TILE, step=64)
_TILE = Param("tile_size", ParamType.INT, 512, "tile side in pixels", min=64, max=MAX_TILE, step=64,
              inline=True)
_OVERLAP = Param("overlap", ParamType.INT, 64, "pixels shared by neighbouring tiles, feathered",
                 min=0, max=MAX_TILE // 2, step=8)

AUTOENCODER_DECODE = NodeSpec(
    type="AutoencoderDecode", title="Autoencoder Decode", category="latent",
    aliases=("VAE Decode", "VAEDecode"),
    help="Latent to image with the model's autoencoder. Large images are decoded in tiles.",
    compute=_decode_auto,
    inputs=(_AE_IN, Input("latent", SocketType.LATENT)),
    outputs=(Output("image", SocketType.IMAGE),),
    params=(_AUTO_TILE,),
)

AUTOENCODER_ENCODE = NodeSpec(
    type="AutoencoderEncode", title="Autoencoder Encode", category="latent",
    aliases=("VAE Encode", "VAEEncode"),
    help="Image to latent (the posterior mode). Sides are centre-cropped to a multiple of the "
         "autoencoder's downsampling factor.",
    compute=_encode_auto,
    inputs=(_AE_IN, Input("image", SocketType.IMAGE)),
    outputs=(Output("latent", SocketType.LATENT),),
    params=(_AUTO_TILE,),
)

AUTOENCODER_DECODE_TILED = NodeSpec(
    type="AutoencoderDecodeTiled", title="Autoencoder Decode (Tiled)", category="latent",
    aliases=("VAE Decode (Tiled)", "VAEDecodeTiled"),
    help="Latent to image in overlapping tiles blended with feathered edges: big images in little memory.",
    compute=_decode_tiled,
    inputs=(_AE_IN, Input("latent", SocketType.LATENT)),
    outputs=(Output("image", SocketType.IMAGE),),
    params=(_TILE, _OVERLAP),
)

AUTOENCODER_ENCODE_TILED = NodeSpec(
    type="AutoencoderEncodeTiled", title="Autoencoder Encode (Tiled)", category="latent",
    aliases=("VAE Encode (Tiled)", "VAEEncodeTiled"),
    help="Image to latent in overlapping tiles blended with feathered edges.",
    compute=_encode_tiled,
    inputs=(_AE_IN, Input("image", SocketType.IMAGE)),
    outputs=(Output("latent", SocketType.LATENT),),
    params=(_TILE, _OVERLAP),
)

SPECS = (AUTOENCODER_DECODE, AUTOENCODER_ENCODE, AUTOENCODER_DECODE_TILED, AUTOENCODER_ENCODE_TILED)
