"""The paper's samplers through `pipeline.sample` and the Sampler node, against the original update rules.

The reference here is written from the papers' formulas over alphas_cumprod, in
the variance-preserving x of the original code: timesteps range(0, T, T // S) + 1
descending, and the last step goes to alphas_cumprod[0] (not to alpha 1), so the
final latent keeps a little noise. Per-step noise is drawn as the pipeline
draws it: one CPU generator per batch item seeded seed + k, the initial noise
first, then one draw per stochastic step.
"""
from __future__ import annotations

import math

import pytest
import torch
from test_sampling import small_unet_model

from engine.models.diffusion import LatentDiffusionModel
from engine.sampling.pipeline import SamplingOptions, sample
from engine.values import Conditioning, Latent
from nodes.sampler import SAMPLER

STEPS, SEED, BATCH = 10, 4, 2
TOL = 1e-5  # relative to the largest value of the reference


@pytest.fixture(scope="module")
def model() -> LatentDiffusionModel:
    """A tiny SD-shaped UNet with cross-attention (one thread: tests/conftest.py)."""
    return small_unet_model()


def text(seed: int) -> Conditioning:
    return Conditioning(crossattn=torch.randn(1, 3, 8, generator=torch.Generator().manual_seed(seed)))


POSITIVE, NEGATIVE = text(1), text(2)


class PaperReference:
    """The original code's loops, written out from the papers; x in VP terms, float64 arithmetic."""

    def __init__(self, model: LatentDiffusionModel, cfg_scale: float, seed: int = SEED):
        c = model.config
        betas = torch.linspace(c.linear_start**0.5, c.linear_end**0.5, c.timesteps, dtype=torch.float64) ** 2
        self.abar = torch.cumprod(1 - betas, dim=0).tolist()
        self.model, self.cfg_scale = model, cfg_scale
        self.generators = [torch.Generator().manual_seed(seed + k) for k in range(BATCH)]
        stride = c.timesteps // STEPS
        self.timesteps = [t + 1 for t in range(0, c.timesteps, stride)][::-1]  # 901, 801, ..., 1

    def draw(self) -> torch.Tensor:
        return torch.stack([torch.randn(4, 8, 8, generator=g) for g in self.generators]).double()

    def eps(self, x: torch.Tensor, t: int) -> torch.Tensor:
        """Classifier-free guidance on eps: e_u + s (e_c - e_u)."""
        ts = torch.full((BATCH,), float(t))
        with torch.no_grad():
            e_c = self.model.apply(x.float(), ts, POSITIVE).double()
            if self.cfg_scale == 1:
                return e_c
            e_u = self.model.apply(x.float(), ts, NEGATIVE).double()
        return e_u + self.cfg_scale * (e_c - e_u)

    def steps(self, final_abar: float | None = None) -> list[tuple[int, float, float, int]]:
        """(t, a_t, a_prev, t_next) per step; the last a_prev is alphas_cumprod[0] unless given."""
        ts = self.timesteps
        last = self.abar[0] if final_abar is None else final_abar
        prevs = [self.abar[t] for t in ts[1:]] + [last]
        return [(t, self.abar[t], a_prev, ts[min(i + 1, len(ts) - 1)])
                for i, (t, a_prev) in enumerate(zip(ts, prevs))]

    def ddim_update(self, x: torch.Tensor, eps: torch.Tensor, a: float, a_prev: float,
                    eta: float) -> torch.Tensor:
        """x_prev = sqrt(a_prev) x0 + sqrt(1 - a_prev - s^2) eps + s z, s = eta sigma_t of the DDIM paper."""
        pred_x0 = (x - math.sqrt(1 - a) * eps) / math.sqrt(a)
        s = eta * math.sqrt((1 - a_prev) / (1 - a)) * math.sqrt(1 - a / a_prev)
        x_prev = math.sqrt(a_prev) * pred_x0 + math.sqrt(1 - a_prev - s**2) * eps
        return x_prev + s * self.draw() if s > 0 else x_prev

    def ddim(self, eta: float, final_abar: float | None = None) -> torch.Tensor:
        x = self.draw()  # x_T ~ N(0, I)
        for t, a, a_prev, _ in self.steps(final_abar):
            x = self.ddim_update(x, self.eps(x, t), a, a_prev, eta)
        return x

    def ddpm(self) -> torch.Tensor:
        """Ancestral steps from the posterior q(x_prev | x_t, x0): its mean plus sqrt(beta~) noise."""
        x = self.draw()
        for t, a, a_prev, _ in self.steps():
            pred_x0 = (x - math.sqrt(1 - a) * self.eps(x, t)) / math.sqrt(a)
            beta = 1 - a / a_prev
            mean = (math.sqrt(a_prev) * beta / (1 - a)) * pred_x0 + (math.sqrt(1 - beta) * (1 - a_prev) / (1 - a)) * x
            x = mean + math.sqrt(beta * (1 - a_prev) / (1 - a)) * self.draw()
        return x

    def plms(self) -> torch.Tensor:
        """Pseudo improved Euler first, then Adams-Bashforth of order 2, 3, 4 on eps."""
        x, old = self.draw(), []
        for t, a, a_prev, t_next in self.steps():
            e = self.eps(x, t)
            if not old:
                e_next = self.eps(self.ddim_update(x, e, a, a_prev, 0.0), t_next)
                e_prime = (e + e_next) / 2
            elif len(old) == 1:
                e_prime = (3 * e - old[-1]) / 2
            elif len(old) == 2:
                e_prime = (23 * e - 16 * old[-1] + 5 * old[-2]) / 12
            else:
                e_prime = (55 * e - 59 * old[-1] + 37 * old[-2] - 9 * old[-3]) / 24
            x = self.ddim_update(x, e_prime, a, a_prev, 0.0)
            old = (old + [e])[-3:]
        return x


