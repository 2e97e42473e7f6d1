"""Tokenizers: CLIP BPE and BERT WordPiece found locally (never downloaded), and a word vocabulary.

CLIP and BERT tokenizers are looked up in folders beside the checkpoint first,
then in the local Hugging Face cache with `local_files_only=True`. CLIP then
falls back to the tokenizer Kiln ships (engine.models.clip_vocab): a folder
beside the checkpoint may hold a fine-tune's own vocabulary, so it comes first,
and the HF cache holds the same vocabulary as the shipped file, so its order
does not change ids (it is looked at first only because that costs a few file
checks, while the shipped one takes a quarter of a second to build). When none
is found the conditioner still loads; encoding text then raises a message that
names what is missing and where it was looked for.
"""
from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import KilnError, UserInputError, clip, quote_list
from engine.models.clip_vocab import BundledCLIPTokenizer

# Hugging Face repos to look for in the local cache; "repo:subfolder" for pipelines.
CLIP_REPOS = ("openai/clip-vit-large-patch14", "laion/CLIP-ViT-H-14-laion2B-s32B-b79K",
              "stable-diffusion-v1-5/stable-diffusion-v1-5:tokenizer", "runwayml/stable-diffusion-v1-5:tokenizer",
              "stabilityai/stable-diffusion-2-1:tokenizer", "stabilityai/stable-diffusion-2-1-base:tokenizer")
BERT_REPOS = ("bert-base-uncased",)
CLIP_CHUNK = 75  # tokens per chunk between BOS and EOS (77 positions)


@dataclass
class Missing:
    """A tokenizer that was not found: encoding raises a clear error."""

    what: str
    looked_in: tuple[str, ...]

    def error(self) -> KilnError:
        where = "; ".join(self.looked_in) or "nowhere"
        return KilnError(f"no {self.what} tokenizer found (looked in: {where}); put its files "
                         f"(vocab.json and merges.txt for CLIP, vocab.txt for BERT) in a folder "
                         f"named 'tokenizer' beside the checkpoint")


def tokenizer_dirs(checkpoint: str | os.PathLike) -> list[Path]:
    """Folders beside a checkpoint that may hold its tokenizer, in search order."""
    p = Path(checkpoint)
    if p.is_dir():
        return [p / "tokenizer"]
    return [p.parent / f"{p.stem}.tokenizer", p.parent / f"{p.stem}_tokenizer", p.parent / "tokenizer"]


def find_clip_tokenizer(dirs: Sequence[Path], repos: Sequence[str] = CLIP_REPOS) -> Any:
    """A transformers CLIPTokenizer from the first folder with vocab.json + merges.txt, else the HF cache,
    else the shipped one (built when first used)."""
    found = _find(_LazyCLIPTokenizer, "CLIP", dirs, ("vocab.json", "merges.txt"), repos)
    return BundledCLIPTokenizer(found.looked_in) if isinstance(found, Missing) else found


class _LazyCLIPTokenizer:
    """Imports transformers (seconds) only when tokenizer files were found, not on every checkpoint load."""

    @staticmethod
    def from_pretrained(folder: str, **kwargs: Any) -> Any:
        from transformers import CLIPTokenizer

        return CLIPTokenizer.from_pretrained(folder, **kwargs)


def clip_tokenizer_for(tokenizer: Any, vocab: int) -> Any:
    """The tokenizer a CLIP text model of `vocab` tokens uses: the one found, except that Kiln's
    shipped 49408-token one does not fit a model of another size (then: Missing, saying so)."""
    if tokenizer is None:
        return Missing("CLIP", ())
    if isinstance(tokenizer, BundledCLIPTokenizer) and vocab != tokenizer.vocab_size:
        shipped = f"Kiln's own CLIP tokenizer ({tokenizer.vocab_size} tokens; this model has {vocab})"
        return Missing("CLIP", (*tokenizer.looked_in, shipped))
    return tokenizer


def tokenizer_report(found: Any, used: Any) -> str:
    """A load report's word for the tokenizer: missing, bundled (Kiln's own CLIP one), found or none."""
    if isinstance(found, BundledCLIPTokenizer):
        return "missing" if isinstance(used, Missing) else "bundled"
    return "missing" if isinstance(found, Missing) else ("found" if found else "none")


def find_bert_tokenizer(dirs: Sequence[Path], repos: Sequence[str] = BERT_REPOS) -> Any:
    # a lazy export: mypy does not see it, and its module moved between transformers 4 and 5
    from transformers import BertTokenizerFast  # type: ignore[attr-defined]

    return _find(BertTokenizerFast, "BERT", dirs, ("vocab.txt",), repos)


