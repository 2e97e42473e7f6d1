"""How much memory a size-driven node would take, checked before allocating it.

A picture or latent of width x height x batch x channels float32 values that does
not fit in the memory the system has free is refused with the numbers (size,
batch, estimate, available) instead of torch's allocator text or the kernel's
OOM killer; `allocation_message` words an allocation failure that slipped past.
No torch.
"""
from __future__ import annotations

import os

from engine.errors import UserInputError

FLOAT32 = 4
# What one node's own output may take of the memory available: the rest is for its
# neighbours, the models and the copies torch makes on the way.
SHARE = 0.5


def available_bytes() -> int | None:
    """MemAvailable from /proc/meminfo, else free physical pages; None when unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def human(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def check_fits(what: str, width: int, height: int, batch: int, channels: int,
               bytes_per_value: int = FLOAT32, param: str | None = "width",
               available: int | None = None, scale: int = 1) -> None:
    """Raise UserInputError naming the numbers when the tensor cannot fit in available memory.

    `scale`: picture pixels per tensor value on each channel (64 for a latent at 1/8 size)."""
    estimate = int(width) * int(height) * int(batch) * int(channels) * bytes_per_value // max(1, scale)
    free = available_bytes() if available is None else available
    if free is None or estimate <= free * SHARE:
        return
    raise UserInputError(f"{what} of {width}x{height}, batch {batch} ({channels} channels) would need "
                         f"{human(estimate)}, but only {human(free)} of memory is available: "
                         f"lower the size or the batch", param)


def is_allocation_failure(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "alloc" in text)


def allocation_message(params: dict, exc: BaseException) -> str:
    """One line for an allocation failure, with the node's size params where it has them."""
    sizes = [f"{name} {params[name]}" for name in ("width", "height", "batch_size", "scale")
             if isinstance(params.get(name), int)]
    free = available_bytes()
    where = f" ({', '.join(sizes)})" if sizes else ""
    have = f"; {human(free)} of memory is available now" if free is not None else ""
    return (f"ran out of memory{where}{have}: lower the size or the batch, or close other programs "
            f"({'GPU' if 'cuda' in str(exc).lower() else 'system'} memory)")
