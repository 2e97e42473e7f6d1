"""More samplers under the names ComfyUI gives them, with the signature of `engine.sampling.samplers`.

- dpmpp_3m_sde: DPM-Solver++(3M) SDE (Lu et al. 2022), the third-order multistep with noise.
- ipndm: improved PNDM (Zhang & Chen 2023), Adams-Bashforth in sigma with fixed weights, order <= 4.
- deis: DEIS (Zhang & Chen 2023) "tab" mode, order <= 3: Lagrange polynomials in the VP time of
  EDM's default VP schedule, integrated numerically against the exponential integrand.
- res_multistep(_ancestral): the second-order multistep exponential integrator of RES (Zhang et al.,
  arXiv 2308.02157), with ancestral noise for the second name.
- *_cfg_pp: CFG++ (Chung et al. 2024): the step renoises with the unconditional prediction rather
  than the guided one. The model records it as `model.last_uncond` (GuidedDenoiser(record_uncond=True));
  without it they step as their plain namesakes.

All step in sigma space, x = x0 + sigma * eps (alpha = 1 for Kiln's eps/v models).
"""
from __future__ import annotations

import math

import torch

from engine.sampling.samplers import (
    Callback,
    Model,
    NoiseSampler,
    _floats,
    _noise_fn,
    _report,
    ancestral_step,
    to_d,
)

# iPNDM's Adams-Bashforth weights, newest derivative first, by order.
_AB_WEIGHTS = {1: (1.0,), 2: (3 / 2, -1 / 2), 3: (23 / 12, -16 / 12, 5 / 12),
               4: (55 / 24, -59 / 24, 37 / 24, -9 / 24)}


def uncond_of(model: Model, denoised: torch.Tensor) -> torch.Tensor:
    """The unconditional prediction of the model call just made (the guided one where not recorded)."""
    uncond = getattr(model, "last_uncond", None)
    return uncond if isinstance(uncond, torch.Tensor) else denoised


@torch.no_grad()
def sample_dpmpp_3m_sde(model: Model, x: torch.Tensor, sigmas: torch.Tensor, extra_args: dict | None = None,
                        callback: Callback = None, noise_sampler: NoiseSampler = None,
                        eta: float = 1.0, s_noise: float = 1.0) -> torch.Tensor:
    extra, s, noise = extra_args or {}, _floats(sigmas), _noise_fn(x, noise_sampler)
    past: list[tuple[torch.Tensor, float]] = []  # (denoised, h) of the last two steps, newest first
    for i in range(len(s) - 1):
        denoised = model(x, s[i], **extra)
        _report(callback, i, x, denoised, s[i], s[i + 1])
        if s[i + 1] == 0:
            x = denoised
            continue
        h = math.log(s[i] / s[i + 1])
        h_eta = h * (eta + 1)
        phi_1 = -math.expm1(-h_eta)
        x = x * (s[i + 1] / s[i] * math.exp(-h * eta)) + denoised * phi_1
        phi_2 = math.expm1(-h_eta) / h_eta + 1
        if len(past) >= 2:
            r0, r1 = past[0][1] / h, past[1][1] / h
            d1_0 = (denoised - past[0][0]) / r0
            d1_1 = (past[0][0] - past[1][0]) / r1
            d1 = d1_0 + (d1_0 - d1_1) * (r0 / (r0 + r1))
            d2 = (d1_0 - d1_1) / (r0 + r1)
            x = x + d1 * phi_2 - d2 * (phi_2 / h_eta - 0.5)
        elif past:
            x = x + (denoised - past[0][0]) * (phi_2 * h / past[0][1])
        if eta > 0 and s_noise > 0:
            x = x + noise(s[i], s[i + 1]) * (s[i + 1] * math.sqrt(-math.expm1(-2 * h * eta)) * s_noise)
        past = [(denoised, h)] + past[:1]
    return x


