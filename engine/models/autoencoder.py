"""First-stage autoencoders: the ldm/taming Encoder and Decoder with a KL or VQ bottleneck.

Module names follow the original code exactly, so that the `first_stage_model.*`
part of a CompVis/Stability checkpoint loads with `load_state_dict(..., strict=True)`.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from engine.models.attention import single_head_spatial_attention
from engine.models.configs import AutoencoderConfig


def Normalize(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(32, channels, eps=1e-6)


class ResnetBlock(nn.Module):
    """Two 3x3 convs; a 1x1 `nin_shortcut` when the width changes. No timestep input."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float = 0.0):
        super().__init__()
        self.norm1 = Normalize(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = Normalize(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.has_shortcut = in_channels != out_channels
        if self.has_shortcut:
            self.nin_shortcut = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return (self.nin_shortcut(x) if self.has_shortcut else x) + h


class AttnBlock(nn.Module):
    """Single-head self-attention over pixels with 1x1 conv q, k, v, proj_out."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = Normalize(channels)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(x)
        return x + self.proj_out(single_head_spatial_attention(self.q(h), self.k(h), self.v(h)))


def make_attn(channels: int, attn_type: str) -> nn.Module:
    if attn_type == "vanilla":
        return AttnBlock(channels)
    if attn_type == "none":
        return nn.Identity()
    raise ValueError(f"unknown attn_type {attn_type!r} (expected 'vanilla' or 'none')")


class Downsample(nn.Module):
    """Stride-2 3x3 conv after padding right and bottom by one (the original's asymmetric pad)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))  # (B, C, H/2, W/2)


class Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))  # (B, C, 2H, 2W)


class _Level(nn.Module):
    """One resolution level: `block.J`, `attn.J` and an optional `downsample` / `upsample`."""

    downsample: nn.Module  # the encoder's levels but the last have one
    upsample: nn.Module  # the decoder's levels but the first have one

    def __init__(self, blocks: Sequence[nn.Module], attns: Sequence[nn.Module]):
        super().__init__()
        self.block = nn.ModuleList(blocks)
        self.attn = nn.ModuleList(attns)

    def run_blocks(self, h: torch.Tensor) -> torch.Tensor:
        for j, block in enumerate(self.block):
            h = block(h)
            if len(self.attn) > 0:
                h = self.attn[j](h)
        return h


class _Mid(nn.Module):
    def __init__(self, channels: int, attn_type: str, dropout: float):
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels, dropout)
        self.attn_1 = make_attn(channels, attn_type)
        self.block_2 = ResnetBlock(channels, channels, dropout)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.attn_1(self.block_1(h)))