def run(model, sampler: str, cfg: float, scheduler: str = "ddim_uniform", ddim_eta: float = 0.0) -> torch.Tensor:
    options = SamplingOptions(sampler=sampler, scheduler=scheduler, steps=STEPS, cfg=cfg, ddim_eta=ddim_eta)
    latent = Latent(torch.zeros(BATCH, 4, 8, 8))
    return sample(model, latent, POSITIVE, NEGATIVE, SEED, options).samples.double()


def relative_error(ours: torch.Tensor, reference: torch.Tensor) -> float:
    return float((ours - reference).abs().max() / reference.abs().max())


@pytest.mark.parametrize("eta", [0.0, 1.0])
@pytest.mark.parametrize("cfg", [1.0, 3.0])
def test_ddim_with_ddim_uniform_follows_the_original_trajectory_to_its_last_step(model, eta, cfg):
    reference = PaperReference(model, cfg).ddim(eta)
    assert relative_error(run(model, "ddim", cfg, ddim_eta=eta), reference) <= TOL


@pytest.mark.parametrize("cfg", [1.0, 3.0])
def test_plms_with_ddim_uniform_follows_the_original_trajectory(model, cfg):
    assert relative_error(run(model, "plms", cfg), PaperReference(model, cfg).plms()) <= TOL


def test_ddpm_with_ddim_uniform_follows_the_posterior_with_the_same_noise(model):
    reference = PaperReference(model, 3.0)
    ddpm = reference.ddpm()
    assert relative_error(run(model, "ddpm", 3.0), ddpm) <= TOL
    # The DDPM posterior is DDIM at eta 1 (same noise, same steps): a check on the reference itself.
    assert relative_error(PaperReference(model, 3.0).ddim(1.0), ddpm) <= TOL


def test_the_original_ending_keeps_a_trace_of_noise_and_to_zero_ends_on_x0(model):
    reference = PaperReference(model, 3.0)
    to_zero = run(model, "ddim", 3.0, scheduler="ddim_uniform_to_zero")
    assert relative_error(to_zero, reference.ddim(0.0, final_abar=1.0)) <= TOL
    assert relative_error(run(model, "ddim", 3.0), to_zero) > 1e-4


def test_other_samplers_end_at_sigma_0_with_either_ddim_uniform(model):
    for name in ("euler", "dpmpp_2m"):
        assert torch.equal(run(model, name, 3.0), run(model, name, 3.0, scheduler="ddim_uniform_to_zero")), name


class QuietContext:
    node_id, settings, models, graph_json = "sampler", None, None, {}

    def progress(self, step, total, preview=None):
        pass

    def check_cancelled(self):
        pass

    def count_model_evals(self, n=1):
        pass


def test_the_sampler_node_gives_the_original_ddim_trajectory(model):
    params = {**SAMPLER.default_params(), "sampler": "ddim", "scheduler": "ddim_uniform", "steps": STEPS,
              "cfg": 3.0, "seed": SEED, "ddim_eta": 1.0}
    inputs = {"model": model, "positive": POSITIVE, "negative": NEGATIVE,
              "latent": Latent(torch.zeros(BATCH, 4, 8, 8))}
    out = SAMPLER.compute(QuietContext(), inputs, params)["latent"].samples.double()
    assert relative_error(out, PaperReference(model, 3.0).ddim(1.0)) <= TOL
