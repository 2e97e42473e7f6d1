"""The torch side of the device memory budget (engine.model_budget): sizes, moves, drops, streaming.

A model part is an `nn.Module` held by a loaded checkpoint (the UNet, the autoencoder, the
conditioner). Moving one between the device and CPU memory is `Module.to`, which copies the
bytes as they are: a part moved back computes bit-identical results. Dropping one empties its
tensors in place (the module object stays, so every value that holds it stays valid) and
`restore` fills them again from a fresh load. `SequentialStream` moves each UNet block to the
device just before its forward and back just after, for cards that cannot hold the UNet.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import nn

from engine.sampling.block_watch import unet_blocks

PART_ATTRIBUTES = ("model", "first_stage", "conditioner", "unet")  # where a value keeps its modules


def module_bytes(module: nn.Module) -> int:
    """Bytes of the module's parameters and buffers (each storage counted once)."""
    seen: set[int] = set()
    total = 0
    for tensor in _tensors(module):
        if tensor.device.type == "meta" or tensor.numel() == 0:
            continue
        key = tensor.untyped_storage().data_ptr()
        if key not in seen:
            seen.add(key)
            total += tensor.untyped_storage().nbytes()
    return total


def _tensors(module: nn.Module) -> Iterator[torch.Tensor]:
    yield from module.parameters()
    yield from module.buffers()


def named_parts(value: Any) -> list[tuple[str, nn.Module]]:
    """The separately budgeted modules of a loaded checkpoint: (name, module) of UNet, autoencoder,
    conditioner (a LatentDiffusionModel counts as its UNet, a FirstStage as its network)."""
    parts: list[tuple[str, nn.Module]] = []
    for name in ("model", "first_stage", "conditioner"):
        found = _module_of(getattr(value, name, None))
        if found is not None:
            parts.append(("unet" if name == "model" else "autoencoder" if name == "first_stage" else name, found))
    if not parts and _module_of(value) is not None:
        parts.append(("model", _module_of(value)))  # type: ignore[arg-type]
    return parts


def _module_of(value: Any) -> nn.Module | None:
    unet = getattr(value, "unet", None)
    if isinstance(unet, nn.Module):
        return unet
    inner = getattr(value, "model", None)
    if not isinstance(value, nn.Module) and isinstance(inner, nn.Module):
        return inner  # FirstStage
    return value if isinstance(value, nn.Module) else None


def modules_in(values: Iterable[Any]) -> list[nn.Module]:
    """The modules a node's input values hold, one level down (a MODEL holds its UNet)."""
    found: list[nn.Module] = []
    for value in values:
        for candidate in (value, *(getattr(value, a, None) for a in PART_ATTRIBUTES)):
            if isinstance(candidate, nn.Module):
                found.append(candidate)
    return found


def move(module: nn.Module, device: str) -> None:
    module.to(torch.device(device))


def drop(module: nn.Module) -> None:
    """Free the module's weights in place; `restore` brings them back."""
    for tensor in _tensors(module):
        tensor.data = torch.empty(0, dtype=tensor.dtype)


def restore(module: nn.Module, fresh: nn.Module) -> None:
    """Give a dropped module the tensors of a freshly loaded copy of itself."""
    mine: dict[str, torch.Tensor] = dict(module.named_parameters(remove_duplicate=False))
    mine.update(module.named_buffers(remove_duplicate=False))
    theirs: dict[str, torch.Tensor] = dict(fresh.named_parameters(remove_duplicate=False))
    theirs.update(fresh.named_buffers(remove_duplicate=False))
    for name, tensor in mine.items():
        tensor.data = theirs[name].data


def device_of(module: nn.Module) -> str:
    for tensor in _tensors(module):
        return str(tensor.device)
    return "cpu"


def free_device_bytes(device: str) -> int | None:
    """Free memory on a CUDA device now; None elsewhere (the CPU and MPS report no such figure)."""
    dev = torch.device(device)
    if dev.type != "cuda" or not torch.cuda.is_available():
        return None
    free, _total = torch.cuda.mem_get_info(dev)
    return int(free)


def peak_device_bytes(device: str) -> int | None:
    """torch's peak allocation on a CUDA device since the process started; None elsewhere."""
    dev = torch.device(device)
    if dev.type != "cuda" or not torch.cuda.is_available():
        return None
    return int(torch.cuda.max_memory_allocated(dev))


def empty_device_cache(device: str) -> None:
    """Hand the allocator's cached blocks back, so that a retry after an OOM finds them free."""
    dev = torch.device(device)
    if dev.type == "cuda" and torch.cuda.is_available():
        torch.cuda.empty_cache()
    elif dev.type == "mps" and hasattr(torch, "mps"):
        torch.mps.empty_cache()


class SequentialStream:
    """Streams a UNet's blocks through the device: each block moves there just before its
    forward and back home just after. The rest of the UNet (time embedding, output head) is
    small and stays on the device while streaming. `transfers` counts block moves."""

    def __init__(self, unet: nn.Module, device: str, home: str = "cpu"):
        self.unet, self.device, self.home = unet, torch.device(device), torch.device(home)
        self.blocks = unet_blocks(unet)
        self.transfers = 0
        self.bytes_moved = 0
        self._handles: list[Any] = []

    def attach(self) -> SequentialStream:
        for name, child in self.unet.named_children():
            if name not in ("input_blocks", "middle_block", "output_blocks"):
                child.to(self.device)
        for block in self.blocks:
            block.to(self.home)
            self._handles.append(block.register_forward_pre_hook(self._arrive))
            self._handles.append(block.register_forward_hook(self._leave))
        return self

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def largest_block_bytes(self) -> int:
        return max((module_bytes(block) for block in self.blocks), default=0)

    def resident_bytes(self) -> int:
        return module_bytes(self.unet) - sum(module_bytes(block) for block in self.blocks)

    def _arrive(self, block: nn.Module, _args: Any) -> None:
        self._move(block, self.device)

    def _leave(self, block: nn.Module, _args: Any, _output: Any) -> None:
        self._move(block, self.home)

    def _move(self, block: nn.Module, where: torch.device) -> None:
        block.to(where)
        self.transfers += 1
        self.bytes_moved += module_bytes(block)


def estimate_checkpoint_bytes(path: str, dtype: torch.dtype, use_ema: bool = False) -> int:
    """About what a checkpoint's weights take once loaded in `dtype`, from its header alone (the
    autoencoder counted in fp32 when `dtype` is fp16: the loader keeps it there)."""
    import math

    from engine.models.loader import resolve_checkpoint

    shapes = resolve_checkpoint(path).source.shapes()
    size = torch.empty(0, dtype=dtype).element_size()
    ae_size = 4 if dtype == torch.float16 else size
    skipped = "model.diffusion_model." if use_ema else "model_ema."
    return sum(math.prod(shape) * (ae_size if key.startswith("first_stage_model.") else size)
               for key, shape in shapes.items() if not key.startswith(skipped))
