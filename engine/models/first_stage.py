"""The AUTOENCODER socket value: pixels in [0, 1] to scaled latents and back.

Wraps an AutoencoderKL or VQModel with its latent scale factor, moves it between
devices and dtypes, keeps SD-style VAEs out of fp16 (they overflow there), and
splits large images into overlapping tiles blended with linear feather weights
so that they fit in memory without visible seams.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from engine.capabilities import AutoencoderCapabilities, InpaintConvention, resolved_inpaint_convention
from engine.models.autoencoder import AutoencoderKL, DiagonalGaussian, VQModel

TileCallback = Callable[[int, int], None]  # (tiles done, tiles in all)

AUTO_TILE_PIXELS = 1024 * 1024  # tile automatically when an image has more pixels than this
AUTO_TILE_SIZE = 512  # pixels a side of an automatic tile (smaller if auto_tile_pixels is)


class FirstStage:
    """An autoencoder plus how its latents are scaled: `latent = scale_factor * z`."""

    def __init__(self, model: AutoencoderKL | VQModel, scale_factor: float = 1.0, name: str = "",
                 latent_rgb: Any = None, upcast: bool = True,
                 auto_tile_pixels: int = AUTO_TILE_PIXELS,
                 inpaint_convention: InpaintConvention | None = None):
        self.model = model.eval()
        self.inpaint_convention = inpaint_convention  # the model's inpainting concat layout, when its config says
        self.scale_factor = float(scale_factor)
        self.name = name
        self.latent_rgb = latent_rgb  # the live preview's latent -> RGB projection (engine.sampling.preview)
        self.upcast = upcast  # keep weights in fp32 when fp16 is asked for
        self.auto_tile_pixels = auto_tile_pixels

    @property
    def is_vq(self) -> bool:
        return isinstance(self.model, VQModel)

    @property
    def downsample_factor(self) -> int:
        return self.model.cfg.downsample_factor

    @property
    def latent_channels(self) -> int:
        return self.model.cfg.embed_dim

    @property
    def capabilities(self) -> AutoencoderCapabilities:
        convention = resolved_inpaint_convention(self.inpaint_convention, self.is_vq)
        return AutoencoderCapabilities(self.latent_channels, self.downsample_factor, self.scale_factor,
                                       self.is_vq, convention)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> FirstStage:
        """Move the weights; with `upcast`, fp16 becomes fp32 (bf16 is kept: it does not overflow)."""
        if dtype == torch.float16 and self.upcast:
            dtype = torch.float32
        self.model.to(device=device, dtype=dtype)
        return self

    def __repr__(self) -> str:
        kind = "VQ" if self.is_vq else "KL"
        return f"FirstStage({self.name!r}, {kind} f{self.downsample_factor}, scale {self.scale_factor:g})"

    # --- public API -------------------------------------------------------------------------

    @torch.no_grad()
    def encode_pixels(self, pixels: torch.Tensor, generator: torch.Generator | None = None,
                      sample: bool = False, tile: int | None = None, overlap: int | None = None,
                      on_tile: TileCallback | None = None) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> scaled latent (B, C, H/f, W/f), float32 on the input's device.

        KL: the posterior mode, or a sample from `generator` when `sample`.
        tile/overlap are in image pixels; tile None = automatic, 0 = never tile.
        """
        f = self.downsample_factor
        if pixels.shape[-1] % f or pixels.shape[-2] % f:
            raise ValueError(f"image size {pixels.shape[-1]}x{pixels.shape[-2]} is not a multiple of {f}")
        x = (pixels.to(self.device, self._compute_dtype()) * 2.0 - 1.0)
        tile, overlap = self._tiling(tile, overlap, pixels.shape[-2] * pixels.shape[-1], unit=f)
        encode = lambda t: self.model.quant_conv(self.model.encoder(t))
        raw = encode(x) if tile == 0 else _tiled(encode, x, tile, overlap, 1 / f, on_tile)
        if self.is_vq:
            z = raw
        else:
            posterior = DiagonalGaussian(raw.float())
            z = posterior.sample(generator) if sample else posterior.mode()
        return (z.float() * self.scale_factor).to(pixels.device)

    @torch.no_grad()
    def decode_latents(self, latent: torch.Tensor, tile: int | None = None, overlap: int | None = None,
                       on_tile: TileCallback | None = None) -> torch.Tensor:
        """Scaled latent (B, C, h, w) -> (B, 3, h*f, w*f) float32 in [0, 1] on the latent's device.

        tile/overlap are in latent pixels; tile None = automatic, 0 = never tile.
        """
        if latent.shape[1] != self.latent_channels:
            raise ValueError(f"latent has {latent.shape[1]} channels, "
                             f"autoencoder expects {self.latent_channels}")
        f = self.downsample_factor
        z = latent.to(self.device, self._compute_dtype()) / self.scale_factor
        tile, overlap = self._tiling(tile, overlap, latent.shape[-2] * latent.shape[-1] * f * f, unit=1,
                                     per_pixel=1 / f)
        decode = self.model.decode
        decoded = decode(z) if tile == 0 else _tiled(decode, z, tile, overlap, f, on_tile)
        return ((decoded.float() + 1.0) / 2.0).clamp(0.0, 1.0).to(latent.device)

    # --- helpers ----------------------------------------------------------------------------

    def _compute_dtype(self) -> torch.dtype:
        if self.dtype == torch.float16 and self.upcast:
            self.model.float()  # someone halved the module directly: SD VAEs overflow in fp16
        return self.dtype

    def _tiling(self, tile: int | None, overlap: int | None, image_pixels: int, unit: int,
                per_pixel: float = 1.0) -> tuple[int, int]:
        """Resolve (tile, overlap) in input units; tile 0 means one pass over the whole input."""
        if tile is None:
            if image_pixels <= self.auto_tile_pixels:
                return 0, 0
            side = min(AUTO_TILE_SIZE, math.isqrt(self.auto_tile_pixels))
            tile = int(side * per_pixel)
        if tile == 0:
            return 0, 0
        if overlap is None:
            overlap = tile // 4
        tile = max(unit, tile // unit * unit)
        overlap = min(overlap // unit * unit, tile // 2)
        return tile, max(overlap, 0)


def _tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Start offsets covering [0, size) with tiles of `tile`, the last one flush with the end."""
    if size <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, size - tile, stride))
    starts.append(size - tile)
    return starts


def _feather(length: int, ramp: int, fade_start: bool, fade_end: bool) -> torch.Tensor:
    """(length,) weights rising linearly over `ramp` samples at sides that meet another tile."""
    w = torch.ones(length)
    ramp = min(ramp, length // 2)
    if ramp > 0:
        rise = torch.arange(1, ramp + 1, dtype=torch.float32) / (ramp + 1)
        if fade_start:
            w[:ramp] = rise
        if fade_end:
            w[length - ramp:] = rise.flip(0)
    return w


def _tiled(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, tile: int, overlap: int,
           scale: float, on_tile: TileCallback | None) -> torch.Tensor:
    """Run `fn` over overlapping tiles of x (B, C, H, W) and blend the (B, C', H*scale, W*scale) outputs."""
    height, width = x.shape[-2:]
    rows, cols = _tile_starts(height, tile, overlap), _tile_starts(width, tile, overlap)
    out: torch.Tensor | None = None
    weight: torch.Tensor | None = None
    ramp = int(overlap * scale)
    total, done = len(rows) * len(cols), 0
    for y0 in rows:
        for x0 in cols:
            y = fn(x[..., y0:y0 + tile, x0:x0 + tile]).float()  # (B, C', th, tw)
            if out is None or weight is None:
                out = y.new_zeros(*y.shape[:2], int(height * scale), int(width * scale))
                weight = y.new_zeros(1, 1, *out.shape[-2:])
            th, tw = y.shape[-2:]
            wy = _feather(th, ramp, y0 > 0, y0 + tile < height)
            wx = _feather(tw, ramp, x0 > 0, x0 + tile < width)
            w = (wy[:, None] * wx[None, :]).to(y.device)  # (th, tw)
            oy, ox = int(y0 * scale), int(x0 * scale)
            out[..., oy:oy + th, ox:ox + tw] += y * w
            weight[..., oy:oy + th, ox:ox + tw] += w
            done += 1
            if on_tile is not None:
                on_tile(done, total)
    assert out is not None and weight is not None  # there is always a tile
    return out / weight

