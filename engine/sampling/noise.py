"""Seeded noise: one CPU generator per batch item, seeded seed + k.

All noise is drawn on the CPU in float32 and then moved to the device, so a
graph gives the same picture on any device, and batch item k of a run with
seed s equals a batch-1 run with seed s + k. The initial noise and every later
draw of an ancestral or SDE sampler come from the same per-item generators, in
order, so the whole run is fixed by the seed.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

SEED_MODULUS = 2**64  # torch.Generator.manual_seed takes seeds in [0, 2**64)


def batch_seeds(seed: int, batch: int) -> tuple[int, ...]:
    """The seed of each batch item: seed, seed + 1, ... (wrapping past 2**64)."""
    return tuple((seed + k) % SEED_MODULUS for k in range(batch))


class SeededNoise:
    """Per-item generators; `draw()` gives the next (B, C, h, w) standard normal tensor."""

    def __init__(self, seeds: Sequence[int], shape: Sequence[int],
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32):
        self.seeds = tuple(seeds)
        self.shape = tuple(shape)  # (C, h, w) of one item
        self.device = torch.device(device)
        self.dtype = dtype
        self._generators = [torch.Generator("cpu").manual_seed(s % SEED_MODULUS) for s in self.seeds]

    def draw(self) -> torch.Tensor:
        items = [torch.randn(self.shape, generator=g, dtype=torch.float32) for g in self._generators]
        return torch.stack(items).to(self.device, self.dtype)

    def __call__(self, sigma: float | None = None, sigma_next: float | None = None) -> torch.Tensor:
        """The `noise_sampler(sigma, sigma_next)` samplers call for per-step noise."""
        return self.draw()


def seeded_noise(seeds: Sequence[int], shape: Sequence[int], device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(len(seeds), *shape) standard normal noise, item k from seeds[k]."""
    return SeededNoise(seeds, shape, device, dtype).draw()