def _find(cls: Any, what: str, dirs: Sequence[Path], files: tuple[str, ...], repos: Sequence[str]) -> Any:
    looked: list[str] = []
    for folder in dirs:
        looked.append(str(folder))
        if all((folder / f).is_file() for f in files) or (folder / "tokenizer.json").is_file():
            return _load(cls, what, folder)
    for repo in repos:
        looked.append(f"HF cache {repo}")
        cached = _cached_snapshot(repo, files)
        if cached is not None:
            return _load(cls, what, cached)
    return Missing(what, tuple(looked))


def _load(cls: Any, what: str, folder: Path) -> Any:
    try:
        tokenizer = cls.from_pretrained(str(folder), local_files_only=True)
    except Exception as exc:
        raise KilnError(f"{folder}: cannot read the {what} tokenizer ({str(exc).splitlines()[0]})") from exc
    if len(tokenizer) <= 3:  # transformers returns an empty tokenizer for files it could not use
        raise KilnError(f"{folder}: the {what} tokenizer files hold no vocabulary")
    return tokenizer


def _cached_snapshot(repo: str, files: tuple[str, ...]) -> Path | None:
    """The local HF cache folder holding all `files` of `repo` (no network), or None."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    repo, _, sub = repo.partition(":")
    found = [try_to_load_from_cache(repo, f"{sub}/{f}" if sub else f) for f in files]
    paths = [p for p in found if isinstance(p, str)]
    return Path(paths[0]).parent if len(paths) == len(files) else None


def clip_chunks(tokenizer: Any, text: str, max_length: int = 77, pad: int | str = "eos") -> list[list[int]]:
    """Token ids of `text` in chunks of 75, each [BOS] + chunk + [EOS] padded to max_length.

    Long prompts become several chunks whose encodings are concatenated along
    the sequence axis; the empty prompt is one chunk.
    """
    if isinstance(tokenizer, Missing):
        raise tokenizer.error()
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    pad_id = eos if pad == "eos" else int(pad)
    body = max_length - 2
    pieces = [ids[i:i + body] for i in range(0, len(ids), body)] or [[]]
    return [[bos, *piece, eos] + [pad_id] * (body - len(piece)) for piece in pieces]


def bert_ids(tokenizer: Any, texts: Sequence[str], max_length: int) -> list[list[int]]:
    """The LDM BERTTokenizer: [CLS] ... [SEP], truncated and padded to max_length."""
    if isinstance(tokenizer, Missing):
        raise tokenizer.error()
    out = tokenizer(list(texts), truncation=True, max_length=max_length, padding="max_length")
    return [list(ids) for ids in out["input_ids"]]


class WordTokenizer:
    """Lower-case words to ids from a fixed vocabulary; ids 0, 1, 2 are <pad>, <bos>, <eos>.

    A vocabulary file is JSON: {"words": [...], "max_length": n}.
    """

    SPECIALS = ("<pad>", "<bos>", "<eos>")

    def __init__(self, words: Sequence[str], max_length: int):
        self.words = tuple(words)
        self.max_length = max_length
        self._ids = {w: i + len(self.SPECIALS) for i, w in enumerate(self.words)}

    @property
    def vocab_size(self) -> int:
        return len(self.SPECIALS) + len(self.words)

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> WordTokenizer:
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
            return cls(list(data["words"]), int(data["max_length"]))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise KilnError(f"{path}: not a word vocabulary (JSON with 'words' and 'max_length'): {exc}") from exc

    def to_file(self, path: str | os.PathLike) -> None:
        with open(path, "w", encoding="utf-8") as f:
            json.dump({"words": list(self.words), "max_length": self.max_length}, f, indent=1)

    def encode(self, text: str) -> list[int]:
        words = text.lower().replace(",", " ").replace(".", " ").split()
        unknown = sorted({w for w in words if w not in self._ids}, key=words.index)
        if unknown:
            raise UserInputError(f"unknown word{'s' if len(unknown) > 1 else ''} {quote_list(unknown, 8)}; "
                                 f"this model knows: {_known(self.words)}", param="text")
        if len(words) + 2 > self.max_length:
            raise UserInputError(f"the prompt has {len(words)} words; this model reads at most "
                                 f"{self.max_length - 2}", param="text")
        ids = [1, *(self._ids[w] for w in words), 2]
        return ids + [0] * (self.max_length - len(ids))


def _known(words: Sequence[str], shown: int = 24) -> str:
    """The first words of a vocabulary, space-separated, and how many more it has."""
    text = " ".join(clip(word, 20) for word in words[:shown])
    return text + (f" … ({len(words) - shown} more)" if len(words) > shown else "")
