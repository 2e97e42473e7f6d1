"""Recovering from the device running out of memory in the middle of a node.

A decode that runs out retries in tiles, halving the tile down to MIN_TILE latent pixels; a
sampling run that runs out has the idle models moved off the device (engine.model_budget) and
retries once. Each retry starts after the failed attempt's exception is gone, so the memory its
frames held is free. When nothing helps, the node fails with one line naming what it needed
(size, batch, precision) and what to change. No torch at import.
"""
from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from engine.errors import UserInputError
from engine.memory import human

T = TypeVar("T")

FIRST_TILE = 64  # latent pixels (512 px at factor 8): the first tiled retry of an untiled decode
MIN_TILE = 8


def is_device_oom(exc: BaseException) -> bool:
    """torch's out-of-memory error of a GPU (CUDA or MPS); MemoryError of the CPU is not one."""
    torch = sys.modules.get("torch")
    oom_type = getattr(torch, "OutOfMemoryError", None) or getattr(getattr(torch, "cuda", None),
                                                                   "OutOfMemoryError", None)
    if oom_type is not None and isinstance(exc, oom_type):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and "out of memory" in text and ("cuda" in text or "mps" in text)


@dataclass(frozen=True)
class Workload:
    """What a node was computing, for the message when memory runs out."""

    what: str  # "decoding" | "sampling"
    latent_shape: tuple[int, ...]  # (batch, channels, h, w)
    factor: int  # image pixels per latent pixel
    precision: str  # "float16", ...
    device: str = ""

    def describe(self) -> str:
        batch, _channels, h, w = self.latent_shape
        return (f"{self.what} a {w}x{h} latent ({w * self.factor}x{h * self.factor} px), batch {batch}, "
                f"in {self.precision}")


def _free_now(device: str) -> str:
    if "torch" not in sys.modules or not device.startswith("cuda"):
        return ""
    from engine import offload

    free = offload.free_device_bytes(device)
    return f" ({human(free)} of device memory free now)" if free is not None else ""


def _release(device: str) -> None:
    if "torch" in sys.modules and device:
        from engine import offload

        offload.empty_device_cache(device)


def decode_with_fallback(decode: Callable[[int | None], T], tile: int | None, work: Workload) -> T:
    """decode(tile) (tile in latent pixels, None = automatic); out of memory: again in smaller tiles."""
    side = max(work.latent_shape[-2:])
    while True:
        try:
            return decode(tile)
        except Exception as exc:
            if not is_device_oom(exc):
                raise
        _release(work.device)
        if tile is not None and tile <= MIN_TILE:
            raise UserInputError(f"{work.describe()} ran out of device memory even in tiles of "
                                 f"{tile * work.factor} px{_free_now(work.device)}: lower the size or the "
                                 f"batch, or close other programs using the GPU")
        tile = min(FIRST_TILE, max(MIN_TILE, side // 2)) if tile is None else max(MIN_TILE, tile // 2)


def sample_with_retry(run: Callable[[], T], free_models: Callable[[], Any], work: Workload) -> T:
    """run(); out of memory: move the idle models off the device, empty the cache, run once more."""
    try:
        return run()
    except Exception as exc:
        if not is_device_oom(exc):
            raise
    free_models()
    _release(work.device)
    try:
        return run()
    except Exception as exc:
        if not is_device_oom(exc):
            raise
    raise UserInputError(f"{work.describe()} ran out of device memory, also after moving the other models "
                         f"off the device{_free_now(work.device)}: lower the size or the batch, or run with "
                         f"--low-vram on or --sequential-offload (or the fp16 precision if it is fp32)")


def _precision(dtype: Any) -> str:
    return str(dtype).removeprefix("torch.")


def sampling_workload(model: Any, samples: Any, autoencoder: Any = None) -> Workload:
    """The Workload of a Sampler node: its latent, the model's precision and device."""
    factor = getattr(getattr(autoencoder, "capabilities", None), "factor", None)
    factor = factor or getattr(getattr(model, "capabilities", None), "latent_factor", None) or 8
    return Workload("sampling", tuple(samples.shape), int(factor), _precision(getattr(model, "dtype", "")),
                    str(getattr(model, "device", "")))


def decoding_workload(autoencoder: Any, samples: Any) -> Workload:
    factor = getattr(getattr(autoencoder, "capabilities", None), "factor", None) or 8
    return Workload("decoding", tuple(samples.shape), int(factor), _precision(getattr(autoencoder, "dtype", "")),
                    str(getattr(autoencoder, "device", "")))
