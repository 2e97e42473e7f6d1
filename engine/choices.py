"""The lists that `choices_from` params draw on, and the files their values name.

One provider, held by the registry (`registry.choices`) and filled by the nodes package: the
GUI's menus list from it, the cache hashes the file it resolves and the node opens that same
file, so a name means one file everywhere. No Qt, no torch.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from engine.spec import EngineSettings

BUILTIN_MODELS_DIR = Path(__file__).resolve().parents[1] / "resources" / "models"
CHECKPOINTS = "checkpoints"  # the list of full models (Load Checkpoint), and their folder kind
# Folder kinds: what model_folders(settings, kind) searches. Each is also the name of the subfolder
# that holds that kind in a model folder, as in ComfyUI's models/ folder (so a user may add that).
VAE = "vae"  # standalone autoencoders
LORAS = "loras"  # LoRA / LyCORIS files
EMBEDDINGS = "embeddings"  # textual-inversion embeddings (`embedding:NAME` in a prompt)
FOLDER_KINDS = (CHECKPOINTS, VAE, LORAS, EMBEDDINGS)


def model_folders(settings: EngineSettings | None, kind: str = CHECKPOINTS) -> list[Path]:
    """Folders searched for model files of `kind`, in order: the built-in models, then each of the
    user's model folders (settings.model_dirs, `main.py run --models`), each followed by its
    subfolder named `kind` where there is one. A model folder may so be a flat folder of files
    (whose kinds the lists tell apart by content) or ComfyUI's models/ folder."""
    if kind not in FOLDER_KINDS:
        raise ValueError(f"unknown model folder kind {kind!r} (known: {', '.join(FOLDER_KINDS)})")
    roots = [BUILTIN_MODELS_DIR, *(Path(os.path.expanduser(d)) for d in (settings.model_dirs if settings else ()))]
    folders: list[Path] = []
    for root in roots:
        folders += [root] + ([root / kind] if (root / kind).is_dir() else [])
    return folders


def find_model_file(value: str, settings: EngineSettings | None, kind: str = CHECKPOINTS) -> str | None:
    """A path as given when it exists, else the first folder of `kind` holding `value`; None if none does."""
    if not value:
        return None
    given = Path(os.path.expanduser(value))
    if given.exists():
        return str(given)
    folders = model_folders(settings, kind)
    return next((str(folder / value) for folder in folders if (folder / value).exists()), None)


class ChoiceSource(Protocol):
    def list(self, settings: EngineSettings | None) -> list[str]:
        """The values to offer, in menu order."""

    def resolve(self, value: str, settings: EngineSettings | None) -> str | None:
        """The file a value names, or None when there is none."""


class ModelFolderFiles:
    """Entries of the folders of one kind that `accepts` takes (first folder first, each name once)."""

    def __init__(self, accepts: Callable[[Path], bool], kind: str = CHECKPOINTS):
        self.accepts = accepts
        self.kind = kind

    def list(self, settings: EngineSettings | None) -> list[str]:
        names: list[str] = []
        for folder in model_folders(settings, self.kind):
            if not folder.is_dir():
                continue
            for entry in sorted(folder.iterdir(), key=lambda p: p.name.lower()):
                if entry.name not in names and self.accepts(entry):
                    names.append(entry.name)
        return names

    def resolve(self, value: str, settings: EngineSettings | None) -> str | None:
        return find_model_file(value, settings, self.kind)

    def require(self, value: str, settings: EngineSettings | None, what: str, param: str) -> str:
        """The file `value` names; a UserInputError on `param` naming the folders searched when none is."""
        from engine.errors import UserInputError, quote

        if not value:
            raise UserInputError(f"choose {what} file", param=param)
        found = self.resolve(value, settings)
        if found is None:
            searched = ", ".join(str(d) for d in model_folders(settings, self.kind))
            raise UserInputError(f"{what.split(' ', 1)[-1]} {quote(value)} not found (looked in {searched})",
                                 param=param)
        return found


class ChoiceProvider:
    """Named choice sources: `list` for menus, `resolve` for the file a chosen value names."""

    def __init__(self) -> None:
        self._sources: dict[str, ChoiceSource] = {}

    def register(self, name: str, source: ChoiceSource) -> None:
        if name in self._sources:
            raise ValueError(f"choice list {name!r} is registered twice")
        self._sources[name] = source

    def __contains__(self, name: object) -> bool:
        return name in self._sources

    def list(self, name: str, settings: EngineSettings | None = None) -> list[str]:
        """The values offered for params with `choices_from=name`; none for an unknown list."""
        source = self._sources.get(name)
        return source.list(settings) if source is not None else []

    def resolve(self, name: str, value: str, settings: EngineSettings | None = None) -> str | None:
        """The file `value` names. A list no source claims is still looked up in the model folders:
        the cache must know which file a value names whichever node reads it."""
        source = self._sources.get(name)
        return source.resolve(value, settings) if source is not None else find_model_file(value, settings)
