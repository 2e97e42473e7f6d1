"""The samplers of the original latent diffusion code: DDPM, DDIM and PLMS.

They take the same arguments as every other sampler. Their rules are written in
the paper's variance-preserving terms, with abar = 1 / (1 + sigma^2) recovered
from the sigmas they are given: for the model's own timesteps (the
"ddim_uniform" or "normal" schedules) that is exactly alphas_cumprod[t], and
any other schedule works too. In sigma space x = x_vp / sqrt(abar).

Ending: the original code's last step goes to alphas_cumprod[0], not to alpha 1,
so its final latent keeps a little noise (about 0.029 eps for SD's schedule).
`with_paper_ending` sets the last sigma to the model's smallest, and
`to_paper_space` turns the result into the paper's x_vp (the pipeline does both
for the "ddim_uniform" schedule; "ddim_uniform_to_zero" keeps the step to 0).
"""
from __future__ import annotations

import math

import torch

from engine.sampling.samplers import Callback, Model, NoiseSampler, _floats, _noise_fn, _report


def abar(sigma: float) -> float:
    """alphas_cumprod at the timestep whose noise level is sigma."""
    return 1.0 / (1.0 + sigma * sigma)


def with_paper_ending(sigmas: torch.Tensor, sigma_min: float) -> torch.Tensor:
    """(N,) sigmas ending in 0 -> the same with the last one sigma_min (alphas_cumprod[0])."""
    if len(sigmas) < 2 or float(sigmas[-1]) != 0:
        return sigmas
    ended = sigmas.clone()
    ended[-1] = sigma_min
    return ended


def to_paper_space(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """x in sigma space at noise level sigma -> the paper's x_vp = sqrt(abar) * x."""
    return x * math.sqrt(abar(sigma))


def ddim_step(x: torch.Tensor, denoised: torch.Tensor, sigma: float, sigma_next: float, eta: float,
              noise: torch.Tensor | None) -> torch.Tensor:
    """x_prev = sqrt(a_prev) x0 + sqrt(1 - a_prev - s^2) eps + s z, in sigma space."""
    a, a_prev = abar(sigma), abar(sigma_next)
    eps = (x - denoised) / sigma
    std = ddim_sigma(a, a_prev, eta)
    x_prev = denoised * math.sqrt(a_prev) + eps * math.sqrt(max(1 - a_prev - std**2, 0.0))
    if std > 0 and noise is not None:
        x_prev = x_prev + noise * std
    return x_prev / math.sqrt(a_prev)


def ddim_sigma(a: float, a_prev: float, eta: float) -> float:
    """The DDIM paper's sigma_t(eta); eta = 1 is the DDPM posterior standard deviation."""
    return eta * math.sqrt((1 - a_prev) / (1 - a) * (1 - a / a_prev))


@torch.no_grad()
def sample_ddim(model: Model, x: torch.Tensor, sigmas: torch.Tensor, extra_args: dict | None = None,
                callback: Callback = None, noise_sampler: NoiseSampler = None, eta: float = 0.0) -> torch.Tensor:
    """DDIM (Song et al. 2021); eta = 0 is deterministic."""
    extra, s, noise = extra_args or {}, _floats(sigmas), _noise_fn(x, noise_sampler)
    for i in range(len(s) - 1):
        denoised = model(x, s[i], **extra)
        _report(callback, i, x, denoised, s[i], s[i + 1])
        stochastic = eta > 0 and ddim_sigma(abar(s[i]), abar(s[i + 1]), eta) > 0
        x = ddim_step(x, denoised, s[i], s[i + 1], eta, noise(s[i], s[i + 1]) if stochastic else None)
    return x


@torch.no_grad()
def sample_ddpm(model: Model, x: torch.Tensor, sigmas: torch.Tensor, extra_args: dict | None = None,
                callback: Callback = None, noise_sampler: NoiseSampler = None) -> torch.Tensor:
    """Ancestral sampling from the DDPM posterior q(x_prev | x_t, x0) (Ho et al. 2020)."""
    extra, s, noise = extra_args or {}, _floats(sigmas), _noise_fn(x, noise_sampler)
    for i in range(len(s) - 1):
        denoised = model(x, s[i], **extra)
        _report(callback, i, x, denoised, s[i], s[i + 1])
        if s[i + 1] == 0:
            x = denoised
            continue
        a, a_prev = abar(s[i]), abar(s[i + 1])
        beta = 1 - a / a_prev
        mean_vp = (denoised * (math.sqrt(a_prev) * beta / (1 - a))
                   + x * (math.sqrt(a) * math.sqrt(1 - beta) * (1 - a_prev) / (1 - a)))
        std = math.sqrt(beta * (1 - a_prev) / (1 - a))
        x = (mean_vp + noise(s[i], s[i + 1]) * std) / math.sqrt(a_prev)
    return x


# Adams-Bashforth weights for the newest eps first, by how many past eps exist.
_PLMS_WEIGHTS = {1: (3 / 2, -1 / 2), 2: (23 / 12, -16 / 12, 5 / 12), 3: (55 / 24, -59 / 24, 37 / 24, -9 / 24)}


@torch.no_grad()
def sample_plms(model: Model, x: torch.Tensor, sigmas: torch.Tensor, extra_args: dict | None = None,
                callback: Callback = None, noise_sampler: NoiseSampler = None) -> torch.Tensor:
    """Pseudo linear multistep (Liu et al. 2022) as in the original code, eta 0.

    First step: pseudo improved Euler (two evaluations); then Adams-Bashforth of
    order 2, 3, 4 on eps, each combined eps taken through a DDIM step.
    """
    extra, s = extra_args or {}, _floats(sigmas)
    old_eps: list[torch.Tensor] = []  # newest last, at most 3
    for i in range(len(s) - 1):
        sigma, sigma_next = s[i], s[i + 1]
        eps = (x - model(x, sigma, **extra)) / sigma
        if not old_eps and sigma_next > 0:
            x_euler = ddim_step(x, x - eps * sigma, sigma, sigma_next, 0.0, None)
            eps_next = (x_euler - model(x_euler, sigma_next, **extra)) / sigma_next
            eps_prime = (eps + eps_next) / 2
        elif old_eps:
            weights = _PLMS_WEIGHTS[len(old_eps)]
            eps_prime = eps * weights[0]
            for w, past in zip(weights[1:], reversed(old_eps)):
                eps_prime = eps_prime + past * w
        else:
            eps_prime = eps
        denoised = x - eps_prime * sigma
        _report(callback, i, x, denoised, sigma, sigma_next)
        x = ddim_step(x, denoised, sigma, sigma_next, 0.0, None)
        old_eps = (old_eps + [eps])[-3:]
    return x
