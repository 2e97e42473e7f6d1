"""Our samplers against diffusers' schedulers, run by hand on the same tiny random eps model.

diffusers is a test-only reference here. Its DDIM/PNDM/DPM-Solver/UniPC/DDPM loops
work on variance-preserving samples x_vp = x / sqrt(1 + sigma^2); Euler and LMS
on sigma-space samples like ours. Each test starts both from the same noise and
compares the results in the scheduler's own space.
"""
from __future__ import annotations

import math

import diffusers
import pytest
import torch
from torch import nn

from engine.models.configs import DiffusionConfig
from engine.models.diffusion import LatentDiffusionModel, make_betas
from engine.sampling.denoiser import DiscreteDenoiser, GuidedDenoiser
from engine.sampling.paper_samplers import sample_ddim, sample_ddpm, sample_plms
from engine.sampling.samplers import (
    sample_dpmpp_2m,
    sample_euler,
    sample_euler_ancestral,
    sample_heun,
    sample_lms,
)
from engine.sampling.schedules import get_sigmas
from engine.sampling.unipc import sample_uni_pc

STEPS = 10  # linspace(0, 999, 10) hits whole timesteps, so no interpolation question arises
TOL = 1e-4


@pytest.fixture(autouse=True)
def _one_thread():
    """These tensors are tiny: a second OpenMP thread only adds spin-waiting on a busy machine."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


class TinyEps(nn.Module):
    """A small time-dependent conv net with the UNet's forward signature."""

    def __init__(self, channels: int = 4, width: int = 16):
        super().__init__()
        self.conv_in = nn.Conv2d(channels, width, 3, padding=1)
        self.time = nn.Linear(2, width)
        self.conv_out = nn.Conv2d(width, channels, 3, padding=1)

    def forward(self, x, timesteps, context=None, y=None):
        phase = timesteps.float()[:, None] / 1000 * math.pi
        emb = self.time(torch.cat([phase.sin(), phase.cos()], dim=1))[:, :, None, None]
        return self.conv_out(torch.tanh(self.conv_in(x) + emb)) + 0.5 * x


@pytest.fixture(scope="module")
def model() -> LatentDiffusionModel:
    torch.manual_seed(0)
    return LatentDiffusionModel(TinyEps(), DiffusionConfig(conditioning_key=None)).eval()


@pytest.fixture(scope="module")
def betas(model) -> list[float]:
    return make_betas(model.config).tolist()


@pytest.fixture(scope="module")
def start_noise() -> torch.Tensor:
    return torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))


def eps_of(model, x_in: torch.Tensor, t) -> torch.Tensor:
    t = torch.as_tensor(t).float().expand(x_in.shape[0])
    with torch.no_grad():
        return model.apply(x_in, t, None)


def run_sigma_space(model, scheduler, x: torch.Tensor, **step_kwargs) -> torch.Tensor:
    """Euler/LMS/Heun-style loop: the scheduler scales the model input itself."""
    for t in scheduler.timesteps:
        eps = eps_of(model, scheduler.scale_model_input(x, t), t)
        x = scheduler.step(eps, t, x, **step_kwargs).prev_sample
    return x


def run_vp_space(model, scheduler, x_vp: torch.Tensor, **step_kwargs) -> torch.Tensor:
    for t in scheduler.timesteps:
        x_vp = scheduler.step(eps_of(model, x_vp, t), t, x_vp, **step_kwargs).prev_sample
    return x_vp


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max())


def test_normal_schedule_and_euler_match_euler_discrete(model, betas, start_noise):
    sched = diffusers.EulerDiscreteScheduler(trained_betas=betas)
    sched.set_timesteps(STEPS)
    den = DiscreteDenoiser(model)
    sigmas = get_sigmas(den, "normal", STEPS)
    assert max_diff(sigmas, sched.sigmas) < 1e-4 * float(sigmas[0])
    x = start_noise * float(sigmas[0])
    ours = sample_euler(GuidedDenoiser(den, None), x, sigmas)
    theirs = run_sigma_space(model, sched, x.clone())
    assert max_diff(ours, theirs) <= TOL


