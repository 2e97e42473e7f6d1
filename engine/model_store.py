"""Loaded models kept across runs, so tweaking a knob never reloads a checkpoint.

A model is identified by (kind, real path, extra) and remembered together with
the file's size and mtime: a file replaced on disk is loaded again. No torch here.
"""
from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from engine.errors import UserInputError

T = TypeVar("T")

_Slot = tuple[str, str, tuple]  # (kind, realpath, extra)
_Identity = tuple[int, int]  # (size, mtime_ns)


class ModelStore:
    """Thread-safe memo of loaded models. `get` loads at most once per file version."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[_Slot, tuple[_Identity, Any]] = {}
        self._slot_locks: dict[_Slot, threading.Lock] = {}
        self.loads = 0  # how many times a loader ran (for tests and the log panel)

    def get(self, kind: str, path: str, loader: Callable[[], T], extra: tuple = ()) -> T:
        """The model for `path`, calling `loader()` only if absent or the file changed.

        `extra` separates versions of one file loaded differently (device, dtype, EMA...).
        """
        real = os.path.realpath(path)
        try:
            st = os.stat(real)
        except OSError as exc:
            raise UserInputError(f"cannot read model file {path}: {exc.strerror or exc}") from exc
        slot: _Slot = (kind, real, tuple(extra))
        identity: _Identity = (st.st_size, st.st_mtime_ns)
        with self._lock_for(slot):
            entry = self._entries.get(slot)
            if entry is not None and entry[0] == identity:
                return entry[1]
            with self._lock:
                self._entries.pop(slot, None)  # release the old version before loading the new
            value = loader()
            with self._lock:
                self._entries[slot] = (identity, value)
                self.loads += 1
            return value

    def _lock_for(self, slot: _Slot) -> threading.Lock:
        with self._lock:
            return self._slot_locks.setdefault(slot, threading.Lock())

    def clear(self) -> None:
        """Forget every loaded model (frees their memory once no run holds them)."""
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def loaded(self) -> list[tuple[str, str]]:
        """(kind, real path) of each model held, for display."""
        with self._lock:
            return [(kind, path) for kind, path, _ in self._entries]