@torch.no_grad()
def sample_ipndm(model: Model, x: torch.Tensor, sigmas: torch.Tensor, extra_args: dict | None = None,
                 callback: Callback = None, noise_sampler: NoiseSampler = None, max_order: int = 4) -> torch.Tensor:
    extra, s = extra_args or {}, _floats(sigmas)
    history: list[torch.Tensor] = []  # past derivatives, newest first
    for i in range(len(s) - 1):
        denoised = model(x, s[i], **extra)
        _report(callback, i, x, denoised, s[i], s[i + 1])
        d = to_d(x, s[i], denoised)
        if s[i + 1] == 0:
            x = denoised
        else:
            weights = _AB_WEIGHTS[min(max_order, i + 1)]
            step = d * weights[0]
            for w, past in zip(weights[1:], history):
                step = step + past * w
            x = x + step * (s[i + 1] - s[i])
        history = ([d] + history)[: max_order - 1]
    return x


def _edm_vp_time(sigma: torch.Tensor) -> tuple[torch.Tensor, float, float]:
    """Sigma -> time of the VP SDE that EDM's defaults give (sigma 0.002..80 over t 1e-3..1)."""
    eps_s, lo, hi = 1e-3, 0.002, 80.0
    beta_d = 2 * (math.log(lo**2 + 1) / eps_s - math.log(hi**2 + 1)) / (eps_s - 1)
    beta_min = math.log(hi**2 + 1) - 0.5 * beta_d
    t = ((beta_min**2 + 2 * beta_d * (sigma**2 + 1).log()).sqrt() - beta_min) / beta_d
    return t, beta_min, beta_d + beta_min


def deis_coefficients(sigmas: torch.Tensor, max_order: int, points: int = 10000) -> list[list[float]]:
    """Per step, the weights of the current and past derivatives (empty for a first-order step)."""
    t, beta_0, beta_1 = _edm_vp_time(sigmas.to(torch.float64))
    out: list[list[float]] = []
    for i in range(len(t) - 1):
        order = min(i + 1, max_order)
        if order == 1 or float(sigmas[i + 1]) <= 0:  # the step to sigma 0 is Euler's
            out.append([])
            continue
        taus = torch.linspace(float(t[i]), float(t[i + 1]), points, dtype=torch.float64)
        alpha = torch.exp(-0.5 * taus**2 * (beta_1 - beta_0) - taus * beta_0)
        integrand = 0.5 * (beta_0 + taus * (beta_1 - beta_0)) / torch.sqrt(alpha * (1 - alpha))
        nodes = [float(t[i - k]) for k in range(order)]
        weights = []
        for j in range(order):
            basis = torch.ones_like(taus)
            for k, node in enumerate(nodes):
                if k != j:
                    basis = basis * (taus - node) / (nodes[j] - node)
            weights.append(float((integrand * basis).sum()) * (float(t[i + 1]) - float(t[i])) / points)
        out.append(weights)
    return out


@torch.no_grad()
def sample_deis(model: Model, x: torch.Tensor, sigmas: torch.Tensor, extra_args: dict | None = None,
                callback: Callback = None, noise_sampler: NoiseSampler = None, max_order: int = 3) -> torch.Tensor:
    extra, s = extra_args or {}, _floats(sigmas)
    coefficients = deis_coefficients(sigmas, max_order)
    history: list[torch.Tensor] = []  # past derivatives, newest first
    for i in range(len(s) - 1):
        denoised = model(x, s[i], **extra)
        _report(callback, i, x, denoised, s[i], s[i + 1])
        d = to_d(x, s[i], denoised)
        weights = coefficients[i]
        if not weights:
            x = x + d * (s[i + 1] - s[i])
        else:
            step = d * weights[0]
            for w, past in zip(weights[1:], history):
                step = step + past * w
            x = x + step
        history = ([d] + history)[: max_order - 1]
    return x


def _res_multistep(model: Model, x: torch.Tensor, sigmas: torch.Tensor, extra: dict, callback: Callback,
                   noise_sampler: NoiseSampler, eta: float, cfg_pp: bool) -> torch.Tensor:
    s, noise = _floats(sigmas), _noise_fn(x, noise_sampler)
    old: tuple[torch.Tensor, float] | None = None  # (prediction, sigma_down) of the step before
    for i in range(len(s) - 1):
        denoised = model(x, s[i], **extra)
        _report(callback, i, x, denoised, s[i], s[i + 1])
        uncond = uncond_of(model, denoised) if cfg_pp else denoised
        down, up = ancestral_step(s[i], s[i + 1], eta)
        if down == 0 or old is None:
            x = denoised + to_d(x, s[i], uncond) * down
        else:
            h = math.log(s[i] / down)
            c2 = math.log(old[1] / s[i - 1]) / h
            phi_1 = math.expm1(-h) / -h
            phi_2 = (phi_1 - 1) / -h
            x = (x + (denoised - uncond)) * math.exp(-h) + (uncond * (phi_1 - phi_2 / c2)
                                                             + old[0] * (phi_2 / c2)) * h
        if s[i + 1] > 0 and up > 0:
            x = x + noise(s[i], s[i + 1]) * up
        old = (uncond, down)
    return x


