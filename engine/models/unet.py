"""The denoiser: the openaimodel UNet of the latent diffusion paper and Stable Diffusion.

Module names follow the original code exactly, so that the `model.diffusion_model.*`
part of a CompVis/Stability checkpoint loads with `load_state_dict(..., strict=True)`.
"""
from __future__ import annotations

import math
from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from engine.models.attention import QKVAttention, SpatialTransformer, normalization
from engine.models.configs import UNetConfig
from engine.models.regional import RegionalContext

ModuleT = TypeVar("ModuleT", bound=nn.Module)


def timestep_embedding(timesteps: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """(B,) timesteps -> (B, dim) float32 sinusoidal embedding, cosines first."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32,
                                                           device=timesteps.device) / half)
    args = timesteps[:, None].float() * freqs[None]  # (B, half)
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


class TimestepBlock(nn.Module):
    """Marks a layer whose forward is `forward(x, emb)`: it also takes the timestep embedding."""


class TimestepEmbedSequential(nn.Sequential):
    """Passes the embedding to TimestepBlocks and the context to SpatialTransformers."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor,  # type: ignore[override]  # the point of this class
                context: torch.Tensor | RegionalContext | None = None) -> torch.Tensor:
        for layer in self:
            if isinstance(layer, TimestepBlock):
                x = layer(x, emb)
            elif isinstance(layer, SpatialTransformer):
                x = layer(x, context)
            else:
                x = layer(x)
        return x


