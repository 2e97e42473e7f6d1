"""Prompt weighting as ComfyUI reads it, and its 77-token chunks. No torch.

`(text)` multiplies the weight of `text` by 1.1, `((text))` by 1.21, `(text:1.3)` sets it to 1.3,
`[text]` divides it by 1.1 (A1111's notation: ComfyUI itself reads brackets as plain text), and
`\\(`, `\\)`, `\\[`, `\\]` are the characters themselves. Groups nest. Unbalanced brackets are read
the way ComfyUI reads them: as text, with the groups after a stray `)` read as text too.

Weighted prompts are split into words at spaces and newlines; each word is tokenized on its own
(or is an `embedding:NAME`), and words are packed whole into chunks of 75 tokens between BOS and
EOS (a word of 8 tokens or more may be split across chunks), as ComfyUI packs them.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

UP = 1.1  # (text) multiplies, [text] divides
EMBEDDING_PREFIX = "embedding:"
SPLIT_AT = 8  # words of this many tokens or more may be split between chunks
_ESCAPED = {"\\(": "\0o", "\\)": "\0c", "\\[": "\0O", "\\]": "\0C"}  # hidden from the parser
_OPEN, _CLOSE = "([", ")]"

T = TypeVar("T")
Weighted = list[tuple[T, float]]


def has_weighting(text: str) -> bool:
    """True when a prompt holds weighting syntax or an embedding (else it is read as before)."""
    return any(c in text for c in "()[]") or EMBEDDING_PREFIX in text


def weighted_segments(text: str) -> list[tuple[str, float]]:
    """The prompt as (text, weight) runs, in order, escapes resolved."""
    hidden = text
    for escape, mark in _ESCAPED.items():
        hidden = hidden.replace(escape, mark)
    return [(_reveal(run), weight) for run, weight in _segments(hidden, 1.0) if run]


def _reveal(text: str) -> str:
    for escape, mark in _ESCAPED.items():
        text = text.replace(mark, escape[1])
    return text


def _segments(text: str, weight: float) -> list[tuple[str, float]]:
    out: list[tuple[str, float]] = []
    for part in _top_level(text):
        inner, inner_weight = _group(part, weight)
        out += _segments(inner, inner_weight) if inner is not None else [(part, weight)]
    return out


def _top_level(text: str) -> list[str]:
    """Plain runs and whole bracket groups at depth 0. A closing bracket at depth 0 sends the depth
    below 0, so what follows stays in one plain run until the depth comes back (ComfyUI's reading)."""
    parts: list[str] = []
    current, depth = "", 0
    for char in text:
        if char in _OPEN and depth == 0:
            if current:
                parts.append(current)
            current = ""
        if char in _OPEN:
            depth += 1
        elif char in _CLOSE:
            depth -= 1
        current += char
        if char in _CLOSE and depth == 0:
            parts.append(current)
            current = ""
    if current:
        parts.append(current)
    return parts


def _group(part: str, weight: float) -> tuple[str | None, float]:
    """A group's inside and weight; (None, weight) for plain text."""
    if len(part) < 2:
        return None, weight
    if part[0] == "[" and part[-1] == "]":
        return part[1:-1], weight / UP
    if part[0] != "(" or part[-1] != ")":
        return None, weight
    inner = part[1:-1]
    colon = inner.rfind(":")
    if colon > 0:
        explicit = _number(inner[colon + 1:])
        if explicit is not None:
            return inner[:colon], explicit
    return inner, weight * UP


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def prompt_words(text: str) -> list[tuple[str, float]]:
    """(word, weight) for each word of each weighted run: split at spaces and newlines."""
    return [(word, weight) for run, weight in weighted_segments(text)
            for word in run.replace("\n", " ").split(" ") if word]


def word_tokens(word: str, lookup: Callable[[str], int | None], tokenize: Callable[[str], Sequence[int]]
                ) -> list[int]:
    """A word's token ids: the whole word when the vocabulary has it as a word (`lookup` of
    "word</w>" gives its id, else None), else its BPE pieces."""
    whole = lookup(word + "</w>")
    return [whole] if whole is not None else list(tokenize(word))


def split_embedding(word: str, exists: Callable[[str], bool]) -> tuple[str | None, str]:
    """(embedding name, text left over) for an `embedding:NAME` word; (None, word) for other words.
    When NAME is not found but is without its trailing commas, the commas are left over as text."""
    if not word.startswith(EMBEDDING_PREFIX):
        return None, word
    name = word[len(EMBEDDING_PREFIX):]
    bare = name.rstrip(",")
    if not exists(name) and bare != name and exists(bare):
        return bare, name[len(bare):]
    return name, ""


def pack_chunks(groups: Sequence[Weighted[Any]], bos: int, eos: int, pad: int,
                length: int = 77) -> list[Weighted[Any]]:
    """Words' weighted tokens packed into rows [BOS, tokens..., EOS, pad...] of `length`.

    A word that does not fit in the current row starts the next one, unless it has SPLIT_AT
    tokens or more: then it fills the row and goes on in the next. Specials weigh 1.
    """
    room = length - 2
    rows: list[Weighted[Any]] = []
    current: Weighted[Any] = []

    def close() -> None:
        rows.append([(bos, 1.0), *current, (eos, 1.0)] + [(pad, 1.0)] * (room - len(current)))

    for group in groups:
        rest = list(group)
        while rest:
            if len(current) + len(rest) <= room:
                current, rest = current + rest, []
                continue
            if len(group) >= SPLIT_AT:
                take = room - len(current)
                current, rest = current + rest[:take], rest[take:]
            close()
            current = []
    close()
    return rows
