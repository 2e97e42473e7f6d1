"""The device memory budget of the loaded models: what sits on the device, in CPU memory, or nowhere.

Each loaded checkpoint is split into parts (UNet, autoencoder, conditioner), each with its size
in bytes as it sits on the device. The device holds at most `device_budget` bytes of parts (the
user's setting, else the device's free memory when the first model arrived, less a reserve; no
limit on the CPU unless set). A part that must come onto the device (loaded, or used by a
node) first pushes the least recently used idle parts off to CPU memory; CPU memory holds at most
`cpu_budget` bytes of them, and a part pushed beyond that is dropped: its tensors are freed in
place and reloaded from its file when a node next uses it. A part in use (a node of some run is
computing with it) is never moved. Low-VRAM mode (on, or automatic when one checkpoint's parts
do not fit together) keeps only the parts in use on the device; sequential mode streams the
UNet's blocks through it one at a time. No torch here: engine.offload does the moving.
"""
from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from engine.errors import KilnError

RESERVE_FRACTION = 0.1  # of the free device memory, kept for activations and torch's own buffers
MIN_RESERVE = 1024**3
LOW_VRAM_MODES = ("auto", "on", "off")


@dataclass
class Part:
    model: str  # the checkpoint's file name
    name: str  # unet | autoencoder | conditioner
    module: Any  # the nn.Module moved, dropped and restored in place
    nbytes: int
    reload: Callable[[], Any]  # loads the whole checkpoint again (for a dropped part)
    where: str = "device"  # device | cpu | dropped | streamed
    users: int = 0
    last_used: int = 0
    stream: Any = None  # engine.offload.SequentialStream while streamed

    def describe(self) -> dict[str, Any]:
        return {"model": self.model, "part": self.name, "bytes": self.nbytes, "where": self.where}


