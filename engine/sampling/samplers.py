"""k-diffusion style samplers: small pure functions with one signature.

    sampler(model, x, sigmas, extra_args=None, callback=None, noise_sampler=None, **options) -> x

`model(x, sigma, **extra_args)` returns the denoised (clean) latent at noise
level sigma; `x` starts at sigmas[0] (x0 + sigmas[0] * noise) and the result
is at sigmas[-1] (normally 0). `callback({"i", "x", "denoised", "sigma",
"sigma_next"})` runs once per step after the step's first model evaluation.
`noise_sampler(sigma, sigma_next)` gives standard normal noise shaped like x
for the stochastic samplers (default: torch.randn_like).

The update rules follow the papers: Karras et al. 2022 (euler, heun, dpm_2,
ancestral steps), DPM-Solver++ (Lu et al. 2022), UniPC (Zhao et al. 2023),
LCM (Luo et al. 2023). Sigma-space time t = -log(sigma) is used by the
exponential integrators.
"""
from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

Model = Callable[..., torch.Tensor]
Callback = Callable[[dict[str, Any]], None] | None
NoiseSampler = Callable[[float, float], torch.Tensor] | None


def _floats(sigmas: torch.Tensor) -> list[float]:
    return [float(s) for s in sigmas.tolist()]


def _noise_fn(x: torch.Tensor, noise_sampler: NoiseSampler) -> Callable[[float, float], torch.Tensor]:
    return noise_sampler if noise_sampler is not None else (lambda s, sn: torch.randn_like(x))


def _report(callback: Callback, i: int, x: torch.Tensor, denoised: torch.Tensor,
            sigma: float, sigma_next: float) -> None:
    if callback is not None:
        callback({"i": i, "x": x, "denoised": denoised, "sigma": sigma, "sigma_next": sigma_next})


def to_d(x: torch.Tensor, sigma: float, denoised: torch.Tensor) -> torch.Tensor:
    """The probability-flow ODE derivative dx/dsigma."""
    return (x - denoised) / sigma


def ancestral_step(sigma: float, sigma_next: float, eta: float = 1.0) -> tuple[float, float]:
    """(sigma_down, sigma_up): step deterministically to sigma_down, then add sigma_up noise."""
    if sigma_next == 0 or eta == 0:
        return sigma_next, 0.0
    up = min(sigma_next, eta * math.sqrt(sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2))
    return math.sqrt(sigma_next**2 - up**2), up


@torch.no_grad()
def sample_euler(model: Model, x: torch.Tensor, sigmas: torch.Tensor, extra_args: dict | None = None,
                 callback: Callback = None, noise_sampler: NoiseSampler = None) -> torch.Tensor:
    extra, s = extra_args or {}, _floats(sigmas)
    for i in range(len(s) - 1):
        denoised = model(x, s[i], **extra)
        _report(callback, i, x, denoised, s[i], s[i + 1])
        x = x + to_d(x, s[i], denoised) * (s[i + 1] - s[i])
    return x


@torch.no_grad()
def sample_euler_ancestral(model: Model, x: torch.Tensor, sigmas: torch.Tensor, extra_args: dict | None = None,
                           callback: Callback = None, noise_sampler: NoiseSampler = None,
                           eta: float = 1.0, s_noise: float = 1.0) -> torch.Tensor:
    extra, s, noise = extra_args or {}, _floats(sigmas), _noise_fn(x, noise_sampler)
    for i in range(len(s) - 1):
        denoised = model(x, s[i], **extra)
        _report(callback, i, x, denoised, s[i], s[i + 1])
        down, up = ancestral_step(s[i], s[i + 1], eta)
        x = x + to_d(x, s[i], denoised) * (down - s[i])
        if s[i + 1] > 0 and up > 0:
            x = x + noise(s[i], s[i + 1]) * (s_noise * up)
    return x


@torch.no_grad()
def sample_heun(model: Model, x: torch.Tensor, sigmas: torch.Tensor, extra_args: dict | None = None,
                callback: Callback = None, noise_sampler: NoiseSampler = None) -> torch.Tensor:
    """Heun's second-order method (Karras et al. Algorithm 1, no churn); Euler on the last step."""
    extra, s = extra_args or {}, _floats(sigmas)
    for i in range(len(s) - 1):
        denoised = model(x, s[i], **extra)
        _report(callback, i, x, denoised, s[i], s[i + 1])
        d, dt = to_d(x, s[i], denoised), s[i + 1] - s[i]
        if s[i + 1] == 0:
            x = x + d * dt
            continue
        x_2 = x + d * dt
        d_2 = to_d(x_2, s[i + 1], model(x_2, s[i + 1], **extra))
        x = x + (d + d_2) * (dt / 2)
    return x


def _dpm_2_step(model: Model, x: torch.Tensor, denoised: torch.Tensor, sigma: float, sigma_to: float,
                extra: dict) -> torch.Tensor:
    """Midpoint in log sigma (DPM-Solver-2 in Karras et al.'s form); Euler when sigma_to is 0."""
    d = to_d(x, sigma, denoised)
    if sigma_to == 0:
        return x + d * (sigma_to - sigma)
    sigma_mid = math.exp((math.log(sigma) + math.log(sigma_to)) / 2)
    x_2 = x + d * (sigma_mid - sigma)
    d_2 = to_d(x_2, sigma_mid, model(x_2, sigma_mid, **extra))
    return x + d_2 * (sigma_to - sigma)


