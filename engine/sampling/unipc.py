"""UniPC (Zhao et al. 2023): unified predictor-corrector multistep sampler, data prediction.

Written in sigma space with lambda = -log(sigma). Each step predicts x at the
next sigma with UniP of order p, then, once the model has been evaluated
there (the evaluation the next step needs anyway), corrects that x with UniC
of the same order: no extra model calls. The last step to sigma 0 returns the
model's prediction, and the order drops to what the history allows.

The coefficients solve R rho = b where R[k, m] = r_m ** k over the step ratios
r_m = (lambda_m - lambda_i) / h and b[k] = phi_(k+1)(h) (k+1)! / B(h), with
B(h) = h ("bh1") or expm1(h) ("bh2"), as in the paper's Algorithm 2.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from engine.sampling.samplers import Callback, Model, NoiseSampler, _floats, _report


@dataclass
class _Prediction:
    """What UniC needs from the UniP step that produced the current x."""

    base: torch.Tensor  # first-order part of the prediction
    b_h: float
    rhos_c: np.ndarray  # corrector weights; the last one multiplies the new model output
    diffs: list[torch.Tensor]  # D1_m = (m_m - m_0) / r_m of the past outputs
    m0: torch.Tensor


def _coefficients(rks: list[float], hh: float, variant: str) -> tuple[np.ndarray, np.ndarray, float, float]:
    """(R, b, h_phi_1, B_h) for order len(rks) + 1, with hh = -h (data prediction)."""
    order = len(rks) + 1
    ratios = np.array(rks + [1.0])
    h_phi_1 = math.expm1(hh)
    b_h = hh if variant == "bh1" else math.expm1(hh)
    h_phi_k, factorial = h_phi_1 / hh - 1, 1
    rows, b = [], []
    for k in range(1, order + 1):
        rows.append(ratios ** (k - 1))
        b.append(h_phi_k * factorial / b_h)
        factorial *= k + 1
        h_phi_k = h_phi_k / hh - 1 / factorial
    return np.stack(rows), np.array(b), h_phi_1, b_h


def _predict(x: torch.Tensor, history: list[tuple[float, torch.Tensor]], sigma: float, sigma_next: float,
             order: int, variant: str) -> tuple[torch.Tensor, _Prediction]:
    """UniP from (lambda, model output) history (newest last) to sigma_next."""
    lam, m0 = history[-1]
    h = math.log(sigma / sigma_next)
    rks = [(history[-1 - m][0] - lam) / h for m in range(1, order)]
    diffs = [(history[-1 - m][1] - m0) / rk for m, rk in enumerate(rks, start=1)]
    R, b, h_phi_1, b_h = _coefficients(rks, -h, variant)
    base = x * (sigma_next / sigma) - m0 * h_phi_1
    if order == 1:
        rhos_p, rhos_c = np.zeros(0), np.array([0.5])
    else:
        rhos_p = np.array([0.5]) if order == 2 else np.linalg.solve(R[:-1, :-1], b[:-1])
        rhos_c = np.linalg.solve(R, b)
    x_next = base - _weighted(diffs, rhos_p) * b_h if diffs else base
    return x_next, _Prediction(base, b_h, rhos_c, diffs, m0)


def _correct(pred: _Prediction, model_out: torch.Tensor) -> torch.Tensor:
    """UniC: refine the predicted x with the model output evaluated at it."""
    correction = (model_out - pred.m0) * float(pred.rhos_c[-1])
    if pred.diffs:
        correction = correction + _weighted(pred.diffs, pred.rhos_c[:-1])
    return pred.base - correction * pred.b_h


def _weighted(tensors: list[torch.Tensor], weights: np.ndarray) -> torch.Tensor:
    total = tensors[0] * float(weights[0])
    for t, w in zip(tensors[1:], weights[1:]):
        total = total + t * float(w)
    return total


@torch.no_grad()
def sample_uni_pc(model: Model, x: torch.Tensor, sigmas: torch.Tensor, extra_args: dict | None = None,
                  callback: Callback = None, noise_sampler: NoiseSampler = None,
                  order: int = 3, variant: str = "bh1") -> torch.Tensor:
    extra, s = extra_args or {}, _floats(sigmas)
    history: list[tuple[float, torch.Tensor]] = []
    pending: _Prediction | None = None
    steps = len(s) - 1
    for i in range(steps):
        denoised = model(x, s[i], **extra)
        _report(callback, i, x, denoised, s[i], s[i + 1])
        if pending is not None:
            x = _correct(pending, denoised)
        history = (history + [(-math.log(s[i]), denoised)])[-order:]
        if s[i + 1] == 0:
            x = denoised
            break
        # Lower order near the end of short runs, as the paper recommends.
        this_order = min(order, len(history), steps - i if steps < 10 else order)
        x, pending = _predict(x, history, s[i], s[i + 1], this_order, variant)
    return x


@torch.no_grad()
def sample_uni_pc_bh2(model: Model, x: torch.Tensor, sigmas: torch.Tensor, extra_args: dict | None = None,
                      callback: Callback = None, noise_sampler: NoiseSampler = None) -> torch.Tensor:
    return sample_uni_pc(model, x, sigmas, extra_args, callback, noise_sampler, variant="bh2")


COMFY_LAST_SIGMA = 0.001  # ComfyUI's UniPC stops here instead of at sigma 0


@torch.no_grad()
def sample_uni_pc_comfy(model: Model, x: torch.Tensor, sigmas: torch.Tensor, extra_args: dict | None = None,
                        callback: Callback = None, noise_sampler: NoiseSampler = None,
                        variant: str = "bh1") -> torch.Tensor:
    """UniPC run as ComfyUI runs it (its "uni_pc" / "uni_pc_bh2").

    Differences from `sample_uni_pc`: a last sigma of 0 becomes 0.001 and the last step is a
    first-order UniP step there (no model call, no corrector) instead of returning the prediction;
    the order is min(3, steps - 1), rising 1, 2, ... at the start and falling at the end
    (min(order, steps + 1 - k) for step k) whatever the number of steps; one step returns x as is.
    """
    extra, s = extra_args or {}, _floats(sigmas)
    if s[-1] == 0:
        s[-1] = COMFY_LAST_SIGMA
    steps = len(s) - 1
    order = min(3, steps - 1)
    history = [(-math.log(s[0]), model(x, s[0], **extra))]
    if steps < 2:
        _report(callback, 0, x, history[0][1], s[0], s[-1])
        return x
    for k in range(1, steps + 1):
        _report(callback, k - 1, x, history[-1][1], s[k - 1], s[k])
        x, pending = _predict(x, history, s[k - 1], s[k], max(1, min(k, order, steps + 1 - k)), variant)
        if k == steps:
            break
        out = model(x, s[k], **extra)
        x = _correct(pending, out)
        history = (history + [(-math.log(s[k]), out)])[-order:]
    return x


def sample_uni_pc_bh2_comfy(model: Model, x: torch.Tensor, sigmas: torch.Tensor, extra_args: dict | None = None,
                            callback: Callback = None, noise_sampler: NoiseSampler = None) -> torch.Tensor:
    return sample_uni_pc_comfy(model, x, sigmas, extra_args, callback, noise_sampler, variant="bh2")