@torch.no_grad()
def sample_res_multistep(model: Model, x: torch.Tensor, sigmas: torch.Tensor, extra_args: dict | None = None,
                         callback: Callback = None, noise_sampler: NoiseSampler = None) -> torch.Tensor:
    return _res_multistep(model, x, sigmas, extra_args or {}, callback, noise_sampler, 0.0, False)


@torch.no_grad()
def sample_res_multistep_ancestral(model: Model, x: torch.Tensor, sigmas: torch.Tensor,
                                   extra_args: dict | None = None, callback: Callback = None,
                                   noise_sampler: NoiseSampler = None, eta: float = 1.0) -> torch.Tensor:
    return _res_multistep(model, x, sigmas, extra_args or {}, callback, noise_sampler, eta, False)


@torch.no_grad()
def sample_res_multistep_cfg_pp(model: Model, x: torch.Tensor, sigmas: torch.Tensor,
                                extra_args: dict | None = None, callback: Callback = None,
                                noise_sampler: NoiseSampler = None) -> torch.Tensor:
    return _res_multistep(model, x, sigmas, extra_args or {}, callback, noise_sampler, 0.0, True)


@torch.no_grad()
def sample_euler_ancestral_cfg_pp(model: Model, x: torch.Tensor, sigmas: torch.Tensor,
                                  extra_args: dict | None = None, callback: Callback = None,
                                  noise_sampler: NoiseSampler = None, eta: float = 1.0,
                                  s_noise: float = 1.0) -> torch.Tensor:
    """Step to sigma_down along the unconditional direction from the guided prediction, add sigma_up noise."""
    extra, s, noise = extra_args or {}, _floats(sigmas), _noise_fn(x, noise_sampler)
    for i in range(len(s) - 1):
        denoised = model(x, s[i], **extra)
        _report(callback, i, x, denoised, s[i], s[i + 1])
        if s[i + 1] == 0:
            x = denoised
            continue
        down, up = ancestral_step(s[i], s[i + 1], eta)
        x = denoised + to_d(x, s[i], uncond_of(model, denoised)) * down
        if eta > 0 and s_noise > 0 and up > 0:
            x = x + noise(s[i], s[i + 1]) * (s_noise * up)
    return x


@torch.no_grad()
def sample_euler_cfg_pp(model: Model, x: torch.Tensor, sigmas: torch.Tensor, extra_args: dict | None = None,
                        callback: Callback = None, noise_sampler: NoiseSampler = None) -> torch.Tensor:
    return sample_euler_ancestral_cfg_pp(model, x, sigmas, extra_args, callback, noise_sampler, eta=0.0, s_noise=0.0)


@torch.no_grad()
def sample_dpmpp_2m_cfg_pp(model: Model, x: torch.Tensor, sigmas: torch.Tensor, extra_args: dict | None = None,
                           callback: Callback = None, noise_sampler: NoiseSampler = None) -> torch.Tensor:
    extra, s = extra_args or {}, _floats(sigmas)
    old_uncond: torch.Tensor | None = None
    for i in range(len(s) - 1):
        denoised = model(x, s[i], **extra)
        _report(callback, i, x, denoised, s[i], s[i + 1])
        uncond = uncond_of(model, denoised)
        if s[i + 1] == 0:
            x = denoised
            continue
        h = math.log(s[i] / s[i + 1])
        mix = uncond * -math.exp(-h)
        if old_uncond is not None:
            r = math.log(s[i - 1] / s[i]) / h
            mix = mix - (denoised - old_uncond) * (math.expm1(-h) / (2 * r))
        x = denoised + mix + x * math.exp(-h)
        old_uncond = uncond
    return x
