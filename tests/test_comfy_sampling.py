"""The "comfyui" sampling convention gives ComfyUI's picture; Kiln's own convention is unchanged.

The reference is tests/comfy_reference.py: ComfyUI's KSampler written from its source's formulas.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from comfy_reference import ModelSampling, calculate_sigmas, ksampler
from test_sampling import FakeContext, run_node, text_cond, tiny_model

from engine.sampling.denoiser import DiscreteDenoiser
from engine.sampling.noise import seeded_noise
from engine.sampling.pipeline import SamplingOptions, _sigmas, sample
from engine.values import Latent
from nodes.image_io import to_uint8_hwc
from nodes.sampler import SAMPLER
from nodes.sampler_advanced import SAMPLER_ADVANCED

SAMPLERS = ("euler", "euler_ancestral", "heun", "dpm_2", "dpm_2_ancestral", "lms", "dpmpp_2m", "dpmpp_2m_sde",
            "dpmpp_sde", "uni_pc", "ddim")
SCHEDULERS = ("normal", "karras", "exponential", "sgm_uniform", "simple", "ddim_uniform", "beta")
ALL_SCHEDULERS = SCHEDULERS + ("linear_quadratic", "kl_optimal")
SEED = 1234


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def model():
    return tiny_model(conditional=True)


def _comfy(**kw) -> SamplingOptions:
    return SamplingOptions(convention="comfyui", **kw)


@pytest.mark.parametrize("scheduler", ALL_SCHEDULERS)
@pytest.mark.parametrize("sampler", ["euler", "dpm_2", "uni_pc"])
def test_sigmas_match_comfyui_for_every_scheduler(model, scheduler, sampler):
    denoiser, ms = DiscreteDenoiser(model, quantize_timesteps=True), ModelSampling(model.alphas_cumprod)
    for steps in (1, 5, 7, 30):
        for denoise in (1.0, 0.6):
            if steps == 1 and (sampler == "uni_pc" or scheduler == "kl_optimal"):
                continue  # ComfyUI's kl_optimal divides by steps - 1 (NaN); Kiln gives [sigma_max, 0]
            ours = _sigmas(denoiser, _comfy(sampler=sampler, scheduler=scheduler, steps=steps, denoise=denoise))
            ref = torch.unique_consecutive(calculate_sigmas(ms, scheduler, sampler, steps, denoise))
            assert ours.shape == ref.shape, (steps, denoise)
            assert torch.allclose(ours, ref, rtol=1e-5, atol=1e-6), (steps, denoise)


def test_comfyui_ddim_uniform_takes_every_cth_timestep_from_1(model):
    sigmas = _sigmas(DiscreteDenoiser(model), _comfy(sampler="euler", scheduler="ddim_uniform", steps=7))
    assert len(sigmas) == 9  # 1000 // 7 = 142: timesteps 1, 143, ..., 995 (8 steps), then 0


def _run(model, latent, sampler, scheduler, steps=6, cfg=3.0, **kw):
    positive, negative = text_cond(3, seed=1), text_cond(3, seed=2)
    ours = sample(model, latent, positive, negative, SEED,
                  _comfy(sampler=sampler, scheduler=scheduler, steps=steps, cfg=cfg, **kw)).samples
    ref = ksampler(model, latent.samples, SEED, steps, cfg, sampler, scheduler, positive, negative,
                   denoise=kw.get("denoise", 1.0))
    return ours, ref


@pytest.mark.parametrize("scheduler", SCHEDULERS)
@pytest.mark.parametrize("sampler", SAMPLERS)
def test_trajectory_matches_comfyui(model, sampler, scheduler):
    # Kiln steps in float64, ComfyUI in float32: a sigma within an ulp of halfway between two timesteps
    # may round to either (dpm_2_ancestral's first midpoint with 6 "normal" steps does); 5 steps avoid it.
    steps = 5 if (sampler, scheduler) == ("dpm_2_ancestral", "normal") else 6
    ours, ref = _run(model, Latent(torch.zeros(1, 4, 8, 8)), sampler, scheduler, steps=steps)
    assert torch.allclose(ours, ref, atol=2e-4, rtol=1e-4), (ours - ref).abs().max()


@pytest.mark.parametrize("sampler", ["euler_ancestral", "dpmpp_2m", "uni_pc"])
def test_batch_of_two_gets_comfyuis_noise(model, sampler):
    ours, ref = _run(model, Latent(torch.zeros(2, 4, 8, 8)), sampler, "karras")
    assert torch.allclose(ours, ref, atol=2e-4, rtol=1e-4)
    assert not torch.allclose(ours[1], ours[0], atol=1e-2)


def test_image_to_image_matches_comfyui(model):
    latent = Latent(torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(5)))
    ours, ref = _run(model, latent, "euler_ancestral", "normal", denoise=0.55)
    assert torch.allclose(ours, ref, atol=2e-4, rtol=1e-4)


def _advanced(model, latent, sampler, **params):
    inputs = {"model": model, "positive": text_cond(3, seed=1), "negative": text_cond(3, seed=2), "latent": latent}
    base = {"seed": SEED, "steps": 8, "cfg": 3.0, "sampler": sampler, "scheduler": "karras",
            "convention": "comfyui"}
    return run_node(SAMPLER_ADVANCED, inputs, FakeContext(), **base, **params)["latent"]


@pytest.mark.parametrize("sampler", ["euler", "heun"])
def test_advanced_samplers_split_one_schedule_exactly(model, sampler):
    empty = Latent(torch.zeros(1, 4, 8, 8))
    first = _advanced(model, empty, sampler, end_at_step=3, return_with_leftover_noise=True)
    second = _advanced(model, first, sampler, add_noise=False, start_at_step=3)
    inputs = {"model": model, "positive": text_cond(3, seed=1), "negative": text_cond(3, seed=2), "latent": empty}
    whole = run_node(SAMPLER, inputs, FakeContext(), seed=SEED, steps=8, cfg=3.0, sampler=sampler,
                     scheduler="karras", convention="comfyui")["latent"]
    assert torch.allclose(second.samples, whole.samples, atol=1e-5)
    ref = ksampler(model, empty.samples, SEED, 8, 3.0, sampler, "karras", text_cond(3, seed=1),
                   text_cond(3, seed=2), end=3, leftover=True)
    assert torch.allclose(first.samples, ref, atol=1e-4)


def test_advanced_sampler_ending_early_without_leftover_noise_denoises(model):
    empty = Latent(torch.zeros(1, 4, 8, 8))
    out = _advanced(model, empty, "euler", end_at_step=3)
    ref = ksampler(model, empty.samples, SEED, 8, 3.0, "euler", "karras", text_cond(3, seed=1),
                   text_cond(3, seed=2), end=3)
    assert torch.allclose(out.samples, ref, atol=1e-4)
    past = _advanced(model, empty, "euler", start_at_step=8)
    assert torch.equal(past.samples, empty.samples)


def test_kiln_convention_is_unchanged_by_default(model):
    assert SamplingOptions().convention == "kiln"
    latent = Latent(torch.zeros(2, 4, 8, 8))
    options = SamplingOptions(sampler="euler", scheduler="karras", steps=4, cfg=1.0)
    kiln = sample(model, latent, text_cond(3), None, SEED, options)
    assert kiln.seeds == (SEED, SEED + 1)
    single = sample(model, Latent(torch.zeros(1, 4, 8, 8)), text_cond(3), None, SEED + 1, options)
    assert torch.allclose(kiln.samples[1], single.samples[0], atol=1e-5)
    assert torch.equal(seeded_noise([SEED], (4, 8, 8)), seeded_noise([SEED], (4, 8, 8)))


@pytest.mark.parametrize("pp, plain", [("euler_cfg_pp", "euler"), ("dpmpp_2m_cfg_pp", "dpmpp_2m"),
                                       ("res_multistep_cfg_pp", "res_multistep")])
def test_cfg_pp_samplers_without_a_negative_step_as_their_plain_namesakes(model, pp, plain):
    latent = Latent(torch.zeros(1, 4, 8, 8))
    outs = [sample(model, latent, text_cond(3), None, SEED,
                   _comfy(sampler=name, scheduler="karras", steps=6, cfg=1.0)).samples for name in (pp, plain)]
    assert torch.allclose(outs[0], outs[1], atol=1e-4)


@pytest.mark.parametrize("name", ["dpmpp_3m_sde", "ipndm", "deis", "res_multistep", "res_multistep_ancestral",
                                  "euler_ancestral_cfg_pp", "dpmpp_2m_cfg_pp"])
def test_new_samplers_denoise_a_constant_model_exactly(name):
    target = torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(3))

    class Clean:
        last_uncond = None

        def __call__(self, x, sigma):
            self.last_uncond = target
            return target

    from engine.sampling.pipeline import SAMPLERS
    sigmas = torch.tensor([14.6, 6.0, 2.0, 0.7, 0.2, 0.03, 0.0])
    out = SAMPLERS[name](Clean(), torch.randn(1, 4, 4, 4) * 14.6, sigmas)
    assert torch.allclose(out, target, atol=1e-4), name


def test_save_image_truncates_under_comfyuis_rule():
    pixels = torch.tensor([0.999, 0.5, 0.0021, 1.2, -0.1]).view(1, 1, 1, 5).expand(1, 3, 1, 5)
    assert to_uint8_hwc(pixels)[0][0, :, 0].tolist() == [255, 128, 1, 255, 0]
    assert to_uint8_hwc(pixels, "truncate")[0][0, :, 0].tolist() == list(
        np.clip(255 * pixels[0, 0, 0].numpy(), 0, 255).astype(np.uint8))
