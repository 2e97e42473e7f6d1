"""The built-in models' conditioner: text words and layout boxes as one token stream.

As the paper's LDM text model, a small transformer trained jointly with the
UNet encodes tokens into the cross-attention context. Text prompts use a
word-level vocabulary; layouts use the paper's box tokens (each box: its label
words, then its four corner coordinates quantised to `coord_bins` bins). One
vocabulary serves both, so a layout label shares embeddings with the words of
a prompt. The empty sequence [BOS, EOS] is the unconditional input that
classifier-free guidance needs.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from engine.errors import UserInputError, clip, quote_list

SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>", "<layout>")
PAD, BOS, EOS, LAYOUT = range(4)


@dataclass
class TokenConditionerConfig:
    words: tuple[str, ...] = ()  # the word vocabulary, in id order after the special tokens
    coord_bins: int = 64
    max_tokens: int = 40
    width: int = 256
    layers: int = 4
    heads: int = 4

    @property
    def vocab_size(self) -> int:
        return len(SPECIAL_TOKENS) + len(self.words) + self.coord_bins

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["words"] = list(self.words)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TokenConditionerConfig:
        return cls(**{**d, "words": tuple(d.get("words", ()))})


@dataclass
class Tokenizer:
    """Words and boxes to ids. Unknown words are an error naming the words."""

    config: TokenConditionerConfig
    _ids: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        base = len(SPECIAL_TOKENS)
        self._ids = {w: base + i for i, w in enumerate(self.config.words)}

    def coord_token(self, value: float) -> int:
        bins = self.config.coord_bins
        index = min(bins - 1, max(0, int(float(value) * bins)))
        return len(SPECIAL_TOKENS) + len(self.config.words) + index

    def words_to_ids(self, text: str, what: str = "prompt") -> list[int]:
        words = text.lower().replace(",", " ").replace(".", " ").split()
        unknown = sorted({w for w in words if w not in self._ids})
        if unknown:
            raise UserInputError(
                f"{what} has words this model does not know: {quote_list(unknown, 8, _word)} "
                f"(it knows: {quote_list(self.config.words, 12, _word)})", param="text")
        return [self._ids[w] for w in words]

    def encode_text(self, text: str) -> list[int]:
        return self._fit([BOS, *self.words_to_ids(text), EOS])

    def encode_layout(self, boxes: Sequence[dict]) -> list[int]:
        tokens = [BOS, LAYOUT]
        for i, item in enumerate(boxes):
            tokens += self.words_to_ids(str(item["label"]), what=f"layout box {i + 1} label")
            tokens += [self.coord_token(v) for v in item["box"]]
        return self._fit(tokens + [EOS])

    def _fit(self, tokens: list[int]) -> list[int]:
        n = self.config.max_tokens
        if len(tokens) > n:
            raise UserInputError(f"input is {len(tokens)} tokens long; this model reads at most {n}")
        return tokens + [PAD] * (n - len(tokens))

    def batch(self, sequences: Sequence[list[int]]) -> torch.Tensor:
        return torch.tensor(list(sequences), dtype=torch.long)  # (B, T)


def _word(word: str) -> str:
    return clip(word, 20)


class TransformerBlock(nn.Module):
    """Pre-norm self-attention and MLP; `blocked` (Q, K) True where a query may not look."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, x: torch.Tensor, pad_mask: torch.Tensor, blocked: torch.Tensor | None = None) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.attn(h, h, h, key_padding_mask=pad_mask, attn_mask=blocked, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class TokenConditioner(nn.Module):
    """(B, T) token ids -> (B, T, width) cross-attention context."""

    def __init__(self, config: TokenConditionerConfig):
        super().__init__()
        self.config = config
        self.tokenizer = Tokenizer(config)
        self.token_embedding = nn.Embedding(config.vocab_size, config.width)
        self.position_embedding = nn.Parameter(torch.zeros(config.max_tokens, config.width))
        self.blocks = nn.ModuleList(TransformerBlock(config.width, config.heads) for _ in range(config.layers))
        self.norm_out = nn.LayerNorm(config.width)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.token_embedding(tokens) + self.position_embedding[: tokens.shape[1]]  # (B, T, W)
        pad_mask = tokens == PAD  # (B, T) True where ignored
        for block in self.blocks:
            x = block(x, pad_mask)
        return self.norm_out(x)

    @property
    def device(self) -> torch.device:
        return self.token_embedding.weight.device

    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        ids = self.tokenizer.batch([self.tokenizer.encode_text(t) for t in texts]).to(self.device)
        return self(ids)

    def encode_layouts(self, layouts: Sequence[Sequence[dict]]) -> torch.Tensor:
        ids = self.tokenizer.batch([self.tokenizer.encode_layout(b) for b in layouts]).to(self.device)
        return self(ids)
