"""The MODEL value: a UNet denoiser with its noise schedule and prediction type.

Samplers see the model only through `apply` and `alphas_cumprod`; how the
conditioning reaches the UNet (cross-attention, concatenation, class/vector
embedding) is decided here, once, from the config's conditioning key.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from engine.capabilities import ModelCapabilities, model_capabilities
from engine.models.configs import DiffusionConfig, UNetConfig
from engine.models.regional import RegionalContext, compile_regions
from engine.models.regions import paint_regions
from engine.values import Conditioning


def make_betas(cfg: DiffusionConfig) -> torch.Tensor:
    """(T,) float64 betas of the original code's `make_beta_schedule`."""
    n = cfg.timesteps
    if cfg.beta_schedule == "linear":
        return torch.linspace(cfg.linear_start**0.5, cfg.linear_end**0.5, n, dtype=torch.float64) ** 2
    if cfg.beta_schedule == "cosine":
        s = 8e-3
        steps = torch.arange(n + 1, dtype=torch.float64) / n + s
        alphas = torch.cos(steps / (1 + s) * math.pi / 2) ** 2
        alphas = alphas / alphas[0]
        return (1 - alphas[1:] / alphas[:-1]).clamp(max=0.999)
    raise ValueError(f"unknown beta schedule {cfg.beta_schedule!r}")


class LatentDiffusionModel(nn.Module):
    """Wraps a UNet: `apply(x_t, t, cond)` returns the raw eps or v prediction."""

    alphas_cumprod: torch.Tensor  # (T,) float64, a buffer

    def __init__(self, unet: nn.Module, config: DiffusionConfig, name: str = "",
                 capabilities: ModelCapabilities | None = None):
        """`capabilities`: the loader's, from the whole checkpoint config; else the UNet config's."""
        super().__init__()
        self.unet = unet
        self.config = config
        self.name = name
        self.capabilities = capabilities or model_capabilities(_unet_config(unet), config)
        self.latent_rgb: Any = None  # its latents' live-preview projection (the loader sets it from the card)
        alphas_cumprod = torch.cumprod(1.0 - make_betas(config), dim=0)
        self.register_buffer("alphas_cumprod", alphas_cumprod, persistent=False)  # (T,) float64
        self._painted_cache: tuple[torch.Tensor, tuple, torch.Tensor] | None = None  # regions, size, painted
        self._joined_cache: tuple[tuple, torch.Tensor | RegionalContext] | None = None  # regional prompts' context

    @property
    def prediction(self) -> str:
        return self.config.prediction

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype

    def concat_channels(self, x: torch.Tensor) -> int:
        """How many conditioning channels the UNet expects beyond the latent's own."""
        cfg = getattr(self.unet, "cfg", None)  # any UNet that says its input channels (tests use stand-ins)
        return 0 if cfg is None else max(0, cfg.in_channels - x.shape[1])

    def _concat(self, x: torch.Tensor, cond: Conditioning | None) -> torch.Tensor | None:
        """(B, C_concat, h, w): the conditioning's concat channels, then its painted layout regions.

        Models trained with concat conditioning read all-zero channels as "none given"
        (the built-in model: no inpainting mask means plain generation, no regions no layout)."""
        channels = self.concat_channels(x)
        concat = cond.concat if cond is not None else None
        if channels == 0:
            return None if concat is None else _match_batch(concat, x.shape[0]).to(x)
        regions = cond.regions if cond is not None else None
        k = self.config.region_channels
        if concat is None:
            concat = x.new_zeros(x.shape[0], channels - k, *x.shape[2:])
        parts = [_match_batch(concat, x.shape[0]).to(x)]
        if k:
            if regions is None:
                parts.append(x.new_zeros(x.shape[0], k, *x.shape[2:]))
            else:
                parts.append(self._painted(regions, x)[:, :k])
        return torch.cat(parts, dim=1)

    def _painted(self, regions: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """(B, K, h, w) regions painted at x's size: once per conditioning and size, not at every sampler step
        (the sampler hands the same conditioning tensors to every step)."""
        size = (x.shape[0], *x.shape[2:], x.device, x.dtype)
        cached = self._painted_cache
        if cached is None or cached[0] is not regions or cached[1] != size:
            painted = paint_regions(_match_batch(regions, x.shape[0]).to(x.device), *x.shape[2:]).to(x)
            self._painted_cache = cached = (regions, size, painted)
        return cached[2]

    def _context(self, cond: Conditioning, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor | RegionalContext:
        """The cross-attention context: the prompt's, joined with its regional prompts' in attention mode."""
        assert cond.crossattn is not None
        context = _match_batch(cond.crossattn, x.shape[0]).to(x)
        if not cond.prompt_regions or cond.region_mode != "attention":
            return context
        progress = _progress(t, self.config.timesteps)
        active = tuple(r.active(progress) for r in cond.prompt_regions)
        key = (cond.prompt_regions, cond.crossattn, active, x.shape[0], x.device, x.dtype, cond.region_background)
        cached = self._joined_cache
        if cached is not None and all(_same(a, b) for a, b in zip(cached[0], key, strict=True)):
            return cached[1]  # the same regions at every step: their attention biases are made once
        joined = compile_regions(context, cond.prompt_regions, x.shape[0], progress, cond.region_background)
        self._joined_cache = (key, context if joined is None else joined)
        return self._joined_cache[1]

    # nn.Module.apply(fn) is never used on a denoiser: samplers call apply(x, t, cond)
    def apply(self, x: torch.Tensor, t: torch.Tensor,  # type: ignore[override]
              cond: Conditioning | None) -> torch.Tensor:
        """x: (B, C, h, w) noisy latent; t: (B,) timesteps in [0, T); returns (B, C_out, h, w)."""
        context = y = None
        x_in = x
        concat = self._concat(x, cond)
        if concat is not None:
            x_in = torch.cat([x, concat], dim=1)
        if cond is not None:
            if cond.crossattn is not None:
                context = self._context(cond, x, t)
            if cond.y is not None:
                y = _match_batch(cond.y, x.shape[0]).to(x.device)
        dtype = self.dtype
        if y is not None and y.is_floating_point():
            y = y.to(dtype)
        out = self.unet(x_in.to(dtype), t, context=None if context is None else context.to(dtype), y=y)
        return out.to(x.dtype)


def _same(a: Any, b: Any) -> bool:
    return a is b or (not isinstance(a, torch.Tensor) and not isinstance(b, torch.Tensor) and a == b)


def _progress(t: torch.Tensor, timesteps: int) -> float:
    """How far along the diffusion time the batch is: 0 at the noisiest timestep, 1 at the cleanest."""
    return 1.0 - float(t.detach().flatten()[0]) / max(timesteps - 1, 1)


def _unet_config(unet: nn.Module) -> UNetConfig | None:
    """The UNet's architecture config; None for a bare module (tests wrap small stand-ins)."""
    cfg = getattr(unet, "cfg", None)
    return cfg if isinstance(cfg, UNetConfig) else None


def _match_batch(tensor: torch.Tensor, batch: int) -> torch.Tensor:
    """Repeat a batch-1 (or batch-dividing) conditioning tensor to `batch` items."""
    if tensor.shape[0] == batch:
        return tensor
    if batch % tensor.shape[0] != 0:
        raise ValueError(f"conditioning batch {tensor.shape[0]} does not divide latent batch {batch}")
    return tensor.repeat_interleave(batch // tensor.shape[0], dim=0)