@torch.no_grad()
def sample_dpm_2(model: Model, x: torch.Tensor, sigmas: torch.Tensor, extra_args: dict | None = None,
                 callback: Callback = None, noise_sampler: NoiseSampler = None) -> torch.Tensor:
    extra, s = extra_args or {}, _floats(sigmas)
    for i in range(len(s) - 1):
        denoised = model(x, s[i], **extra)
        _report(callback, i, x, denoised, s[i], s[i + 1])
        x = _dpm_2_step(model, x, denoised, s[i], s[i + 1], extra)
    return x


@torch.no_grad()
def sample_dpm_2_ancestral(model: Model, x: torch.Tensor, sigmas: torch.Tensor, extra_args: dict | None = None,
                           callback: Callback = None, noise_sampler: NoiseSampler = None,
                           eta: float = 1.0, s_noise: float = 1.0) -> torch.Tensor:
    extra, s, noise = extra_args or {}, _floats(sigmas), _noise_fn(x, noise_sampler)
    for i in range(len(s) - 1):
        denoised = model(x, s[i], **extra)
        _report(callback, i, x, denoised, s[i], s[i + 1])
        down, up = ancestral_step(s[i], s[i + 1], eta)
        x = _dpm_2_step(model, x, denoised, s[i], down, extra)
        if s[i + 1] > 0 and up > 0:
            x = x + noise(s[i], s[i + 1]) * (s_noise * up)
    return x


