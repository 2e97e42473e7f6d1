"""CLIP prompts with weights and textual-inversion embeddings, encoded as ComfyUI encodes them.

Each chunk of 77 tokens is encoded; an embedding's vectors take the place of token embeddings at
their positions. When some token weighs other than 1, the empty prompt's chunk
z_empty = encode([BOS, EOS, pad, ...]) is encoded too and each weighted position j becomes
z_empty[j] + (z[j] - z_empty[j]) * weight (ComfyUI's default "comfy" weighting); positions of
weight 1 are left exactly as encoded.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from engine.models.embeddings import embedding_vectors, find_embedding
from engine.models.prompt_weights import (
    Weighted,
    has_weighting,
    pack_chunks,
    prompt_words,
    split_embedding,
    word_tokens,
)
from engine.models.tokenizers import Missing

Replacements = dict[tuple[int, int], torch.Tensor]  # (row, position) -> a token embedding vector


@contextmanager
def token_vectors(embedding: nn.Module, vectors: Replacements | None) -> Iterator[None]:
    """While open, `embedding`'s output carries `vectors` at their (row, position)."""
    if not vectors:
        yield
        return

    def replace(module: nn.Module, args: Any, out: torch.Tensor) -> torch.Tensor:
        out = out.clone()
        for (row, pos), vector in vectors.items():
            out[row, pos] = vector.to(out)
        return out

    handle = embedding.register_forward_hook(replace)
    try:
        yield
    finally:
        handle.remove()


def weighted_groups(text: str, tokenizer: Any, folders: Sequence[Path], width: int) -> list[Weighted[Any]]:
    """Each word's (token id or embedding vector, weight) pairs, in prompt order."""
    unknown = tokenizer.unk_token_id

    def lookup(token: str) -> int | None:
        found = tokenizer.convert_tokens_to_ids(token)
        return None if found is None or found == unknown else int(found)

    def tokenize(word: str) -> list[int]:
        return list(tokenizer(word, add_special_tokens=False)["input_ids"])

    groups: list[Weighted[Any]] = []
    for word, weight in prompt_words(text):
        name, rest = split_embedding(word, lambda n: find_embedding(n, folders) is not None)
        if name is not None:
            groups.append([(vector, weight) for vector in embedding_vectors(name, folders, width)])
        if rest:
            groups.append([(t, weight) for t in word_tokens(rest, lookup, tokenize)])
    return groups


def encode_weighted(cond: Any, text: str, folders: Sequence[Path]) -> torch.Tensor:
    """One prompt -> (chunks * 77, width), weighted and with its embeddings (cond: a CLIPConditioner)."""
    tokenizer = cond.tokenizer
    if isinstance(tokenizer, Missing):
        raise tokenizer.error()
    p = cond.config.params
    empty = cond.token_chunks("")[0]
    width, pad = int(p["width"]), empty[-1]
    rows = pack_chunks(weighted_groups(text, tokenizer, folders, width), empty[0], empty[1], pad,
                       int(p["max_length"]))
    ids = [[tok if isinstance(tok, int) else pad for tok, _ in row] for row in rows]
    vectors = {(r, j): tok for r, row in enumerate(rows) for j, (tok, _) in enumerate(row) if not isinstance(tok, int)}
    weights = torch.tensor([[w for _, w in row] for row in rows], dtype=torch.float32)
    weighted = bool((weights != 1.0).any())
    hidden = cond.encode_ids(torch.tensor(ids + [empty] * weighted), vectors)
    if not weighted:
        return hidden.reshape(-1, hidden.shape[-1])
    z, z_empty = hidden[:-1], hidden[-1:]
    w = weights.to(z.device, z.dtype)[..., None]
    z = torch.where(w != 1.0, z_empty + (z - z_empty) * w, z)
    return z.reshape(-1, z.shape[-1])


def encode_texts(cond: Any, texts: Sequence[str], folders: Sequence[Path]) -> torch.Tensor:
    """Prompts -> (B, 77 * longest, width): weighted prompts as ComfyUI reads them, the others as
    CLIPConditioner reads them; shorter ones padded with the empty prompt's chunk."""
    encoded = []
    for text in texts:
        if has_weighting(text):
            encoded.append(encode_weighted(cond, text, folders))
        else:
            hidden = cond.encode_ids(torch.tensor(cond.token_chunks(text)))
            encoded.append(hidden.reshape(-1, hidden.shape[-1]))
    longest = max(e.shape[0] for e in encoded)
    empty = cond.encode_ids(torch.tensor(cond.token_chunks("")))[0]  # (77, width)
    padded = [torch.cat([e, *[empty] * ((longest - e.shape[0]) // empty.shape[0])]) for e in encoded]
    return torch.stack(padded)
