"""ComfyUI's KSampler for an eps model, written here from the formulas of its source, independent of Kiln's
sampling code: comfy/samplers.py (schedulers, KSampler.calculate_sigmas / set_steps / sample),
comfy/sample.py (prepare_noise), comfy/model_sampling.py (ModelSamplingDiscrete, EPS),
comfy/k_diffusion/sampling.py (the samplers, default_noise_sampler) and comfy/extra_samplers/uni_pc.py.

Only the SDE samplers' noise differs from ComfyUI: its Brownian tree (torchsde) is replaced by the
default per-step noise, as Kiln does.
"""
from __future__ import annotations

import math

import numpy as np
import scipy.integrate
import scipy.stats
import torch


class ModelSampling:
    """ModelSamplingDiscrete: a float32 sigma table, nearest timestep by log sigma."""

    def __init__(self, alphas_cumprod: torch.Tensor):
        ac = alphas_cumprod.double()
        sigmas = ((1 - ac) / ac) ** 0.5
        self.sigmas, self.log_sigmas = sigmas.float(), sigmas.log().float()
        self.sigma_min, self.sigma_max = self.sigmas[0], self.sigmas[-1]

    def timestep(self, sigma: torch.Tensor) -> torch.Tensor:
        dists = sigma.log() - self.log_sigmas[:, None]
        return dists.abs().argmin(dim=0).view(sigma.shape)

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        t = torch.clamp(t.float(), 0, len(self.sigmas) - 1)
        low, high, w = t.floor().long(), t.ceil().long(), t.frac()
        return ((1 - w) * self.log_sigmas[low] + w * self.log_sigmas[high]).exp()


def _normal(ms, steps, sgm=False):
    start, end = ms.timestep(ms.sigma_max), ms.timestep(ms.sigma_min)
    ts = torch.linspace(start, end, steps + 1)[:-1] if sgm else torch.linspace(start, end, steps)
    return torch.FloatTensor([float(ms.sigma(t)) for t in ts] + [0.0])


def _simple(ms, steps):
    ss = len(ms.sigmas) / steps
    return torch.FloatTensor([float(ms.sigmas[-(1 + int(x * ss))]) for x in range(steps)] + [0.0])