def lms_coefficient(order: int, sigmas: list[float], i: int, j: int) -> float:
    """Integral over [sigma_i, sigma_i+1] of the Lagrange basis polynomial of sigma_(i-j).

    The basis has degree order - 1, so Gauss-Legendre quadrature with ceil(order / 2)
    nodes is exact (and far cheaper than symbolic integration).
    """
    nodes, weights = _gauss_legendre(max(1, (order + 1) // 2))
    a, b = sigmas[i], sigmas[i + 1]
    total = 0.0
    for node, weight in zip(nodes, weights):
        tau = (a + b) / 2 + (b - a) / 2 * node
        basis = 1.0
        for k in range(order):
            if k != j:
                basis *= (tau - sigmas[i - k]) / (sigmas[i - j] - sigmas[i - k])
        total += weight * basis
    return total * (b - a) / 2


@functools.cache
def _gauss_legendre(n: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    nodes, weights = np.polynomial.legendre.leggauss(n)
    return tuple(nodes.tolist()), tuple(weights.tolist())


@torch.no_grad()
def sample_lms(model: Model, x: torch.Tensor, sigmas: torch.Tensor, extra_args: dict | None = None,
               callback: Callback = None, noise_sampler: NoiseSampler = None, order: int = 4,
               final_denoised: bool = False) -> torch.Tensor:
    """Linear multistep in sigma over up to `order` past derivatives.

    final_denoised: a step to sigma 0 returns the prediction (ComfyUI's lms) instead of integrating."""
    extra, s = extra_args or {}, _floats(sigmas)
    derivatives: list[torch.Tensor] = []  # newest first
    for i in range(len(s) - 1):
        denoised = model(x, s[i], **extra)
        _report(callback, i, x, denoised, s[i], s[i + 1])
        derivatives = [to_d(x, s[i], denoised)] + derivatives[: order - 1]
        if final_denoised and s[i + 1] == 0:
            x = denoised
            continue
        cur_order = len(derivatives)
        for j, d in enumerate(derivatives):
            x = x + d * lms_coefficient(cur_order, s, i, j)
    return x


@torch.no_grad()
def sample_dpmpp_2m(model: Model, x: torch.Tensor, sigmas: torch.Tensor, extra_args: dict | None = None,
                    callback: Callback = None, noise_sampler: NoiseSampler = None) -> torch.Tensor:
    """DPM-Solver++(2M): second-order multistep in data prediction; first order at the ends."""
    extra, s = extra_args or {}, _floats(sigmas)
    old_denoised, h_last = None, 0.0
    for i in range(len(s) - 1):
        denoised = model(x, s[i], **extra)
        _report(callback, i, x, denoised, s[i], s[i + 1])
        if s[i + 1] == 0:
            x = denoised
            continue
        h = math.log(s[i] / s[i + 1])
        target = denoised
        if old_denoised is not None:
            r = h_last / h
            target = denoised * (1 + 1 / (2 * r)) - old_denoised * (1 / (2 * r))
        x = x * (s[i + 1] / s[i]) - target * math.expm1(-h)
        old_denoised, h_last = denoised, h
    return x


@torch.no_grad()
def sample_dpmpp_2m_sde(model: Model, x: torch.Tensor, sigmas: torch.Tensor, extra_args: dict | None = None,
                        callback: Callback = None, noise_sampler: NoiseSampler = None,
                        eta: float = 1.0, s_noise: float = 1.0) -> torch.Tensor:
    """DPM-Solver++(2M) SDE, midpoint variant."""
    extra, s, noise = extra_args or {}, _floats(sigmas), _noise_fn(x, noise_sampler)
    old_denoised, h_last = None, 0.0
    for i in range(len(s) - 1):
        denoised = model(x, s[i], **extra)
        _report(callback, i, x, denoised, s[i], s[i + 1])
        if s[i + 1] == 0:
            x = denoised
            continue
        h = math.log(s[i] / s[i + 1])
        eta_h = eta * h
        decay = -math.expm1(-h - eta_h)
        x = x * (s[i + 1] / s[i] * math.exp(-eta_h)) + denoised * decay
        if old_denoised is not None:
            x = x + (denoised - old_denoised) * (0.5 * decay * h / h_last)
        if eta > 0:
            x = x + noise(s[i], s[i + 1]) * (s[i + 1] * math.sqrt(-math.expm1(-2 * eta_h)) * s_noise)
        old_denoised, h_last = denoised, h
    return x


@torch.no_grad()
def sample_dpmpp_sde(model: Model, x: torch.Tensor, sigmas: torch.Tensor, extra_args: dict | None = None,
                     callback: Callback = None, noise_sampler: NoiseSampler = None,
                     eta: float = 1.0, s_noise: float = 1.0, r: float = 0.5) -> torch.Tensor:
    """DPM-Solver++ SDE: two evaluations per step, the first at the intermediate time t + r h.

    The two noise draws of a step are independent (k-diffusion uses a Brownian
    tree here; independent draws keep the seeded per-item generators simple).
    """
    extra, s, noise = extra_args or {}, _floats(sigmas), _noise_fn(x, noise_sampler)
    for i in range(len(s) - 1):
        denoised = model(x, s[i], **extra)
        _report(callback, i, x, denoised, s[i], s[i + 1])
        if s[i + 1] == 0:
            x = x + to_d(x, s[i], denoised) * (s[i + 1] - s[i])
            continue
        h = math.log(s[i] / s[i + 1])
        sigma_s = s[i] * math.exp(-r * h)
        x_2 = _sde_substep(x, denoised, s[i], sigma_s, eta, s_noise, noise)
        denoised_2 = model(x_2, sigma_s, **extra)
        mixed = denoised * (1 - 1 / (2 * r)) + denoised_2 * (1 / (2 * r))
        x = _sde_substep(x, mixed, s[i], s[i + 1], eta, s_noise, noise)
    return x


def _sde_substep(x: torch.Tensor, denoised: torch.Tensor, sigma: float, sigma_to: float, eta: float,
                 s_noise: float, noise: Callable[[float, float], torch.Tensor]) -> torch.Tensor:
    """First-order data-prediction step to the ancestral sigma_down, plus sigma_up noise."""
    down, up = ancestral_step(sigma, sigma_to, eta)
    x = denoised if down == 0 else x * (down / sigma) - denoised * math.expm1(-math.log(sigma / down))
    return x + noise(sigma, sigma_to) * (s_noise * up) if up > 0 else x


@torch.no_grad()
def sample_dpmpp_2s_ancestral(model: Model, x: torch.Tensor, sigmas: torch.Tensor, extra_args: dict | None = None,
                              callback: Callback = None, noise_sampler: NoiseSampler = None,
                              eta: float = 1.0, s_noise: float = 1.0) -> torch.Tensor:
    """DPM-Solver++(2S) single-step with ancestral noise."""
    extra, s, noise = extra_args or {}, _floats(sigmas), _noise_fn(x, noise_sampler)
    for i in range(len(s) - 1):
        denoised = model(x, s[i], **extra)
        _report(callback, i, x, denoised, s[i], s[i + 1])
        down, up = ancestral_step(s[i], s[i + 1], eta)
        if down == 0:
            x = x + to_d(x, s[i], denoised) * (down - s[i])
        else:
            h = math.log(s[i] / down)
            sigma_mid = s[i] * math.exp(-h / 2)
            x_2 = x * (sigma_mid / s[i]) - denoised * math.expm1(-h / 2)
            denoised_2 = model(x_2, sigma_mid, **extra)
            x = x * (down / s[i]) - denoised_2 * math.expm1(-h)
        if s[i + 1] > 0 and up > 0:
            x = x + noise(s[i], s[i + 1]) * (s_noise * up)
    return x


@torch.no_grad()
def sample_lcm(model: Model, x: torch.Tensor, sigmas: torch.Tensor, extra_args: dict | None = None,
               callback: Callback = None, noise_sampler: NoiseSampler = None) -> torch.Tensor:
    """Latent consistency sampling: jump to the prediction, re-noise to the next sigma."""
    extra, s, noise = extra_args or {}, _floats(sigmas), _noise_fn(x, noise_sampler)
    for i in range(len(s) - 1):
        denoised = model(x, s[i], **extra)
        _report(callback, i, x, denoised, s[i], s[i + 1])
        x = denoised
        if s[i + 1] > 0:
            x = x + noise(s[i], s[i + 1]) * s[i + 1]
    return x
