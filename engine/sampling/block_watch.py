"""Cancel, and progress, inside one UNet call: forward pre-hooks on the UNet's blocks.

A huge latent (8192x8192) takes minutes per UNet call, so a cancel checked only between
sampler steps comes far too late. `BlockWatch` hooks every input, middle and output block
for the length of one sampling run: before each block it calls `check()` (the node's
`ctx.check_cancelled`, which raises engine.errors.Cancelled) and, if asked, reports how
far the run is in block units. The hooks are removed on leaving, however the run ends,
so the model is the same for the next run. A hook costs a Python call per block per
UNet call: nothing beside the blocks' own work.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, Self

from torch import nn

BlockProgress = Callable[[int, int], None]  # (block units done, block units in the run)


def unet_blocks(unet: nn.Module) -> list[nn.Module]:
    """The UNet's input, middle and output blocks in call order; [] for a model without them."""
    middle = getattr(unet, "middle_block", None)
    ins, outs = getattr(unet, "input_blocks", None), getattr(unet, "output_blocks", None)
    if not isinstance(middle, nn.Module) or not isinstance(ins, nn.ModuleList) or not isinstance(outs, nn.ModuleList):
        return []
    return [*ins, middle, *outs]


class BlockWatch:
    """Context manager: hooks on the UNet's blocks calling `check()` and `on_progress` for one run.

    Progress counts `len(blocks)` units per sampler step; the sampling loop calls `step_done`
    after each step. Within a step it only ever rises (a second UNet call in the same step, as
    heun makes, reports nothing until it passes the first one's mark)."""

    def __init__(self, unet: nn.Module, total_steps: int, check: Callable[[], None] | None,
                 on_progress: BlockProgress | None = None):
        self.blocks = unet_blocks(unet)
        self.per_step = len(self.blocks)
        self.total = total_steps * self.per_step
        self.check, self.on_progress = check, on_progress
        self._base = self._reported = 0
        self._handles: list[Any] = []

    def step_done(self, steps: int) -> None:
        """`steps` sampler steps are finished."""
        self._base = self._reported = steps * self.per_step

    def __enter__(self) -> Self:
        if self.check is not None or self.on_progress is not None:
            self._handles = [block.register_forward_pre_hook(self._hook(i)) for i, block in enumerate(self.blocks)]
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _hook(self, index: int) -> Callable[..., None]:
        def before_block(_module: nn.Module, _args: Any) -> None:
            if self.check is not None:
                self.check()
            units = self._base + index
            if self.on_progress is not None and units > self._reported:
                self._reported = units
                self.on_progress(units, self.total)

        return before_block