class Upsample(nn.Module):
    """Nearest 2x upsampling, then an optional 3x3 conv (`conv`)."""

    def __init__(self, channels: int, use_conv: bool, out_channels: int | None = None):
        super().__init__()
        self.use_conv = use_conv
        if use_conv:
            self.conv = nn.Conv2d(channels, out_channels or channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")  # (B, C, 2H, 2W)
        return self.conv(x) if self.use_conv else x


class Downsample(nn.Module):
    """Stride-2 3x3 conv (`op`), or 2x2 average pooling without conv."""

    def __init__(self, channels: int, use_conv: bool, out_channels: int | None = None):
        super().__init__()
        self.op: nn.Module
        if use_conv:
            self.op = nn.Conv2d(channels, out_channels or channels, 3, stride=2, padding=1)
        else:
            self.op = nn.AvgPool2d(kernel_size=2, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)  # (B, C, H/2, W/2)


class ResBlock(TimestepBlock):
    """Two 3x3 convs with the timestep embedding added (or scale-shift) between them."""

    def __init__(self, channels: int, emb_channels: int, dropout: float, out_channels: int | None = None,
                 use_scale_shift_norm: bool = False, up: bool = False, down: bool = False):
        super().__init__()
        out_channels = out_channels or channels
        self.use_scale_shift_norm = use_scale_shift_norm
        self.in_layers = nn.Sequential(normalization(channels), nn.SiLU(),
                                       nn.Conv2d(channels, out_channels, 3, padding=1))
        self.updown = up or down
        self.h_upd: nn.Module
        self.x_upd: nn.Module
        if up:
            self.h_upd, self.x_upd = Upsample(channels, False), Upsample(channels, False)
        elif down:
            self.h_upd, self.x_upd = Downsample(channels, False), Downsample(channels, False)
        else:
            self.h_upd = self.x_upd = nn.Identity()
        emb_out = 2 * out_channels if use_scale_shift_norm else out_channels
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, emb_out))
        self.out_layers = nn.Sequential(normalization(out_channels), nn.SiLU(), nn.Dropout(dropout),
                                        _zeroed(nn.Conv2d(out_channels, out_channels, 3, padding=1)))
        self.skip_connection: nn.Module
        if out_channels == channels:
            self.skip_connection = nn.Identity()
        else:
            self.skip_connection = nn.Conv2d(channels, out_channels, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        if self.updown:
            h = self.h_upd(self.in_layers[:-1](x))
            h = self.in_layers[-1](h)
            x = self.x_upd(x)
        else:
            h = self.in_layers(x)  # (B, C_out, H, W)
        emb_out = self.emb_layers(emb).to(h.dtype)[:, :, None, None]
        if self.use_scale_shift_norm:
            scale, shift = emb_out.chunk(2, dim=1)
            h = self.out_layers[0](h) * (1 + scale) + shift
            h = self.out_layers[1:](h)
        else:
            h = self.out_layers(h + emb_out)
        return self.skip_connection(x) + h


class AttentionBlock(nn.Module):
    """Self-attention over pixels with a fused qkv Conv1d (models without cross-attention)."""

    def __init__(self, channels: int, num_heads: int = 1, num_head_channels: int = -1,
                 use_new_attention_order: bool = False):
        super().__init__()
        if num_head_channels == -1:
            heads = num_heads
        else:
            if channels % num_head_channels:
                raise ValueError(f"{channels} channels do not split into heads of {num_head_channels}")
            heads = channels // num_head_channels
        self.norm = normalization(channels)
        self.qkv = nn.Conv1d(channels, channels * 3, 1)
        self.attention = QKVAttention(heads, legacy=not use_new_attention_order)
        self.proj_out = _zeroed(nn.Conv1d(channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        flat = x.reshape(b, c, h * w)  # (B, C, T)
        out = self.proj_out(self.attention(self.qkv(self.norm(flat))))
        return (flat + out).reshape(b, c, h, w)


def _per_level(value: int | tuple[int, ...], levels: int, name: str) -> list[int]:
    if isinstance(value, int):
        return [value] * levels
    if len(value) != levels:
        raise ValueError(f"{name} has {len(value)} entries for {levels} levels")
    return list(value)


class UNetModel(nn.Module):
    """openaimodel.UNetModel: `forward(x, timesteps, context=None, y=None)`.

    x: (B, in_channels, h, w) latent (plus concatenated conditioning channels);
    timesteps: (B,); context: (B, T, context_dim) for cross-attention (or a RegionalContext: regional prompts);
    y: (B,) class ids (num_classes) or (B, adm_in_channels) vectors.
    """

    def __init__(self, cfg: UNetConfig):
        super().__init__()
        _check_config(cfg)
        self.cfg = cfg
        self.model_channels = cfg.model_channels
        self.num_classes = cfg.num_classes
        self.adm = cfg.adm_in_channels is not None
        self.num_res_blocks = _per_level(cfg.num_res_blocks, len(cfg.channel_mult), "num_res_blocks")
        self.depths = _per_level(cfg.transformer_depth, len(cfg.channel_mult), "transformer_depth")
        emb_dim = cfg.model_channels * 4
        self.time_embed = nn.Sequential(nn.Linear(cfg.model_channels, emb_dim), nn.SiLU(),
                                        nn.Linear(emb_dim, emb_dim))
        self.label_emb: nn.Module
        if cfg.adm_in_channels is not None:
            self.label_emb = nn.Sequential(nn.Sequential(
                nn.Linear(cfg.adm_in_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim)))
        elif cfg.num_classes is not None:
            self.label_emb = nn.Embedding(cfg.num_classes, emb_dim)
        skip_chans = self._build_input_blocks(emb_dim)
        ch = cfg.model_channels * cfg.channel_mult[-1]
        self.middle_block = TimestepEmbedSequential(
            self._res(ch, emb_dim, ch), self._attention(ch, self.depths[-1], upsample=False),
            self._res(ch, emb_dim, ch))
        ch = self._build_output_blocks(emb_dim, skip_chans)
        self.out = nn.Sequential(normalization(ch), nn.SiLU(),
                                 _zeroed(nn.Conv2d(cfg.model_channels, cfg.out_channels, 3, padding=1)))

    def _res(self, ch: int, emb_dim: int, out: int, up: bool = False, down: bool = False) -> ResBlock:
        return ResBlock(ch, emb_dim, self.cfg.dropout, out, self.cfg.use_scale_shift_norm, up=up, down=down)

    def _attention(self, ch: int, depth: int, upsample: bool) -> nn.Module:
        """AttentionBlock or SpatialTransformer with the original code's head arithmetic."""
        cfg = self.cfg
        num_heads = cfg.num_heads
        if cfg.num_head_channels == -1:
            dim_head = ch // num_heads
        else:
            num_heads = ch // cfg.num_head_channels
            dim_head = cfg.num_head_channels
        if cfg.legacy:
            dim_head = ch // num_heads if cfg.use_spatial_transformer else cfg.num_head_channels
        if cfg.use_spatial_transformer:
            return SpatialTransformer(ch, num_heads, dim_head, depth, cfg.context_dim,
                                      cfg.use_linear_in_transformer, cfg.dropout, cfg.position_features)
        heads = (cfg.num_heads_upsample if cfg.num_heads_upsample != -1 else cfg.num_heads) if upsample \
            else num_heads
        return AttentionBlock(ch, heads, dim_head, cfg.use_new_attention_order)

    def _build_input_blocks(self, emb_dim: int) -> list[int]:
        cfg = self.cfg
        self.input_blocks = nn.ModuleList(
            [TimestepEmbedSequential(nn.Conv2d(cfg.in_channels, cfg.model_channels, 3, padding=1))])
        skip_chans, ch, ds = [cfg.model_channels], cfg.model_channels, 1
        for level, mult in enumerate(cfg.channel_mult):
            for _ in range(self.num_res_blocks[level]):
                layers: list[nn.Module] = [self._res(ch, emb_dim, mult * cfg.model_channels)]
                ch = mult * cfg.model_channels
                if ds in cfg.attention_resolutions:
                    layers.append(self._attention(ch, self.depths[level], upsample=False))
                self.input_blocks.append(TimestepEmbedSequential(*layers))
                skip_chans.append(ch)
            if level != len(cfg.channel_mult) - 1:
                down = self._res(ch, emb_dim, ch, down=True) if cfg.resblock_updown \
                    else Downsample(ch, cfg.conv_resample, ch)
                self.input_blocks.append(TimestepEmbedSequential(down))
                skip_chans.append(ch)
                ds *= 2
        self._bottom_ds = ds
        return skip_chans

    def _build_output_blocks(self, emb_dim: int, skip_chans: list[int]) -> int:
        cfg = self.cfg
        self.output_blocks = nn.ModuleList()
        ch, ds = cfg.model_channels * cfg.channel_mult[-1], self._bottom_ds
        for level, mult in reversed(list(enumerate(cfg.channel_mult))):
            for i in range(self.num_res_blocks[level] + 1):
                skip = skip_chans.pop()
                layers: list[nn.Module] = [self._res(ch + skip, emb_dim, cfg.model_channels * mult)]
                ch = cfg.model_channels * mult
                if ds in cfg.attention_resolutions:
                    layers.append(self._attention(ch, self.depths[level], upsample=True))
                if level and i == self.num_res_blocks[level]:
                    layers.append(self._res(ch, emb_dim, ch, up=True) if cfg.resblock_updown
                                  else Upsample(ch, cfg.conv_resample, ch))
                    ds //= 2
                self.output_blocks.append(TimestepEmbedSequential(*layers))
        return ch

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor | RegionalContext | None = None,
                y: torch.Tensor | None = None) -> torch.Tensor:
        emb = self._embedding(timesteps, y, x.shape[0])  # (B, 4*model_channels)
        dtype = self._weight_dtype
        h, ctx = x.to(dtype), None if context is None else context.to(dtype)
        skips = []
        for block in self.input_blocks:
            h = block(h, emb, ctx)
            skips.append(h)
        h = self.middle_block(h, emb, ctx)
        for block in self.output_blocks:
            h = block(torch.cat([h, skips.pop()], dim=1), emb, ctx)
        return self.out(h).to(x.dtype)  # (B, out_channels, h, w)

    @property
    def _weight_dtype(self) -> torch.dtype:
        return next(self.time_embed.parameters()).dtype

    def _embedding(self, timesteps: torch.Tensor, y: torch.Tensor | None, batch: int) -> torch.Tensor:
        if timesteps.dim() == 0:
            timesteps = timesteps.expand(batch)
        dtype = self._weight_dtype
        emb = self.time_embed(timestep_embedding(timesteps, self.model_channels).to(dtype))
        has_labels = self.num_classes is not None or self.adm
        if has_labels != (y is not None):
            needs = "needs class labels y" if has_labels else "takes no labels y"
            raise ValueError(f"this UNet {needs}")
        if y is not None:
            emb = emb + self.label_emb(y.to(dtype) if self.adm else y.long())
        return emb


def _zeroed(module: ModuleT) -> ModuleT:
    """The module with its weights (and bias) zero: the original code's `zero_module`."""
    for parameter in module.parameters():
        nn.init.zeros_(parameter)
    return module


def _check_config(cfg: UNetConfig) -> None:
    """Fail with one line on configs the original code would reject."""
    if cfg.use_spatial_transformer and cfg.context_dim is None:
        raise ValueError("UNetConfig: use_spatial_transformer needs context_dim")
    if cfg.context_dim is not None and not cfg.use_spatial_transformer:
        raise ValueError("UNetConfig: context_dim is set but use_spatial_transformer is off")
    if cfg.num_heads == -1 and cfg.num_head_channels == -1:
        raise ValueError("UNetConfig: set num_heads or num_head_channels")