class DeviceBudget:
    """Thread-safe accounting and LRU eviction of model parts between the device and CPU memory."""

    def __init__(self, device_budget: int | None = None, cpu_budget: int | None = None,
                 low_vram: str = "auto", sequential: bool = False):
        if low_vram not in LOW_VRAM_MODES:
            raise KilnError(f"low_vram must be one of {', '.join(LOW_VRAM_MODES)}, not {low_vram!r}")
        self.device_budget, self.cpu_budget = device_budget, cpu_budget
        self.low_vram, self.sequential = low_vram, sequential
        self.low_vram_active = low_vram == "on"
        self.device: str | None = None
        self.parts: dict[int, Part] = {}  # id(module) -> part
        self.evictions: list[dict[str, Any]] = []
        self.peak_bytes = 0
        self.stream_transfers = 0  # block moves of sequential mode, over all its runs
        self._tick = 0
        self._lock = threading.RLock()

    # --- accounting --------------------------------------------------------------
    def bytes_on(self, where: str) -> int:
        with self._lock:
            return sum(self._device_share(p) if where == "device" else p.nbytes
                       for p in self.parts.values() if p.where == where or (where == "device" and p.stream))

    def _device_share(self, part: Part) -> int:
        if part.stream is not None:
            return part.stream.resident_bytes() + part.stream.largest_block_bytes()
        return part.nbytes

    def _note_peak(self) -> None:
        self.peak_bytes = max(self.peak_bytes, self.bytes_on("device"))

    def _touch(self, part: Part) -> None:
        self._tick += 1
        part.last_used = self._tick

    # --- loading -----------------------------------------------------------------
    def make_room(self, nbytes: int) -> None:
        """Before a load of about `nbytes`: push idle parts off until it would fit."""
        with self._lock:
            self._evict_for(nbytes, keep=set())

    def register(self, model: str, value: Any, reload: Callable[[], Any]) -> None:
        """A checkpoint just loaded onto the device: account its parts, then keep to the budget."""
        if "torch" not in sys.modules:
            return  # a value from a loader that never imported torch holds no modules
        from engine import offload

        with self._lock:
            new = [Part(model, name, module, offload.module_bytes(module), reload)
                   for name, module in offload.named_parts(value)]
            self._settle_device(new, offload)
            for part in new:
                self.parts[id(part.module)] = part
                self._touch(part)
            self._note_peak()
            together = sum(p.nbytes for p in new)
            if self.low_vram == "auto" and self.device_budget is not None and together > self.device_budget:
                self.low_vram_active = True
            self._evict_for(0, keep=set())

    def _settle_device(self, new: list[Part], offload: Any) -> None:
        """The device is known once the first model arrives; so is the automatic budget."""
        if self.device is not None or not new:
            return
        self.device = offload.device_of(new[0].module)
        if self.device_budget is None:
            free = offload.free_device_bytes(self.device)
            if free is not None:
                free += sum(p.nbytes for p in new)  # as it was before this first load
                self.device_budget = max(0, free - max(MIN_RESERVE, int(free * RESERVE_FRACTION)))

    def forget(self, value: Any) -> None:
        """A checkpoint the store let go of (its file changed, or the store was cleared)."""
        if not self.parts:
            return
        from engine import offload

        with self._lock:
            for _name, module in offload.named_parts(value):
                self.parts.pop(id(module), None)

    # --- use ---------------------------------------------------------------------
    def acquire(self, modules: Iterable[Any]) -> list[Part]:
        """Mark the parts among `modules` in use and bring them onto the device."""
        with self._lock:
            parts = list({id(p): p for m in modules if (p := self.parts.get(id(m))) is not None}.values())
            for part in parts:
                part.users += 1
            try:
                for part in parts:
                    self._fetch(part, keep={id(p) for p in parts})
            except BaseException:
                self.release(parts)
                raise
            self._note_peak()
            return parts

    def release(self, parts: list[Part]) -> None:
        with self._lock:
            for part in parts:
                part.users -= 1
                if part.users == 0 and part.stream is not None:
                    self._end_stream(part)

    def _fetch(self, part: Part, keep: set[int]) -> None:
        from engine import offload

        self._touch(part)
        if self.low_vram_active:
            self._evict_all(keep)
        if part.where == "dropped":
            self._reload(part, offload)
        streams = self.sequential and part.name == "unet" and self.device
        if streams and part.where == "device":  # its blocks wait in CPU memory between their turns
            offload.move(part.module, "cpu")
            part.where = "cpu"
        if part.where == "cpu" and streams:
            part.stream = offload.SequentialStream(part.module, self.device or "cpu").attach()
            part.where = "streamed"
        elif part.where == "cpu":
            self._evict_for(part.nbytes, keep)
            offload.move(part.module, self.device or "cpu")
            part.where = "device"
        self._evict_for(0, keep)

    def _reload(self, part: Part, offload: Any) -> None:
        fresh = dict(offload.named_parts(part.reload()))
        try:
            offload.restore(part.module, fresh[part.name])
        except KeyError:
            raise KilnError(f"{part.model} changed on disk since its {part.name} was dropped from memory: "
                            f"run again to load the new file") from None
        part.where = "device"  # the loader put the fresh tensors there

    def _end_stream(self, part: Part) -> None:
        from engine import offload

        part.stream.detach()
        self.stream_transfers += part.stream.transfers
        part.stream = None
        offload.move(part.module, "cpu")
        part.where = "cpu"

    # --- eviction ----------------------------------------------------------------
    def _idle_on_device(self, keep: set[int]) -> list[Part]:
        found = [p for p in self.parts.values() if p.where == "device" and p.users == 0 and id(p.module) not in keep]
        return sorted(found, key=lambda p: p.last_used)

    def _evict_for(self, nbytes: int, keep: set[int]) -> None:
        if self.device_budget is None:
            return
        for part in self._idle_on_device(keep):
            if self.bytes_on("device") + nbytes <= self.device_budget:
                return
            self._evict(part)

    def _evict_all(self, keep: set[int]) -> None:
        for part in self._idle_on_device(keep):
            self._evict(part)

    def free_device(self, keep: Iterable[Any] = ()) -> int:
        """Push every idle part off the device (after an out-of-memory error); the bytes freed."""
        with self._lock:
            before = self.bytes_on("device")
            self._evict_all({id(m) for m in keep})
            return before - self.bytes_on("device")

    def _evict(self, part: Part) -> None:
        """To CPU memory when its budget allows (dropping older parts there first), else dropped."""
        from engine import offload

        if self._make_cpu_room(part.nbytes):
            offload.move(part.module, "cpu")
            part.where = "cpu"
        else:
            offload.drop(part.module)
            part.where = "dropped"
        self.evictions.append({"model": part.model, "part": part.name, "bytes": part.nbytes, "to": part.where})

    def _make_cpu_room(self, nbytes: int) -> bool:
        from engine import offload

        if self.cpu_budget is None:
            return True
        if nbytes > self.cpu_budget:
            return False
        idle = sorted((p for p in self.parts.values() if p.where == "cpu" and p.users == 0),
                      key=lambda p: p.last_used)
        for old in idle:
            if self.bytes_on("cpu") + nbytes <= self.cpu_budget:
                break
            offload.drop(old.module)
            old.where = "dropped"
            self.evictions.append({"model": old.model, "part": old.name, "bytes": old.nbytes, "to": "dropped"})
        return self.bytes_on("cpu") + nbytes <= self.cpu_budget

    # --- reporting ---------------------------------------------------------------
    def report(self) -> dict[str, Any]:
        """What is loaded where, the evictions so far, and the peak device memory."""
        with self._lock:
            device = self.device
            return {"device": device, "budget_bytes": self.device_budget, "cpu_budget_bytes": self.cpu_budget,
                    "low_vram": self.low_vram_active, "sequential": self.sequential,
                    "stream_transfers": self.stream_transfers,
                    "parts": [p.describe() for p in self.parts.values()],
                    "evictions": list(self.evictions), "peak_model_bytes": self.peak_bytes,
                    "peak_device_bytes": _peak_device_bytes(device)}


def _peak_device_bytes(device: str | None) -> int | None:
    if device is None:
        return None  # no model loaded: torch need not be imported
    from engine import offload

    return offload.peak_device_bytes(device)
