"""Loaded models kept across runs, so tweaking a knob never reloads a checkpoint.

A model is identified by (kind, real path, extra) and remembered together with
the file's size and mtime: a file replaced on disk is loaded again. No torch here.
"""
from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

from engine.errors import UserInputError
from engine.model_budget import DeviceBudget

if TYPE_CHECKING:
    from engine.spec import EngineSettings

T = TypeVar("T")

_Slot = tuple[str, str, tuple]  # (kind, realpath, extra)
_Identity = tuple[int, int]  # (size, mtime_ns)


class ModelStore:
    """Thread-safe memo of loaded models. `get` loads at most once per file version."""

    def __init__(self, budget: DeviceBudget | None = None) -> None:
        self.budget = budget if budget is not None else DeviceBudget()  # what sits on the device
        self._lock = threading.Lock()
        self._entries: dict[_Slot, tuple[_Identity, Any]] = {}
        self._slot_locks: dict[_Slot, threading.Lock] = {}
        self.loads = 0  # how many times a loader ran (for tests and the log panel)

    def get(self, kind: str, path: str, loader: Callable[[], T], extra: tuple = (),
            size_hint: Callable[[], int] | None = None) -> T:
        """The model for `path`, calling `loader()` only if absent or the file changed.

        `extra` separates versions of one file loaded differently (device, dtype, EMA...).
        `size_hint()`: about the bytes it will take on the device (default: the file's size), so
        that room is made before it loads.
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
            if entry is not None:
                self.budget.forget(entry[1])
            if self.budget.device_budget is not None:
                self.budget.make_room(size_hint() if size_hint is not None else st.st_size)
            value = loader()
            self.budget.register(os.path.basename(real), value, loader)
            with self._lock:
                self._entries[slot] = (identity, value)
                self.loads += 1
            return value

    def configure(self, settings: EngineSettings) -> None:
        """Take the budget settings (before the first model loads)."""
        if not self.budget.parts:
            self.budget = DeviceBudget(settings.vram_budget, settings.cpu_offload_budget, settings.low_vram,
                                       settings.sequential_offload)

    @contextmanager
    def using(self, values: Iterable[Any]) -> Iterator[None]:
        """While a node computes with `values`: the models among them stay on the device, unevicted."""
        if not self.budget.parts:
            yield
            return
        from engine import offload

        parts = self.budget.acquire(offload.modules_in(values))
        try:
            yield
        finally:
            self.budget.release(parts)

    def free_device(self, keep: Iterable[Any] = ()) -> int:
        """Move every model part not in use (nor among `keep`'s modules) off the device; bytes freed."""
        if not self.budget.parts:
            return 0
        from engine import offload

        return self.budget.free_device(offload.modules_in(keep))

    def report(self) -> dict[str, Any]:
        """What is loaded where, evictions, peak device memory (engine.model_budget)."""
        return self.budget.report()

    def _lock_for(self, slot: _Slot) -> threading.Lock:
        with self._lock:
            return self._slot_locks.setdefault(slot, threading.Lock())

    def clear(self) -> None:
        """Forget every loaded model (frees their memory once no run holds them)."""
        with self._lock:
            values = [value for _identity, value in self._entries.values()]
            self._entries.clear()
        for value in values:
            self.budget.forget(value)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def loaded(self) -> list[tuple[str, str]]:
        """(kind, real path) of each model held, for display."""
        with self._lock:
            return [(kind, path) for kind, path, _ in self._entries]