def test_euler_ancestral_matches_with_the_same_noise(model, betas, start_noise):
    sched = diffusers.EulerAncestralDiscreteScheduler(trained_betas=betas)
    sched.set_timesteps(STEPS)
    den = DiscreteDenoiser(model)
    sigmas = get_sigmas(den, "normal", STEPS)
    x = start_noise * float(sigmas[0])
    ours_gen, theirs_gen = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    ours = sample_euler_ancestral(GuidedDenoiser(den, None), x, sigmas,
                                  noise_sampler=lambda s, sn: torch.randn(x.shape, generator=ours_gen))
    theirs = run_sigma_space(model, sched, x.clone(), generator=theirs_gen)
    assert max_diff(ours, theirs) <= TOL
    deterministic = sample_euler(GuidedDenoiser(den, None), x, sigmas)
    assert max_diff(ours, deterministic) > 0.05  # the noise really was used


def test_lms_and_heun_match(model, betas, start_noise):
    den = DiscreteDenoiser(model)
    sigmas = get_sigmas(den, "normal", STEPS)
    x = start_noise * float(sigmas[0])
    for scheduler_cls, ours_fn in ((diffusers.LMSDiscreteScheduler, sample_lms),
                                   (diffusers.HeunDiscreteScheduler, sample_heun)):
        sched = scheduler_cls(trained_betas=betas)
        sched.set_timesteps(STEPS)
        ours = ours_fn(GuidedDenoiser(den, None), x, sigmas)
        assert max_diff(ours, run_sigma_space(model, sched, x.clone())) <= TOL, scheduler_cls.__name__


def ddim_sigmas(den: DiscreteDenoiser, end_at_alpha_0: bool) -> torch.Tensor:
    """Original DDIM timesteps 901, 801, ..., 1; the last step to abar_0 (set_alpha_to_one=False) or to 1."""
    sigmas = get_sigmas(den, "ddim_uniform", STEPS)
    if end_at_alpha_0:
        sigmas[-1] = den.sigma_min
    return sigmas


def to_vp(x: torch.Tensor, sigma: float) -> torch.Tensor:
    return x / math.sqrt(1 + sigma**2)


@pytest.mark.parametrize("set_alpha_to_one", [False, True])
def test_ddim_eta0_matches_ddim_scheduler(model, betas, start_noise, set_alpha_to_one):
    sched = diffusers.DDIMScheduler(trained_betas=betas, set_alpha_to_one=set_alpha_to_one, steps_offset=1,
                                    clip_sample=False)
    sched.set_timesteps(STEPS)
    assert sched.timesteps.tolist() == list(range(901, 0, -100))
    den = DiscreteDenoiser(model)
    sigmas = ddim_sigmas(den, end_at_alpha_0=not set_alpha_to_one)
    x = start_noise * math.sqrt(1 + float(sigmas[0]) ** 2)  # x_T ~ N(0, I) in VP terms
    ours = sample_ddim(GuidedDenoiser(den, None), x, sigmas, eta=0.0)
    theirs = run_vp_space(model, sched, to_vp(x, float(sigmas[0])), eta=0.0)
    assert max_diff(to_vp(ours, float(sigmas[-1])), theirs) <= TOL


def test_ddim_eta1_matches_with_fed_noise_and_the_paper_rule(model, betas, start_noise):
    sched = diffusers.DDIMScheduler(trained_betas=betas, set_alpha_to_one=False, steps_offset=1, clip_sample=False)
    sched.set_timesteps(STEPS)
    den = DiscreteDenoiser(model)
    sigmas = ddim_sigmas(den, end_at_alpha_0=True)
    noises = iter(torch.randn(STEPS, *start_noise.shape, generator=torch.Generator().manual_seed(3)))
    fed = list(torch.randn(STEPS, *start_noise.shape, generator=torch.Generator().manual_seed(3)))
    x = start_noise * math.sqrt(1 + float(sigmas[0]) ** 2)
    ours = sample_ddim(GuidedDenoiser(den, None), x, sigmas, eta=1.0, noise_sampler=lambda s, sn: next(noises))

    x_vp = to_vp(x, float(sigmas[0]))
    for t, noise in zip(sched.timesteps, fed):
        x_vp = sched.step(eps_of(model, x_vp, t), t, x_vp, eta=1.0, variance_noise=noise).prev_sample
    assert max_diff(to_vp(ours, float(sigmas[-1])), x_vp) <= TOL

    paper = paper_ddim(model, to_vp(x, float(sigmas[0])), sched.timesteps.tolist(), eta=1.0, noises=fed)
    assert max_diff(to_vp(ours, float(sigmas[-1])), paper) <= TOL


