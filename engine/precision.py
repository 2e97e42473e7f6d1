"""Which floating point format each model part runs in, by device and the user's choice. No torch.

fp32 on the CPU (its half-precision kernels are slow or missing); fp16 on CUDA and MPS by default;
bf16 only where asked and the device supports it (else fp16 there, fp32 on the CPU). The
autoencoder stays in fp32 when the rest is fp16: Stable Diffusion's decoder overflows fp16 (its
activations pass 65504), while bf16 has fp32's range and is kept.
"""
from __future__ import annotations

from dataclasses import dataclass

from engine.errors import KilnError

PRECISIONS = ("auto", "fp32", "fp16", "bf16")


@dataclass(frozen=True)
class Precision:
    model: str  # fp32 | fp16 | bf16: the UNet and the conditioner
    autoencoder: str


def choose_precision(device_type: str, asked: str = "auto", bf16_supported: bool = False) -> Precision:
    """The formats for a device type (cpu, cuda, mps, ...) and a setting (auto, fp32, fp16, bf16)."""
    if asked not in PRECISIONS:
        raise KilnError(f"unknown precision {asked!r} ({', '.join(PRECISIONS)})")
    half = "fp32" if device_type == "cpu" else "fp16"
    unavailable = asked == "bf16" and not bf16_supported
    model = half if asked == "auto" or unavailable else asked
    return Precision(model, "fp32" if model == "fp16" else model)
