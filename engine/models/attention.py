"""Attention building blocks shared by the UNet and the autoencoders.

Every attention product goes through `torch.nn.functional.scaled_dot_product_attention`,
which picks a fused, memory-efficient kernel on each backend.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from engine.models.regional import RegionalContext


class GroupNorm32(nn.GroupNorm):
    """GroupNorm computed in fp32 (fp16 statistics overflow), returned in the input dtype."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = None if self.weight is None else self.weight.float()
        bias = None if self.bias is None else self.bias.float()
        return F.group_norm(x.float(), self.num_groups, weight, bias, self.eps).to(x.dtype)


def normalization(channels: int) -> GroupNorm32:
    """The openaimodel `normalization`: 32 groups, eps 1e-5."""
    return GroupNorm32(32, channels)


def multi_head_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int,
                         bias: torch.Tensor | None = None) -> torch.Tensor:
    """q: (B, Tq, H*D), k/v: (B, Tk, H*D), bias: additive (B, 1, Tq, Tk) or None -> (B, Tq, H*D)."""
    b, tq, inner = q.shape
    d = inner // heads
    q, k, v = (t.reshape(b, -1, heads, d).transpose(1, 2) for t in (q, k, v))  # (B, H, T, D)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)  # (B, H, Tq, D)
    return out.transpose(1, 2).reshape(b, tq, inner)


class CrossAttention(nn.Module):
    """ldm CrossAttention: bias-free q/k/v, `to_out.0` with bias; self-attention when context is None."""

    def __init__(self, query_dim: int, context_dim: int | None = None, heads: int = 8,
                 dim_head: int = 64, dropout: float = 0.0):
        super().__init__()
        inner = heads * dim_head
        context_dim = query_dim if context_dim is None else context_dim
        self.heads = heads
        self.to_q = nn.Linear(query_dim, inner, bias=False)
        self.to_k = nn.Linear(context_dim, inner, bias=False)
        self.to_v = nn.Linear(context_dim, inner, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner, query_dim), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None,
                bias: torch.Tensor | None = None) -> torch.Tensor:
        # x: (B, T, query_dim); context: (B, S, context_dim); bias: (B, 1, T, S) added to the scores
        context = x if context is None else context
        out = multi_head_attention(self.to_q(x), self.to_k(context), self.to_v(context), self.heads, bias)
        return self.to_out(out)


class GEGLU(nn.Module):
    """Gated GELU: one projection yields the value and its gate."""

    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out * 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        value, gate = self.proj(x).chunk(2, dim=-1)
        return value * F.gelu(gate)


class FeedForward(nn.Module):
    """ldm FeedForward with GEGLU: keys `net.0.proj`, `net.2`."""

    def __init__(self, dim: int, mult: int = 4, dropout: float = 0.0):
        super().__init__()
        inner = dim * mult
        self.net = nn.Sequential(GEGLU(dim, inner), nn.Dropout(dropout), nn.Linear(inner, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class BasicTransformerBlock(nn.Module):
    """Self-attention, cross-attention, feed-forward; pre-LayerNorm residuals."""

    def __init__(self, dim: int, heads: int, dim_head: int, context_dim: int | None, dropout: float = 0.0):
        super().__init__()
        self.attn1 = CrossAttention(dim, None, heads, dim_head, dropout)
        self.ff = FeedForward(dim, dropout=dropout)
        self.attn2 = CrossAttention(dim, context_dim, heads, dim_head, dropout)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None,
                context_bias: torch.Tensor | None = None) -> torch.Tensor:
        # x: (B, T, dim); context_bias: regional prompts' (B, 1, T, S) cross-attention bias
        x = x + self.attn1(self.norm1(x))
        x = x + self.attn2(self.norm2(x), context, context_bias)
        return x + self.ff(self.norm3(x))


def grid_position_features(h: int, w: int, frequencies: int, device: torch.device, dtype: torch.dtype
                           ) -> torch.Tensor:
    """Fourier features of each pixel centre's (x, y) in [0, 1]: (h*w, 4*frequencies), row-major.

    Relative coordinates, so "top left" means the same at every image size."""
    ys = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) / h
    xs = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) / w
    grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1).reshape(-1, 2)  # (h*w, 2): x, y
    angles = grid[:, :, None] * torch.pi * torch.arange(1, frequencies + 1, device=device)  # (h*w, 2, F)
    return torch.cat([angles.sin(), angles.cos()], dim=-1).reshape(h * w, -1).to(dtype)