def paper_ddim(model, x: torch.Tensor, timesteps: list[int], eta: float, noises) -> torch.Tensor:
    """The DDIM update written out as in the paper, over alphas_cumprod, x in VP terms."""
    abar = model.alphas_cumprod
    prev = timesteps[1:] + [None]
    for t, t_prev, noise in zip(timesteps, prev, noises):
        a = float(abar[t])
        a_prev = float(abar[t_prev]) if t_prev is not None else float(abar[0])
        eps = eps_of(model, x, t)
        pred_x0 = (x - math.sqrt(1 - a) * eps) / math.sqrt(a)
        sigma = eta * math.sqrt((1 - a_prev) / (1 - a)) * math.sqrt(1 - a / a_prev)
        x = math.sqrt(a_prev) * pred_x0 + math.sqrt(1 - a_prev - sigma**2) * eps + sigma * noise
    return x


def test_plms_matches_pndm_without_prk_steps(model, betas, start_noise):
    sched = diffusers.PNDMScheduler(trained_betas=betas, skip_prk_steps=True, steps_offset=1,
                                    set_alpha_to_one=False)
    sched.set_timesteps(STEPS)
    den = DiscreteDenoiser(model)
    sigmas = ddim_sigmas(den, end_at_alpha_0=True)
    evals = []
    x = start_noise * math.sqrt(1 + float(sigmas[0]) ** 2)
    ours = sample_plms(GuidedDenoiser(den, None, on_model_eval=evals.append), x, sigmas)
    theirs = run_vp_space(model, sched, to_vp(x, float(sigmas[0])))
    assert max_diff(to_vp(ours, float(sigmas[-1])), theirs) <= TOL
    assert len(evals) == STEPS + 1  # the pseudo improved Euler first step costs one extra


def test_dpmpp_2m_karras_matches_dpm_solver_multistep(model, betas, start_noise):
    sched = diffusers.DPMSolverMultistepScheduler(trained_betas=betas, use_karras_sigmas=True,
                                                  algorithm_type="dpmsolver++", solver_order=2)
    sched.set_timesteps(STEPS)
    den = DiscreteDenoiser(model, quantize_timesteps=True)  # diffusers rounds the model's timesteps
    sigmas = get_sigmas(den, "karras", STEPS)
    assert max_diff(sigmas, sched.sigmas) < 1e-4 * float(sigmas[0])
    x = start_noise * math.sqrt(1 + float(sigmas[0]) ** 2)
    ours = sample_dpmpp_2m(GuidedDenoiser(den, None), x, sigmas)
    theirs = run_vp_space(model, sched, to_vp(x, float(sigmas[0])))
    assert max_diff(ours, theirs) <= TOL


def test_uni_pc_bh2_order2_matches_unipc_multistep(model, betas, start_noise):
    sched = diffusers.UniPCMultistepScheduler(trained_betas=betas, use_karras_sigmas=True, solver_order=2,
                                              solver_type="bh2")
    sched.set_timesteps(STEPS)
    den = DiscreteDenoiser(model, quantize_timesteps=True)
    sigmas = get_sigmas(den, "karras", STEPS)
    x = start_noise * math.sqrt(1 + float(sigmas[0]) ** 2)
    ours = sample_uni_pc(GuidedDenoiser(den, None), x, sigmas, order=2, variant="bh2")
    theirs = run_vp_space(model, sched, to_vp(x, float(sigmas[0])))
    assert max_diff(ours, theirs) <= TOL


def test_ddpm_matches_ddpm_scheduler_with_the_same_noise(model, betas, start_noise):
    sched = diffusers.DDPMScheduler(trained_betas=betas, clip_sample=False, steps_offset=1,
                                    timestep_spacing="leading")
    sched.set_timesteps(STEPS)
    den = DiscreteDenoiser(model)
    sigmas = ddim_sigmas(den, end_at_alpha_0=False)
    ours_gen, theirs_gen = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    x = start_noise * math.sqrt(1 + float(sigmas[0]) ** 2)
    ours = sample_ddpm(GuidedDenoiser(den, None), x, sigmas,
                       noise_sampler=lambda s, sn: torch.randn(x.shape, generator=ours_gen))
    theirs = run_vp_space(model, sched, to_vp(x, float(sigmas[0])), generator=theirs_gen)
    assert max_diff(ours, theirs) <= TOL
