"""The CLIP BPE tokenizer shipped with Kiln (resources/tokenizers/clip), so that a Stable Diffusion
file alone is enough to encode prompts.

The shipped file is OpenAI's `bpe_simple_vocab_16e6.txt.gz` unchanged (MIT; see the LICENSE beside
it). `vocab_and_merges` derives from it the same vocabulary and merge list that Hugging Face's
`vocab.json` / `merges.txt` for openai/clip-vit-large-patch14 hold, and `bundled_clip_tokenizer`
builds transformers' CLIPTokenizer from them, so ids are those of the usual tokenizer. The
tokenizer is built on first use (a quarter of a second), never when a checkpoint loads. No torch.
"""
from __future__ import annotations

import functools
import gzip
import json
import tempfile
from pathlib import Path
from typing import Any

BUNDLED_CLIP_DIR = Path(__file__).resolve().parents[2] / "resources" / "tokenizers" / "clip"
BUNDLED_CLIP_BPE = BUNDLED_CLIP_DIR / "bpe_simple_vocab_16e6.txt.gz"
CLIP_VOCAB_SIZE = 49408
N_MERGES = CLIP_VOCAB_SIZE - 2 * 256 - 2  # byte symbols, the same ending a word, two special tokens
BOS, EOS = "<|startoftext|>", "<|endoftext|>"


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character table, in its order (the first 256 ids).

    Printable Latin-1 bytes stand for themselves; the others (controls, space, soft hyphen) are
    mapped, in byte order, to the characters from U+0100 on.
    """
    kept = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in kept}
    shifted = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + shifted)
            shifted += 1
    return table


def vocab_and_merges(path: str | Path = BUNDLED_CLIP_BPE) -> tuple[dict[str, int], list[str]]:
    """Token -> id and the merges (as "left right" lines, best first) from a CLIP BPE .txt.gz."""
    lines = gzip.decompress(Path(path).read_bytes()).decode("utf-8").split("\n")
    merges = lines[1:1 + N_MERGES]  # line 0 is a version header
    if len(merges) != N_MERGES or any(len(m.split()) != 2 for m in merges):
        raise ValueError(f"{path}: not a CLIP BPE merge list ({len(merges)} merges, {N_MERGES} expected)")
    symbols = list(bytes_to_unicode().values())
    tokens = [*symbols, *(s + "</w>" for s in symbols), *(m.replace(" ", "") for m in merges), BOS, EOS]
    return {token: i for i, token in enumerate(tokens)}, merges


def write_tokenizer_files(folder: Path, path: str | Path = BUNDLED_CLIP_BPE) -> None:
    """vocab.json and merges.txt (Hugging Face's CLIP layout) derived from a CLIP BPE .txt.gz."""
    vocab, merges = vocab_and_merges(path)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")


@functools.lru_cache(maxsize=1)
def bundled_clip_tokenizer() -> Any:
    """transformers' CLIPTokenizer over the shipped vocabulary (built once per process)."""
    from transformers import CLIPTokenizer

    try:  # transformers 5 takes the vocabulary and merges themselves
        vocab, merges = vocab_and_merges()
        pairs: Any = [tuple(m.split()) for m in merges]  # (left, right) pairs, not lines
        tokenizer = CLIPTokenizer(vocab=vocab, merges=pairs)
    except TypeError:  # transformers 4: only files
        with tempfile.TemporaryDirectory(prefix="kiln-clip-") as tmp:
            write_tokenizer_files(Path(tmp))
            tokenizer = CLIPTokenizer.from_pretrained(tmp, local_files_only=True)
    if len(tokenizer) != CLIP_VOCAB_SIZE or tokenizer.bos_token_id != CLIP_VOCAB_SIZE - 2:
        raise RuntimeError(f"the bundled CLIP tokenizer has {len(tokenizer)} tokens, {CLIP_VOCAB_SIZE} expected")
    return tokenizer


class BundledCLIPTokenizer:
    """Kiln's shipped CLIP tokenizer, built when first used; `looked_in` lists where a checkpoint's own
    tokenizer was looked for before falling back to it."""

    vocab_size = CLIP_VOCAB_SIZE
    bos_token_id = CLIP_VOCAB_SIZE - 2
    eos_token_id = CLIP_VOCAB_SIZE - 1

    def __init__(self, looked_in: tuple[str, ...] = ()):
        self.looked_in = looked_in

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return bundled_clip_tokenizer()(*args, **kwargs)

    def __len__(self) -> int:
        return CLIP_VOCAB_SIZE

    def __getattr__(self, name: str) -> Any:  # everything else from the real tokenizer
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(bundled_clip_tokenizer(), name)