class SpatialTransformer(nn.Module):
    """Transformer over the pixels of a feature map, cross-attending to a context.

    `use_linear` (SD 2.x) projects with Linear layers after flattening; otherwise
    with 1x1 convolutions before flattening, as the original code does.
    `position_features` > 0 (a Kiln addition) adds a learned projection of each
    token's Fourier position features, so that a query knows where it is and can
    match "top left" or a layout box; the projection starts at zero, so the block
    starts out as the original one.
    """

    def __init__(self, channels: int, heads: int, dim_head: int, depth: int = 1,
                 context_dim: int | None = None, use_linear: bool = False, dropout: float = 0.0,
                 position_features: int = 0):
        super().__init__()
        inner = heads * dim_head
        self.use_linear = use_linear
        self.position_features = position_features
        self.norm = nn.GroupNorm(32, channels, eps=1e-6)
        self.proj_in = nn.Linear(channels, inner) if use_linear else nn.Conv2d(channels, inner, 1)
        if position_features:
            self.pos_proj = nn.Linear(4 * position_features, inner, bias=False)
            nn.init.zeros_(self.pos_proj.weight)
        self._features: tuple[tuple, torch.Tensor] | None = None  # (h, w, device, dtype), features: one per size
        self.transformer_blocks = nn.ModuleList(
            BasicTransformerBlock(inner, heads, dim_head, context_dim, dropout) for _ in range(depth)
        )
        self.proj_out = nn.Linear(inner, channels) if use_linear else nn.Conv2d(inner, channels, 1)

    def forward(self, x: torch.Tensor, context: torch.Tensor | RegionalContext | None = None) -> torch.Tensor:
        b, _, h, w = x.shape
        bias, tokens = None, context
        if isinstance(context, RegionalContext):  # regional prompts: where each prompt's tokens are seen
            bias, tokens = context.bias(h, w), context.tokens
        t = self.norm(x)
        if not self.use_linear:
            t = self.proj_in(t)
        t = t.flatten(2).transpose(1, 2)  # (B, HW, inner)
        if self.use_linear:
            t = self.proj_in(t)
        if self.position_features:
            t = t + self.pos_proj(self._position_features(h, w, t))
        for block in self.transformer_blocks:
            t = block(t, tokens, bias)
        if self.use_linear:
            t = self.proj_out(t)
        t = t.transpose(1, 2).reshape(b, -1, h, w)  # (B, inner, H, W)
        if not self.use_linear:
            t = self.proj_out(t)
        return x + t


    def _position_features(self, h: int, w: int, like: torch.Tensor) -> torch.Tensor:
        """The (h*w, 4F) features, made once per size rather than at every sampler step."""
        key = (h, w, like.device, like.dtype)
        if self._features is None or self._features[0] != key:
            with torch.inference_mode(False):  # a tensor made while sampling must serve training too
                self._features = key, grid_position_features(h, w, self.position_features, like.device, like.dtype)
        return self._features[1]


class QKVAttention(nn.Module):
    """Attention over a fused qkv tensor (B, 3*H*D, T) as the openaimodel AttentionBlock makes it.

    legacy=True is `QKVAttentionLegacy` (per head [q, k, v] groups, the
    checkpoints' layout); legacy=False splits q, k, v first, then heads.
    """

    def __init__(self, heads: int, legacy: bool = True):
        super().__init__()
        self.heads = heads
        self.legacy = legacy

    def forward(self, qkv: torch.Tensor) -> torch.Tensor:
        b, width, length = qkv.shape
        d = width // (3 * self.heads)
        if self.legacy:
            q, k, v = qkv.reshape(b, self.heads, 3 * d, length).split(d, dim=2)  # (B, H, D, T) each
        else:
            q, k, v = (t.reshape(b, self.heads, d, length) for t in qkv.chunk(3, dim=1))
        out = F.scaled_dot_product_attention(q.transpose(2, 3), k.transpose(2, 3), v.transpose(2, 3))
        return out.transpose(2, 3).reshape(b, self.heads * d, length)  # (B, H*D, T)


def single_head_spatial_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The autoencoders' AttnBlock product: q, k, v (B, C, H, W) -> (B, C, H, W), one head."""
    b, c, h, w = q.shape
    q, k, v = (t.reshape(b, 1, c, h * w).transpose(2, 3) for t in (q, k, v))  # (B, 1, HW, C)
    out = F.scaled_dot_product_attention(q, k, v)
    return out.transpose(2, 3).reshape(b, c, h, w)
