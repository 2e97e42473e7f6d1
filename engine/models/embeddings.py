"""Textual-inversion embeddings: `embedding:NAME` in a prompt, found in the embeddings folders.

NAME is a file name with or without its extension (.safetensors, .pt, .bin), in one of the folders
or their subfolders, as ComfyUI finds it. Files are read with safetensors or with
torch.load(weights_only=True) (no pickled code runs). Formats: A1111 ({"string_to_param": {"*":
vectors}}), sd-scripts ({"emb_params": vectors}), diffusers ({"<token>": vector}) and files with one
entry per text encoder ("clip_l", "clip_g", ...): the vectors whose width is the text encoder's.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from engine.errors import UserInputError, quote

EMBEDDING_EXTS = (".safetensors", ".pt", ".bin")
_PREFERRED_KEYS = ("emb_params", "clip_l", "clip_h", "clip_g", "*")


def find_embedding(name: str, folders: Sequence[Path]) -> Path | None:
    """The file `name` names in the folders or their subfolders (first folder first), or None."""
    if not name:
        return None
    for top in folders:
        for folder in _with_subfolders(Path(top)):
            found = _in_folder(folder, name)
            if found is not None:
                return found
    return None


def _with_subfolders(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return [folder, *sorted(Path(root) / d for root, dirs, _ in os.walk(folder) for d in dirs)]


def _in_folder(folder: Path, name: str) -> Path | None:
    path = (folder / name).resolve()
    try:
        if os.path.commonpath([path, folder.resolve()]) != str(folder.resolve()):
            return None  # `embedding:../x` names nothing outside the folders
    except ValueError:
        return None
    for candidate in (path, *(path.with_name(path.name + ext) for ext in EMBEDDING_EXTS)):
        if candidate.is_file():
            return candidate
    return None


def load_embedding(path: Path, width: int) -> torch.Tensor:
    """The (n, width) vectors of an embedding file, in float32 on the CPU."""
    data = _read(path)
    tensors = _tensors(data)
    matching = [(k, t) for k, t in tensors if t.ndim >= 1 and t.shape[-1] == width]
    if not matching:
        widths = sorted({int(t.shape[-1]) for _, t in tensors if t.ndim >= 1})
        raise UserInputError(f"embedding {path.name}: its vectors are {_widths(widths)} wide; this text "
                             f"encoder takes {width} (an embedding made for another model?)", param="text")
    matching.sort(key=lambda kt: _PREFERRED_KEYS.index(kt[0]) if kt[0] in _PREFERRED_KEYS else len(_PREFERRED_KEYS))
    return matching[0][1].detach().reshape(-1, width).float().cpu()


def _widths(widths: list[int]) -> str:
    return " or ".join(map(str, widths)) if widths else "not vectors"


def _read(path: Path) -> Any:
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path), device="cpu")
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the user's, and said so in one line
        reason = " ".join(str(exc).split())[:200]
        raise UserInputError(f"embedding {path.name}: cannot read it as weights ({reason})", param="text") from None


def _tensors(data: Any) -> list[tuple[str, torch.Tensor]]:
    """(key, tensor) candidates: A1111's string_to_param, else the top-level tensors (lists flattened)."""
    if isinstance(data, dict) and isinstance(data.get("string_to_param"), dict):
        data = data["string_to_param"]
    if isinstance(data, torch.Tensor):
        return [("", data)]
    if isinstance(data, dict):
        return [(str(k), v) for k, v in data.items() if isinstance(v, torch.Tensor)]
    if isinstance(data, (list, tuple)):
        return [kt for item in data for kt in _tensors(item)]
    return []


def embedding_vectors(name: str, folders: Sequence[Path], width: int) -> torch.Tensor:
    """The vectors `embedding:NAME` stands for; a missing one is an error naming where it was looked for."""
    path = find_embedding(name, folders)
    if path is None:
        where = ", ".join(str(f) for f in folders) or "no folders"
        raise UserInputError(f"embedding {quote(name)} not found (looked for {name}, {name}.safetensors, .pt and "
                             f".bin in {where} and their subfolders; put it in an 'embeddings' folder inside a "
                             f"model folder)", param="text")
    return load_embedding(path, width)