class Encoder(nn.Module):
    """Image (B, in_channels, H, W) -> (B, z or 2z, H/f, W/f)."""

    def __init__(self, cfg: AutoencoderConfig, double_z: bool):
        super().__init__()
        ch, mults = cfg.ch, tuple(cfg.ch_mult)
        self.conv_in = nn.Conv2d(cfg.in_channels, ch, 3, padding=1)
        res, block_in = cfg.resolution, ch
        self.down = nn.ModuleList()
        for i, mult in enumerate(mults):
            blocks, attns = [], []
            for _ in range(cfg.num_res_blocks):
                blocks.append(ResnetBlock(block_in, ch * mult, cfg.dropout))
                block_in = ch * mult
                if res in cfg.attn_resolutions:
                    attns.append(make_attn(block_in, cfg.attn_type))
            level = _Level(blocks, attns)
            if i != len(mults) - 1:
                level.downsample = Downsample(block_in)
                res //= 2
            self.down.append(level)
        self.mid = _Mid(block_in, cfg.attn_type, cfg.dropout)
        self.norm_out = Normalize(block_in)
        self.conv_out = nn.Conv2d(block_in, 2 * cfg.z_channels if double_z else cfg.z_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for level in cast("list[_Level]", self.down):
            h = level.run_blocks(h)
            if hasattr(level, "downsample"):
                h = level.downsample(h)
        h = self.mid(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    """Latent (B, z, h, w) -> image (B, out_ch, h*f, w*f). `up.0` is the highest resolution."""

    def __init__(self, cfg: AutoencoderConfig):
        super().__init__()
        ch, mults = cfg.ch, tuple(cfg.ch_mult)
        block_in = ch * mults[-1]
        res = cfg.resolution // 2 ** (len(mults) - 1)
        self.conv_in = nn.Conv2d(cfg.z_channels, block_in, 3, padding=1)
        self.mid = _Mid(block_in, cfg.attn_type, cfg.dropout)
        levels: list[_Level] = []
        for i in reversed(range(len(mults))):
            blocks, attns = [], []
            for _ in range(cfg.num_res_blocks + 1):
                blocks.append(ResnetBlock(block_in, ch * mults[i], cfg.dropout))
                block_in = ch * mults[i]
                if res in cfg.attn_resolutions:
                    attns.append(make_attn(block_in, cfg.attn_type))
            level = _Level(blocks, attns)
            if i != 0:
                level.upsample = Upsample(block_in)
                res *= 2
            levels.insert(0, level)
        self.up = nn.ModuleList(levels)
        self.norm_out = Normalize(block_in)
        self.conv_out = nn.Conv2d(block_in, cfg.out_ch, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.conv_in(z))
        for level in reversed(cast("list[_Level]", self.up)):
            h = level.run_blocks(h)
            if hasattr(level, "upsample"):
                h = level.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class DiagonalGaussian:
    """The KL autoencoder's posterior: moments (B, 2C, h, w) split into mean and log-variance."""

    def __init__(self, moments: torch.Tensor):
        self.mean, logvar = moments.chunk(2, dim=1)
        self.logvar = logvar.clamp(-30.0, 20.0)
        self.std = torch.exp(0.5 * self.logvar)

    def mode(self) -> torch.Tensor:
        return self.mean

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        noise = torch.randn(self.mean.shape, generator=generator, dtype=self.mean.dtype,
                            device=generator.device if generator is not None else self.mean.device)
        return self.mean + self.std * noise.to(self.mean.device)

    def kl(self) -> torch.Tensor:
        """(B,) KL divergence to the standard normal, summed over latent elements."""
        return 0.5 * (self.mean.pow(2) + self.logvar.exp() - 1.0 - self.logvar).sum(dim=(1, 2, 3))


class AutoencoderKL(nn.Module):
    """The KL-regularised autoencoder (Stable Diffusion's VAE); images in [-1, 1]."""

    def __init__(self, cfg: AutoencoderConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg, double_z=True)
        self.decoder = Decoder(cfg)
        self.quant_conv = nn.Conv2d(2 * cfg.z_channels, 2 * cfg.embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(cfg.embed_dim, cfg.z_channels, 1)

    def encode(self, x: torch.Tensor) -> DiagonalGaussian:
        return DiagonalGaussian(self.quant_conv(self.encoder(x)))  # over (B, embed_dim, h, w)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.post_quant_conv(z))  # (B, out_ch, H, W)

    def forward(self, x: torch.Tensor, sample_posterior: bool = True
                ) -> tuple[torch.Tensor, DiagonalGaussian]:
        posterior = self.encode(x)
        z = posterior.sample() if sample_posterior else posterior.mode()
        return self.decode(z), posterior


class VectorQuantizer(nn.Module):
    """Nearest-codebook quantiser (taming VectorQuantizer2 with legacy=True loss)."""

    def __init__(self, n_embed: int, embed_dim: int, beta: float = 0.25):
        super().__init__()
        self.beta = beta
        self.embedding = nn.Embedding(n_embed, embed_dim)
        nn.init.uniform_(self.embedding.weight, -1.0 / n_embed, 1.0 / n_embed)

    def codes(self, z: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) -> (B, h, w) indices of the nearest code vectors."""
        flat = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])  # (N, C)
        book = self.embedding.weight
        dist = flat.pow(2).sum(1, keepdim=True) + book.pow(2).sum(1) - 2 * flat @ book.t()  # (N, K)
        return dist.argmin(dim=1).reshape(z.shape[0], z.shape[2], z.shape[3])

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns (z_q with straight-through gradient, commitment loss, indices)."""
        idx = self.codes(z)
        z_q = self.embedding(idx).permute(0, 3, 1, 2).to(z.dtype)  # (B, C, h, w)
        loss = F.mse_loss(z_q.detach(), z) + self.beta * F.mse_loss(z_q, z.detach())
        return z + (z_q - z).detach(), loss, idx


class VQModel(nn.Module):
    """The VQ-regularised autoencoder of the LDM zoo; diffusion runs on the pre-quantisation latent."""

    def __init__(self, cfg: AutoencoderConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg, double_z=False)  # a VQ encoder never outputs a variance
        self.decoder = Decoder(cfg)
        self.quantize = VectorQuantizer(cfg.n_embed, cfg.embed_dim)
        self.quant_conv = nn.Conv2d(cfg.z_channels, cfg.embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(cfg.embed_dim, cfg.z_channels, 1)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.quant_conv(self.encoder(x))  # (B, embed_dim, h, w), not quantised

    def decode(self, h: torch.Tensor, force_not_quantize: bool = False) -> torch.Tensor:
        quant = h if force_not_quantize else self.quantize(h)[0]
        return self.decoder(self.post_quant_conv(quant))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Training pass: (reconstruction, codebook loss)."""
        quant, loss, _ = self.quantize(self.encode(x))
        return self.decoder(self.post_quant_conv(quant)), loss


def build_autoencoder(cfg: AutoencoderConfig) -> AutoencoderKL | VQModel:
    if cfg.kind == "kl":
        return AutoencoderKL(cfg)
    if cfg.kind == "vq":
        return VQModel(cfg)
    raise ValueError(f"unknown autoencoder kind {cfg.kind!r} (expected 'kl' or 'vq')")
