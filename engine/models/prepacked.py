"""CPU inference convolutions with their weights reordered once for oneDNN.

A plain `nn.Conv2d` on the CPU hands oneDNN its weight in PyTorch's layout, and
oneDNN reorders it into its blocked layout on every call. Reordering once and
keeping the result (what TorchScript freezing and torch.compile do, without
their seconds of tracing) runs the built-in base UNet's step 5-13 % faster on
a 2-core machine (48 against 53 ms; `python -m bench.bench_prepacked`), with
bit-identical output.

`prepack_convolutions(module)` turns a module's `nn.Conv2d`s into
`PrepackedConv2d`s in place (small models only: the packed weights are a
second copy): same parameters, same state-dict keys. They take
the fast path only when it applies (CPU, fp32, no autograd, zero padding) and
otherwise run as the plain convolution, so training and GPU use are unchanged.
A changed weight (loaded in place, patched) is noticed by its version counter.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

_MAX_SHAPES = 2  # packed weights kept per layer, one per input shape (batch, channels, h, w)
# Packed weights are a second copy. Past this many convolution weights (Stable Diffusion's UNet has
# about 10 times more) the copy costs gigabytes and the gain is gone anyway: big convolutions spend
# their time in arithmetic, not in the reorder (the 4x SR decode at 512 px: 749 against 760 ms).
MAX_PREPACKED_PARAMETERS = 50_000_000


def prepacking_available() -> bool:
    """Whether this torch build has the oneDNN ops the fast path uses."""
    return (torch.backends.mkldnn.is_available()
            and hasattr(torch.ops.mkldnn, "_convolution_pointwise")
            and hasattr(torch._C._nn, "mkldnn_reorder_conv2d_weight"))


class PrepackedConv2d(nn.Conv2d):
    """nn.Conv2d that keeps its weight in oneDNN's layout for CPU inference."""

    prepacked: bool  # whether to take the packed path (False after a failure, or to compare)
    _packed: dict[tuple, torch.Tensor]
    _packed_from: tuple

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._applies(x):
            try:
                return self._packed_forward(x)
            except RuntimeError:  # an op this build lacks for this case: the plain path from now on
                self.prepacked = False
        return super().forward(x)

    def __getstate__(self) -> dict[str, Any]:
        # oneDNN's packed tensors have no storage to copy: a copy (deepcopy, pickling) packs anew
        state = super().__getstate__()
        state["_packed"], state["_packed_from"] = {}, ()
        return state

    def _applies(self, x: torch.Tensor) -> bool:
        return (self.prepacked and x.device.type == "cpu" and x.dtype == torch.float32
                and x.dim() == 4 and self.weight.dtype == torch.float32 and self.padding_mode == "zeros"
                and not isinstance(self.padding, str) and not torch.is_grad_enabled())

    def _packed_forward(self, x: torch.Tensor) -> torch.Tensor:
        source = (self.weight.data_ptr(), self.weight._version)
        if source != self._packed_from:
            self._packed, self._packed_from = {}, source
        shape = tuple(x.shape)
        weight = self._packed.get(shape)
        if weight is None:
            if len(self._packed) >= _MAX_SHAPES:
                self._packed.pop(next(iter(self._packed)))
            # torch's stub of this private op leaves out the input size it takes (and needs, for a packing
            # that fits this shape)
            weight = torch._C._nn.mkldnn_reorder_conv2d_weight(  # type: ignore[call-arg]
                self.weight.detach().contiguous().to_mkldnn(), list(self.padding), list(self.stride),
                list(self.dilation), self.groups, list(shape))
            self._packed[shape] = weight
        return torch.ops.mkldnn._convolution_pointwise(
            x, weight, self.bias, list(self.padding), list(self.stride), list(self.dilation), self.groups,
            "none", [], "")


def prepack_convolutions(module: nn.Module, max_parameters: int = MAX_PREPACKED_PARAMETERS) -> int:
    """Make every plain nn.Conv2d inside `module` a PrepackedConv2d in place; returns how many.

    None when their weights hold more than `max_parameters` values (see MAX_PREPACKED_PARAMETERS)."""
    layers = [layer for layer in module.modules() if type(layer) is nn.Conv2d]
    if not prepacking_available() or sum(layer.weight.numel() for layer in layers) > max_parameters:
        return 0
    for layer in layers:
        layer.__class__ = PrepackedConv2d
        _reset(layer)
    return len(layers)


def _reset(layer: Any) -> None:
    layer.prepacked, layer._packed, layer._packed_from = True, {}, ()
