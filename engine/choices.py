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
CHECKPOINTS = "checkpoints"  # the list of full models (Load Checkpoint)


def model_folders(settings: EngineSettings | None) -> list[Path]:
    """Folders searched for model files: the built-in models first, then the user's."""
    extra = [Path(os.path.expanduser(d)) for d in (settings.model_dirs if settings else ())]
    return [BUILTIN_MODELS_DIR, *extra]


def find_model_file(value: str, settings: EngineSettings | None) -> str | None:
    """A path as given when it exists, else the first model folder holding `value`; None if none does."""
    if not value:
        return None
    given = Path(os.path.expanduser(value))
    if given.exists():
        return str(given)
    return next((str(folder / value) for folder in model_folders(settings) if (folder / value).exists()), None)


class ChoiceSource(Protocol):
    def list(self, settings: EngineSettings | None) -> list[str]:
        """The values to offer, in menu order."""

    def resolve(self, value: str, settings: EngineSettings | None) -> str | None:
        """The file a value names, or None when there is none."""


class ModelFolderFiles:
    """Entries of the model folders that `accepts` takes (first folder first, each name once)."""

    def __init__(self, accepts: Callable[[Path], bool]):
        self.accepts = accepts

    def list(self, settings: EngineSettings | None) -> list[str]:
        names: list[str] = []
        for folder in model_folders(settings):
            if not folder.is_dir():
                continue
            for entry in sorted(folder.iterdir(), key=lambda p: p.name.lower()):
                if entry.name not in names and self.accepts(entry):
                    names.append(entry.name)
        return names

    def resolve(self, value: str, settings: EngineSettings | None) -> str | None:
        return find_model_file(value, settings)


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
