"""Noise schedules: which sigmas a sampler visits, from large to the trailing 0.

Every schedule returns a float32 CPU tensor of steps + 1 sigmas ending in 0.
The "normal", "sgm_uniform", "simple" and "ddim_uniform" schedules pick the
model's own timesteps (spaced in different ways); "karras" and "exponential"
space sigma itself between the model's smallest and largest sigma. "beta",
"linear_quadratic" and "kl_optimal" are ComfyUI's schedules of those names.
"ddim_uniform" and "ddim_uniform_to_zero" give the same sigmas: they differ only
for the paper's samplers (ddim, plms, ddpm), which with "ddim_uniform" end as the
original code does, at alphas_cumprod[0] (`engine.sampling.pipeline`).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Protocol

import numpy as np
import torch

from engine.sampling.beta_dist import beta_ppf


class SigmaTable(Protocol):
    """What a schedule needs from the model wrapper (DiscreteDenoiser has it)."""

    sigmas: torch.Tensor  # (T,) ascending
    num_timesteps: int

    @property
    def sigma_min(self) -> float: ...

    @property
    def sigma_max(self) -> float: ...

    def t_to_sigma(self, t: torch.Tensor) -> torch.Tensor: ...


def normal_schedule(model: SigmaTable, steps: int) -> torch.Tensor:
    """Timesteps evenly spaced from T-1 down to 0 (k-diffusion / diffusers "linspace")."""
    t = torch.linspace(model.num_timesteps - 1, 0, steps, dtype=torch.float64)
    return _append_zero(model.t_to_sigma(t))


def sgm_uniform_schedule(model: SigmaTable, steps: int) -> torch.Tensor:
    """Timesteps evenly spaced from T-1 towards 0, the last one above 0 (SGM / SDXL)."""
    t = torch.linspace(model.num_timesteps - 1, 0, steps + 1, dtype=torch.float64)[:-1]
    return _append_zero(model.t_to_sigma(t))


def simple_schedule(model: SigmaTable, steps: int) -> torch.Tensor:
    """Every (T/steps)-th timestep counted from the top ("trailing" spacing)."""
    stride = model.num_timesteps / steps
    index = [model.num_timesteps - 1 - int(k * stride) for k in range(steps)]
    return _append_zero(model.sigmas[index])


def ddim_uniform_schedule(model: SigmaTable, steps: int) -> torch.Tensor:
    """The original DDIM timesteps: 1, 1 + c, 1 + 2c, ... with c = T // steps, descending."""
    stride = max(model.num_timesteps // steps, 1)
    index = [min(k * stride + 1, model.num_timesteps - 1) for k in range(steps)]
    return _append_zero(model.sigmas[index[::-1]])


def karras_schedule(model: SigmaTable, steps: int, rho: float = 7.0) -> torch.Tensor:
    """Karras et al. (2022): sigma^(1/rho) evenly spaced between sigma_max and sigma_min."""
    ramp = torch.linspace(0, 1, steps, dtype=torch.float64)
    lo, hi = model.sigma_min ** (1 / rho), model.sigma_max ** (1 / rho)
    return _append_zero((hi + ramp * (lo - hi)) ** rho)


def exponential_schedule(model: SigmaTable, steps: int) -> torch.Tensor:
    """log sigma evenly spaced between sigma_max and sigma_min."""
    log_sigmas = torch.linspace(math.log(model.sigma_max), math.log(model.sigma_min), steps,
                                dtype=torch.float64)
    return _append_zero(log_sigmas.exp())


def beta_schedule(model: SigmaTable, steps: int, alpha: float = 0.6, beta: float = 0.6) -> torch.Tensor:
    """Timesteps at the Beta(alpha, beta) quantiles of 1, 1 - 1/steps, ... (Lee et al. 2024, arXiv
    2407.12173), rounded to the table; a timestep equal to the one before is skipped (ComfyUI's "beta")."""
    last = model.num_timesteps - 1
    quantiles = 1 - np.linspace(0, 1, steps, endpoint=False)
    timesteps = np.rint(beta_ppf(quantiles, alpha, beta) * last).astype(int)
    keep = [int(t) for k, t in enumerate(timesteps) if k == 0 or t != timesteps[k - 1]]
    return _append_zero(model.sigmas[keep])


def linear_quadratic_schedule(model: SigmaTable, steps: int, threshold: float = 0.025) -> torch.Tensor:
    """Mochi's schedule, scaled by sigma_max: 1 - s with s linear up to `threshold` over the first half
    of the steps, then quadratic up to 1 (ComfyUI's "linear_quadratic")."""
    if steps == 1:
        return torch.tensor([model.sigma_max, 0.0])
    linear = steps // 2
    quad = steps - linear
    diff = linear - threshold * steps
    a = diff / (linear * quad**2)
    b = threshold / linear - 2 * diff / quad**2
    c = a * linear**2
    s = [k * threshold / linear for k in range(linear)] + [a * k * k + b * k + c for k in range(linear, steps)]
    return (torch.tensor([1.0 - v for v in s] + [0.0], dtype=torch.float64) * model.sigma_max).float()


def kl_optimal_schedule(model: SigmaTable, steps: int) -> torch.Tensor:
    """tan of atan(sigma) evenly spaced from sigma_max to sigma_min (arXiv 2404.14507, ComfyUI's "kl_optimal")."""
    w = torch.arange(steps, dtype=torch.float64) / max(steps - 1, 1)
    return _append_zero((w * math.atan(model.sigma_min) + (1 - w) * math.atan(model.sigma_max)).tan())


def _append_zero(sigmas: torch.Tensor) -> torch.Tensor:
    return torch.cat([sigmas.to(torch.float64), sigmas.new_zeros(1, dtype=torch.float64)]).float()


SCHEDULERS: dict[str, Callable[[SigmaTable, int], torch.Tensor]] = {
    "normal": normal_schedule,
    "karras": karras_schedule,
    "exponential": exponential_schedule,
    "sgm_uniform": sgm_uniform_schedule,
    "simple": simple_schedule,
    "ddim_uniform": ddim_uniform_schedule,
    "ddim_uniform_to_zero": ddim_uniform_schedule,  # same sigmas; see paper_ending below
    "beta": beta_schedule,
    "linear_quadratic": linear_quadratic_schedule,
    "kl_optimal": kl_optimal_schedule,
}
SCHEDULER_NAMES: tuple[str, ...] = tuple(SCHEDULERS)


def get_sigmas(model_wrapper: SigmaTable, scheduler: str, steps: int) -> torch.Tensor:
    """(steps + 1,) float32 sigmas, descending, ending in 0."""
    if scheduler not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {scheduler!r}; known: {', '.join(SCHEDULER_NAMES)}")
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    return SCHEDULERS[scheduler](model_wrapper, steps)


def img2img_sigmas(model_wrapper: SigmaTable, scheduler: str, steps: int, denoise: float) -> torch.Tensor:
    """The last `steps` steps of a schedule of int(steps / denoise) steps (ComfyUI semantics).

    denoise 1 is the full schedule (text to image); denoise 0 gives no steps at all.
    Repeated sigmas (long schedules over few timesteps) are dropped.
    """
    if denoise <= 0:
        return torch.zeros(0)
    if denoise >= 1:
        sigmas = get_sigmas(model_wrapper, scheduler, steps)
    else:
        sigmas = get_sigmas(model_wrapper, scheduler, int(steps / denoise))[-(steps + 1):]
    return torch.unique_consecutive(sigmas)