def _ddim(ms, steps):
    sigs, x, ss = [0.0], 1, max(len(ms.sigmas) // steps, 1)
    while x < len(ms.sigmas):
        sigs.append(float(ms.sigmas[x]))
        x += ss
    return torch.FloatTensor(sigs[::-1])


def _beta(ms, steps, alpha=0.6, beta=0.6):
    ts = np.rint(scipy.stats.beta.ppf(1 - np.linspace(0, 1, steps, endpoint=False), alpha, beta)
                 * (len(ms.sigmas) - 1))
    sigs, last = [], -1
    for t in ts:
        if t != last:
            sigs.append(float(ms.sigmas[int(t)]))
        last = t
    return torch.FloatTensor(sigs + [0.0])


def _linear_quadratic(ms, steps, threshold_noise=0.025):
    if steps == 1:
        schedule = [1.0, 0.0]
    else:
        linear_steps = steps // 2
        lin = [i * threshold_noise / linear_steps for i in range(linear_steps)]
        diff = linear_steps - threshold_noise * steps
        quadratic_steps = steps - linear_steps
        qc = diff / (linear_steps * quadratic_steps ** 2)
        lc = threshold_noise / linear_steps - 2 * diff / (quadratic_steps ** 2)
        const = qc * linear_steps ** 2
        schedule = [1.0 - x for x in lin + [qc * i * i + lc * i + const for i in range(linear_steps, steps)] + [1.0]]
    return torch.FloatTensor(schedule) * ms.sigma_max


def _kl_optimal(n, sigma_min, sigma_max):
    idx = torch.arange(n, dtype=torch.float).div_(n - 1)
    sigmas = idx.new_zeros(n + 1)
    sigmas[:-1] = (idx * math.atan(sigma_min) + (1 - idx) * math.atan(sigma_max)).tan_()
    return sigmas


def _karras(n, sigma_min, sigma_max, rho=7.0):
    ramp = torch.linspace(0, 1, n)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return torch.cat([(hi + ramp * (lo - hi)) ** rho, torch.zeros(1)])


def _exponential(n, sigma_min, sigma_max):
    return torch.cat([torch.linspace(math.log(sigma_max), math.log(sigma_min), n).exp(), torch.zeros(1)])


SCHEDULERS = {"simple": _simple, "sgm_uniform": lambda ms, n: _normal(ms, n, sgm=True), "ddim_uniform": _ddim,
              "beta": _beta, "normal": _normal, "linear_quadratic": _linear_quadratic}
RANGE_SCHEDULERS = {"karras": _karras, "exponential": _exponential, "kl_optimal": _kl_optimal}


def calculate_sigmas(ms, scheduler, sampler, steps, denoise=1.0):
    def calc(n):
        discard = sampler in ("dpm_2", "dpm_2_ancestral", "uni_pc", "uni_pc_bh2")
        n = n + 1 if discard else n
        if scheduler in RANGE_SCHEDULERS:
            s = RANGE_SCHEDULERS[scheduler](n, float(ms.sigma_min), float(ms.sigma_max))
        else:
            s = SCHEDULERS[scheduler](ms, n)
        return torch.cat([s[:-2], s[-1:]]) if discard else s
    if denoise > 0.9999:
        return calc(steps)
    return calc(int(steps / denoise))[-(steps + 1):]


def ancestral(sf, st, eta=1.0):
    if not eta:
        return st, 0.0
    up = min(st, eta * (st ** 2 * (sf ** 2 - st ** 2) / sf ** 2) ** 0.5)
    return (st ** 2 - up ** 2) ** 0.5, up


def to_d(x, s, den):
    return (x - den) / s


def euler(m, x, s, ns):
    for i in range(len(s) - 1):
        x = x + to_d(x, s[i], m(x, s[i])) * (s[i + 1] - s[i])
    return x


def euler_ancestral(m, x, s, ns, eta=1.0):
    for i in range(len(s) - 1):
        den = m(x, s[i])
        down, up = ancestral(s[i], s[i + 1], eta)
        x = den if down == 0 else x + to_d(x, s[i], den) * (down - s[i]) + ns() * up
    return x


def heun(m, x, s, ns):
    for i in range(len(s) - 1):
        d, dt = to_d(x, s[i], m(x, s[i])), s[i + 1] - s[i]
        if s[i + 1] == 0:
            x = x + d * dt
        else:
            x2 = x + d * dt
            x = x + (d + to_d(x2, s[i + 1], m(x2, s[i + 1]))) / 2 * dt
    return x


def _dpm2(m, x, d, s0, s1):
    mid = s0.log().lerp(s1.log(), 0.5).exp()
    x2 = x + d * (mid - s0)
    return x + to_d(x2, mid, m(x2, mid)) * (s1 - s0)


def dpm_2(m, x, s, ns):
    for i in range(len(s) - 1):
        d = to_d(x, s[i], m(x, s[i]))
        x = x + d * (s[i + 1] - s[i]) if s[i + 1] == 0 else _dpm2(m, x, d, s[i], s[i + 1])
    return x


def dpm_2_ancestral(m, x, s, ns, eta=1.0):
    for i in range(len(s) - 1):
        d = to_d(x, s[i], m(x, s[i]))
        down, up = ancestral(s[i], s[i + 1], eta)
        x = x + d * (down - s[i]) if down == 0 else _dpm2(m, x, d, s[i], down) + ns() * up
    return x


def lms(m, x, s, ns, order=4):
    t, ds = s.numpy(), []
    for i in range(len(s) - 1):
        den = m(x, s[i])
        ds = (ds + [to_d(x, s[i], den)])[-order:]
        if s[i + 1] == 0:
            x = den
            continue
        cur = min(i + 1, order)

        def coeff(j, i=i, cur=cur):
            def fn(tau):
                return math.prod((tau - t[i - k]) / (t[i - j] - t[i - k]) for k in range(cur) if k != j)
            return scipy.integrate.quad(fn, t[i], t[i + 1], epsrel=1e-4)[0]
        x = x + sum(coeff(j) * d for j, d in zip(range(cur), reversed(ds)))
    return x


def dpmpp_2m(m, x, s, ns):
    old = None
    for i in range(len(s) - 1):
        den = m(x, s[i])
        t, tn = -s[i].log(), -s[i + 1].log()
        h = tn - t
        if old is None or s[i + 1] == 0:
            x = (s[i + 1] / s[i]) * x - (-h).expm1() * den
        else:
            r = (t + s[i - 1].log()) / h
            x = (s[i + 1] / s[i]) * x - (-h).expm1() * ((1 + 1 / (2 * r)) * den - (1 / (2 * r)) * old)
        old = den
    return x


def dpmpp_2m_sde(m, x, s, ns, eta=1.0):
    old, h_last = None, None
    for i in range(len(s) - 1):
        den = m(x, s[i])
        if s[i + 1] == 0:
            x = den
        else:
            h = s[i].log() - s[i + 1].log()
            h_eta = h * (eta + 1)
            x = s[i + 1] / s[i] * (-h * eta).exp() * x + (-h_eta).expm1().neg() * den
            if old is not None:
                x = x + 0.5 * (-h_eta).expm1().neg() * (h / h_last) * (den - old)
            x = x + ns() * s[i + 1] * (-2 * h * eta).expm1().neg().sqrt()
            h_last = h
        old = den
    return x


def dpmpp_sde(m, x, s, ns, eta=1.0, r=0.5):
    for i in range(len(s) - 1):
        den = m(x, s[i])
        if s[i + 1] == 0:
            x = den
            continue
        ls, lt = -s[i].log(), -s[i + 1].log()
        h = lt - ls
        s1 = (-(ls + r * h)).exp()
        sd, su = ancestral(s[i], s1, eta)
        h_ = -sd.log() - ls
        x2 = (-h_).exp() * x - (-h_).expm1() * den + ns() * su
        den2 = m(x2, s1)
        sd, su = ancestral(s[i], s[i + 1], eta)
        h_ = -sd.log() - ls
        mixed = (1 - 1 / (2 * r)) * den + 1 / (2 * r) * den2
        x = (-h_).exp() * x - (-h_).expm1() * mixed + ns() * su
    return x


def uni_pc(m, x, sigmas, ns, variant="bh1"):
    ts = sigmas.clone()
    if ts[-1] == 0:
        ts[-1] = 0.001
    lmc = lambda s: 0.5 * torch.log(1 / (s * s + 1))
    alpha, std = lambda s: lmc(s).exp(), lambda s: (1 - (2 * lmc(s)).exp()).sqrt()
    lam = lambda s: lmc(s) - 0.5 * torch.log(1 - (2 * lmc(s)).exp())

    def model_fn(xv, s):  # data prediction from predict_eps_sigma
        xin = xv * (s ** 2 + 1) ** 0.5
        return (xv - std(s) * (xin - m(xin, s)) / s) / alpha(s)

    def update(x, models, tl, t, order, corrector):
        h = lam(t) - lam(tl[-1])
        m0, rks, d1s = models[-1], [], []
        for i in range(1, order):
            rk = (lam(tl[-(i + 1)]) - lam(tl[-1])) / h
            rks.append(float(rk))
            d1s.append((models[-(i + 1)] - m0) / rk)
        rks = torch.tensor(rks + [1.0])
        hh = -h
        h_phi_1 = torch.expm1(hh)
        h_phi_k, fact = h_phi_1 / hh - 1, 1
        b_h = hh if variant == "bh1" else torch.expm1(hh)
        rows, b = [], []
        for i in range(1, order + 1):
            rows.append(rks ** (i - 1))
            b.append(float(h_phi_k * fact / b_h))
            fact *= i + 1
            h_phi_k = h_phi_k / hh - 1 / fact
        big_r, b = torch.stack(rows), torch.tensor(b)
        base = std(t) / std(tl[-1]) * x - alpha(t) * h_phi_1 * m0
        rhos_p = torch.tensor([0.5]) if order == 2 else (torch.linalg.solve(big_r[:-1, :-1], b[:-1]) if d1s else None)
        x_t = base - alpha(t) * b_h * sum(r * d for r, d in zip(rhos_p, d1s)) if d1s else base
        if not corrector:
            return x_t, None
        rhos_c = torch.tensor([0.5]) if order == 1 else torch.linalg.solve(big_r, b)
        model_t = model_fn(x_t, t)
        corr = sum(r * d for r, d in zip(rhos_c[:-1], d1s)) if d1s else 0
        return base - alpha(t) * b_h * (corr + rhos_c[-1] * (model_t - m0)), model_t

    x = x / torch.sqrt(1.0 + ts[0] ** 2)
    steps = len(ts) - 1
    order = min(3, steps - 1)
    models, tl = [model_fn(x, ts[0])], [ts[0]]
    for index in range(1, steps):
        if index < order:
            x, mx = update(x, models, tl, ts[index], index, True)
            models, tl = models + [mx], tl + [ts[index]]
            continue
        for step in range(index, index + 1 + (index == steps - 1)):
            x, mx = update(x, models, tl, ts[step], min(order, steps + 1 - step), step != steps)
            models, tl = models[1:] + [models[-1]], tl[1:] + [ts[step]]
            if step < steps:
                models[-1] = mx
    return x / alpha(ts[-1])


SAMPLERS = {"euler": euler, "euler_ancestral": euler_ancestral, "heun": heun, "dpm_2": dpm_2,
            "dpm_2_ancestral": dpm_2_ancestral, "lms": lms, "dpmpp_2m": dpmpp_2m, "dpmpp_2m_sde": dpmpp_2m_sde,
            "dpmpp_sde": dpmpp_sde, "uni_pc": uni_pc, "ddim": euler}


def ksampler(model, latent, seed, steps, cfg, sampler, scheduler, positive, negative, denoise=1.0,
             add_noise=True, start=None, end=None, leftover=False):
    """common_ksampler -> KSampler.sample on the CPU; returns the latent."""
    ms = ModelSampling(model.alphas_cumprod)
    sigmas = calculate_sigmas(ms, scheduler, sampler, steps, denoise)
    if end is not None and end < len(sigmas) - 1:
        sigmas = sigmas[:end + 1].clone()
        if not leftover:
            sigmas[-1] = 0
    if start is not None:
        if start >= len(sigmas) - 1:
            return latent
        sigmas = sigmas[start:]
    noise = (torch.randn(latent.size(), generator=torch.manual_seed(seed), dtype=torch.float32, device="cpu")
             if add_noise else torch.zeros_like(latent))
    s0 = float(sigmas[0])
    top = math.isclose(float(ms.sigma_max), s0, rel_tol=1e-05) or s0 > float(ms.sigma_max)
    x = noise * (math.sqrt(1 + s0 ** 2) if top else s0) + latent
    generator = torch.Generator().manual_seed(seed + 1)

    def denoise_fn(x, sigma):
        t = ms.timestep(sigma).float().expand(x.shape[0])
        xin = x / (sigma ** 2 + 1) ** 0.5
        run = lambda c: x - model.apply(xin, t, c) * sigma
        if cfg == 1:
            return run(positive)
        u = run(negative)
        return u + (run(positive) - u) * cfg

    with torch.no_grad():
        return SAMPLERS[sampler](denoise_fn, x, sigmas, lambda: torch.randn(x.size(), generator=generator))
