"""The CLIP text transformer (transformers' CLIPTextModel: same parameter names, same outputs)
without importing transformers.

RECONSTRUCTED: the prompt-weighting helper overwrote this file by mistake (it created a module of
the same name at the same time, now engine/models/clip_weighting.py) and rebuilt the two names
conditioners.py imports from it, TextConfig.from_params and CLIPTextTransformer, from transformers'
CLIPTextModel. Whoever wrote the original: please check it against your version.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class TextConfig:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    max_position_embeddings: int = 77
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5

    @classmethod
    def from_params(cls, p: dict[str, Any]) -> TextConfig:
        """From a conditioner config's params (width, layers, heads, intermediate, vocab, max_length, act)."""
        return cls(int(p["vocab"]), int(p["width"]), int(p["intermediate"]), int(p["layers"]), int(p["heads"]),
                   int(p["max_length"]), str(p.get("act", "quick_gelu")))


@dataclass
class TextOutput:
    last_hidden_state: torch.Tensor
    hidden_states: tuple[torch.Tensor, ...] | None = None


class _Embeddings(nn.Module):
    def __init__(self, c: TextConfig):
        super().__init__()
        self.token_embedding = nn.Embedding(c.vocab_size, c.hidden_size)
        self.position_embedding = nn.Embedding(c.max_position_embeddings, c.hidden_size)
        self.register_buffer("position_ids", torch.arange(c.max_position_embeddings).expand((1, -1)),
                             persistent=False)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        ids: torch.Tensor = self.position_ids  # type: ignore[assignment]  # a buffer
        positions = ids[:, :input_ids.shape[-1]]
        return self.token_embedding(input_ids) + self.position_embedding(positions)


class _Attention(nn.Module):
    def __init__(self, c: TextConfig):
        super().__init__()
        self.heads = c.num_attention_heads
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(c.hidden_size, c.hidden_size)
                                                                for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = (p(x).view(b, n, self.heads, -1).transpose(1, 2) for p in (self.q_proj, self.k_proj, self.v_proj))
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.out_proj(out.transpose(1, 2).reshape(b, n, -1))


class _MLP(nn.Module):
    def __init__(self, c: TextConfig):
        super().__init__()
        self.act = c.hidden_act
        self.fc1 = nn.Linear(c.hidden_size, c.intermediate_size)
        self.fc2 = nn.Linear(c.intermediate_size, c.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc1(x)
        h = h * torch.sigmoid(1.702 * h) if self.act == "quick_gelu" else F.gelu(h)
        return self.fc2(h)


class _Layer(nn.Module):
    def __init__(self, c: TextConfig):
        super().__init__()
        self.self_attn = _Attention(c)
        self.layer_norm1 = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.mlp = _MLP(c)
        self.layer_norm2 = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.layer_norm1(x))
        return x + self.mlp(self.layer_norm2(x))


class _Encoder(nn.Module):
    def __init__(self, c: TextConfig):
        super().__init__()
        self.layers = nn.ModuleList(_Layer(c) for _ in range(c.num_hidden_layers))


class CLIPTextTransformer(nn.Module):
    """(B, T) ids -> TextOutput: last_hidden_state (final norm applied) and, when asked, the
    embeddings' output and every layer's (no final norm), as transformers gives them."""

    def __init__(self, config: TextConfig):
        super().__init__()
        self.config = config
        self.embeddings = _Embeddings(config)
        self.encoder = _Encoder(config)
        self.final_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, input_ids: torch.Tensor, output_hidden_states: bool = False) -> TextOutput:
        x = self.embeddings(input_ids)
        states = [x]
        for layer in self.encoder.layers:
            x = layer(x)
            states.append(x)
        return TextOutput(self.final_layer_norm(x), tuple(states) if output_hidden_states else None)
