"""Sampling behaviour a user notices: masks, seeds, img2img, guidance, previews, the Sampler node."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from engine.capabilities import AutoencoderCapabilities, resolved_inpaint_convention
from engine.errors import Cancelled, UserInputError
from engine.models.configs import CheckpointConfig, DiffusionConfig, UNetConfig
from engine.models.diffusion import LatentDiffusionModel
from engine.models.unet import UNetModel
from engine.sampling.denoiser import DiscreteDenoiser, GuidedDenoiser
from engine.sampling.names import SAMPLER_NAMES, SCHEDULER_NAMES, STOCHASTIC_SAMPLERS
from engine.sampling.noise import batch_seeds, seeded_noise
from engine.sampling.pipeline import SAMPLERS, SamplingOptions, sample
from engine.sampling.preview import LatentPreviewer
from engine.sampling.schedules import get_sigmas, img2img_sigmas
from engine.values import Conditioning, Image, Latent
from nodes.latent_nodes import (
    COMPOSITE_MASKED,
    EMPTY_LATENT,
    INPAINT_CONDITIONING,
    SET_LATENT_NOISE_MASK,
    feathered_weight,
)
from nodes.sampler import SAMPLER


@pytest.fixture(autouse=True)
def _one_thread():
    """These tensors are tiny: a second OpenMP thread only adds spin-waiting on a busy machine."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


class RecordingEps(nn.Module):
    """A tiny conv eps/v model that remembers every input it was given."""

    def __init__(self, channels: int = 4, width: int = 8, context_dim: int = 6):
        super().__init__()
        self.conv_in = nn.Conv2d(channels, width, 3, padding=1)
        self.time = nn.Linear(2, width)
        self.context = nn.Linear(context_dim, width)
        self.conv_out = nn.Conv2d(width, channels, 3, padding=1)
        self.calls: list[tuple[torch.Tensor, torch.Tensor]] = []

    def forward(self, x, timesteps, context=None, y=None):
        self.calls.append((x.detach().clone(), timesteps.detach().clone()))
        phase = timesteps.float()[:, None] / 1000 * math.pi
        h = self.conv_in(x) + self.time(torch.cat([phase.sin(), phase.cos()], dim=1))[:, :, None, None]
        if context is not None:
            h = h + self.context(context.mean(dim=1))[:, :, None, None]
        return self.conv_out(torch.tanh(h)) + 0.5 * x[:, : self.conv_out.out_channels]

MODELS = Path(__file__).resolve().parents[1] / "resources" / "models"


def tiny_model(prediction: str = "eps", conditional: bool = False, seed: int = 0) -> LatentDiffusionModel:
    torch.manual_seed(seed)
    cfg = DiffusionConfig(prediction=prediction, conditioning_key="crossattn" if conditional else None)
    return LatentDiffusionModel(RecordingEps(), cfg, name="tiny").eval()


def small_unet_model() -> LatentDiffusionModel:
    """The real UNet with cross-attention, small; its zero-initialised output conv randomised."""
    torch.manual_seed(0)
    cfg = UNetConfig(in_channels=4, out_channels=4, model_channels=32, num_res_blocks=1, channel_mult=(1, 1),
                     attention_resolutions=(2,), num_heads=2, use_spatial_transformer=True, context_dim=8)
    unet = UNetModel(cfg)
    nn.init.normal_(unet.out[2].weight, std=0.05)
    return LatentDiffusionModel(unet, DiffusionConfig(), name="small-unet").eval()


def text_cond(tokens: int, dim: int = 6, seed: int = 0) -> Conditioning:
    return Conditioning(crossattn=torch.randn(1, tokens, dim, generator=torch.Generator().manual_seed(seed)))


def empty(batch: int = 1, size: int = 8) -> Latent:
    return Latent(torch.zeros(batch, 4, size, size))


class FakeContext:
    node_id = "sampler"
    settings = None
    models = None

    def __init__(self, cancel_after: int | None = None):
        self.graph_json: dict = {}
        self.progress_calls: list[tuple[int, int, object]] = []
        self.evals = 0
        self.cancel_after = cancel_after

    def progress(self, step, total, preview=None):
        self.progress_calls.append((step, total, preview))

    def check_cancelled(self):
        if self.cancel_after is not None and len(self.progress_calls) >= self.cancel_after:
            raise Cancelled()

    def count_model_evals(self, n=1):
        self.evals += n


def run_node(spec, inputs, ctx=None, **params):
    return spec.compute(ctx or FakeContext(), inputs, {**spec.default_params(), **params})


# --- masked sampling ---------------------------------------------------------------------------


@pytest.mark.parametrize("sampler", ["euler", "euler_ancestral", "dpmpp_2m", "plms", "dpmpp_sde"])
def test_masked_sampling_keeps_the_renoised_original_outside_the_mask(sampler):
    model = tiny_model()
    x0 = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(9))
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., :, :4] = 1  # regenerate the left half
    seen = []
    out = sample(model, Latent(x0, mask), Conditioning(), None, seed=11,
                 options=SamplingOptions(sampler=sampler, scheduler="karras", steps=6, cfg=1.0),
                 step_callback=lambda info: seen.append(info))
    noise = seeded_noise(batch_seeds(11, 1), (4, 8, 8))
    den = DiscreteDenoiser(model)
    keep = mask == 0
    for x_in, t in model.unet.calls:  # what the UNet saw, at every evaluation
        sigma = float(den.t_to_sigma(t[:1]))
        expected = (x0 + noise * sigma) / math.sqrt(1 + sigma**2)
        assert torch.allclose(x_in[keep.expand_as(x_in)], expected[keep.expand_as(x0)], atol=1e-4)
    for info in seen:  # and what the step callback reports as the current latent
        expected = x0 + noise * info.sigma
        assert torch.allclose(info.x[keep.expand_as(x0)], expected[keep.expand_as(x0)], atol=1e-5)
    assert torch.equal(out.samples[keep.expand_as(x0)], x0[keep.expand_as(x0)])
    assert (out.samples - x0)[~keep.expand_as(x0)].abs().mean() > 0.1  # the hole was regenerated


def test_noise_mask_node_resizes_a_pixel_mask_to_the_latent():
    model = tiny_model()
    x0 = torch.randn(1, 4, 8, 8)
    pixel_mask = torch.zeros(1, 1, 64, 64)
    pixel_mask[..., 32:, :] = 1  # bottom half of the picture
    latent = run_node(SET_LATENT_NOISE_MASK, {"latent": Latent(x0), "mask": pixel_mask})["latent"]
    out = sample(model, latent, Conditioning(), None, 0, SamplingOptions(sampler="euler", steps=3, cfg=1.0))
    assert torch.equal(out.samples[..., :4, :], x0[..., :4, :])
    assert not torch.allclose(out.samples[..., 4:, :], x0[..., 4:, :])
    with pytest.raises(UserInputError, match="different shape"):
        run_node(SET_LATENT_NOISE_MASK, {"latent": Latent(x0), "mask": torch.zeros(1, 1, 64, 32)})


def test_composite_leaves_unmasked_pixels_exact_and_feathers_inside():
    dest = Image(torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1)))
    source = Image(torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(2)), seeds=(5,))
    mask = torch.zeros(1, 1, 32, 32)
    mask[..., 8:24, 8:24] = 1
    out = run_node(COMPOSITE_MASKED, {"destination": dest, "source": source, "mask": mask}, feather=4)["image"]
    outside = (mask == 0).expand(1, 3, 32, 32)
    assert torch.equal(out.pixels[outside], dest.pixels[outside])
    assert torch.equal(out.pixels[..., 14:18, 14:18], source.pixels[..., 14:18, 14:18])  # deep inside
    edge_weight = feathered_weight(mask, 4)[0, 0, 16, 8:13]
    assert edge_weight[0] < 0.3 and edge_weight[-1] == 1 and torch.all(edge_weight.diff() >= 0)
    assert out.seeds == (5,)


# --- seeds and determinism ------------------------------------------------------------------------


@pytest.mark.parametrize("sampler", ["euler_ancestral", "dpmpp_2m_sde"])
def test_same_seed_is_bit_identical_and_batch_items_match_single_runs(sampler):
    model = small_unet_model()
    cond, uncond = text_cond(3, dim=8, seed=1), text_cond(3, dim=8, seed=2)
    options = SamplingOptions(sampler=sampler, scheduler="karras", steps=3, cfg=3.0)
    first = sample(model, empty(3), cond, uncond, 123, options)
    again = sample(model, empty(3), cond, uncond, 123, options)
    assert torch.equal(first.samples, again.samples)
    assert first.seeds == (123, 124, 125)
    # Item k is the batch-1 run with seed + k, per-step noise included. Equal up to float
    # rounding: a multi-threaded conv may split a batch of 3 differently from a batch of 1.
    for k in (0, 2):
        single = sample(model, empty(1), cond, uncond, 123 + k, options)
        assert single.seeds == (123 + k,)
        assert torch.allclose(single.samples[0], first.samples[k], rtol=1e-5, atol=1e-4)
    other = sample(model, empty(1), cond, uncond, 124, options)
    assert torch.allclose(other.samples[0], first.samples[1], rtol=1e-5, atol=1e-4)
    assert (first.samples[0] - other.samples[0]).abs().max() > 0.1  # seed + 1 is another picture


def test_a_second_pass_keeps_the_seed_that_made_the_picture():
    """Upscale-and-refine graphs: the viewer and the saved PNG name the first sampler's seed, not the refiner's."""
    model = small_unet_model()
    cond, uncond = text_cond(3, dim=8, seed=1), text_cond(3, dim=8, seed=2)
    options = SamplingOptions(sampler="dpmpp_2m", scheduler="karras", steps=3, cfg=3.0)
    first = sample(model, empty(2), cond, uncond, 8, options)
    refined = sample(model, first, cond, uncond, 0, SamplingOptions(steps=3, cfg=3.0, denoise=0.5))
    assert first.seeds == refined.seeds == (8, 9)
    assert not torch.equal(refined.samples, first.samples)


def test_noise_is_drawn_on_the_cpu_per_item():
    a = seeded_noise([5, 6], (4, 8, 8))
    b = seeded_noise([6], (4, 8, 8))
    assert torch.equal(a[1], b[0])
    assert torch.equal(a[0], torch.randn(4, 8, 8, generator=torch.Generator().manual_seed(5)))
    assert batch_seeds(2**64 - 1, 2) == (2**64 - 1, 0)


# --- image to image ---------------------------------------------------------------------------------


def test_denoise_keeps_the_tail_of_a_longer_schedule_and_starts_from_the_noised_input():
    model = tiny_model()
    den = DiscreteDenoiser(model)
    assert torch.equal(img2img_sigmas(den, "normal", 10, 0.5), get_sigmas(den, "normal", 20)[-11:])
    assert torch.equal(img2img_sigmas(den, "karras", 10, 1.0), get_sigmas(den, "karras", 10))
    x0 = torch.randn(1, 4, 8, 8)
    out = sample(model, Latent(x0), Conditioning(), None, 3, SamplingOptions(sampler="euler", steps=4,
                                                                             denoise=0.5, cfg=1.0))
    noise = seeded_noise([3], (4, 8, 8))
    sigma0 = float(img2img_sigmas(den, "karras", 4, 0.5)[0])
    assert sigma0 < den.sigma_max / 2
    first_input, _ = model.unet.calls[0]
    assert torch.allclose(first_input, (x0 + noise * sigma0) / math.sqrt(1 + sigma0**2), atol=1e-5)
    assert len(model.unet.calls) == 4
    unchanged = sample(model, Latent(x0), Conditioning(), None, 3, SamplingOptions(denoise=0.0))
    assert torch.equal(unchanged.samples, x0)
    assert not torch.allclose(out.samples, x0, atol=1e-2)


def test_full_denoise_from_an_empty_latent_starts_at_unit_variance_noise():
    model = tiny_model()
    sample(model, empty(), Conditioning(), None, 8, SamplingOptions(sampler="ddim", scheduler="ddim_uniform",
                                                                    steps=5, cfg=1.0))
    first_input, t = model.unet.calls[0]
    assert torch.allclose(first_input, seeded_noise([8], (4, 8, 8)), atol=1e-5)  # x_T ~ N(0, I), as the paper
    assert round(float(t[0])) == 801


# --- guidance -----------------------------------------------------------------------------------------


def test_cfg_1_makes_one_unconditional_free_call_per_step():
    model = tiny_model(conditional=True)
    evals = []
    sample(model, empty(2), text_cond(4), text_cond(4, seed=1), 0,
           SamplingOptions(sampler="euler", steps=5, cfg=1.0), on_model_eval=evals.append)
    assert sum(evals) == 5
    assert all(x.shape[0] == 2 for x, _ in model.unet.calls)


def test_cfg_batches_cond_and_uncond_in_one_call_and_matches_the_formula():
    model = tiny_model(conditional=True)
    den = DiscreteDenoiser(model)
    cond, uncond = text_cond(4), text_cond(4, seed=1)
    x, sigma = torch.randn(2, 4, 8, 8), 3.0
    evals = []
    guided = GuidedDenoiser(den, cond, uncond, 6.0, on_model_eval=evals.append)(x, sigma)
    assert evals == [1] and model.unet.calls[-1][0].shape[0] == 4
    expected = den(x, sigma, uncond) + 6.0 * (den(x, sigma, cond) - den(x, sigma, uncond))
    assert torch.allclose(guided, expected, atol=1e-5)
    counted = []
    sample(model, empty(), cond, uncond, 0, SamplingOptions(sampler="heun", steps=4, cfg=6.0),
           on_model_eval=counted.append)
    assert sum(counted) == 2 * 4 - 1  # heun: two calls a step, one on the last; each batched


def test_unequal_prompt_lengths_are_batched_by_repetition_exactly():
    model = small_unet_model()
    den = DiscreteDenoiser(model)
    long_prompt, short_prompt = text_cond(6, dim=8, seed=3), text_cond(4, dim=8, seed=4)  # lcm 12 tokens
    x = torch.randn(1, 4, 8, 8)
    evals = []
    batched = GuidedDenoiser(den, long_prompt, short_prompt, 4.0, on_model_eval=evals.append)(x, 2.0)
    assert evals == [1]
    separate = den(x, 2.0, short_prompt) + 4.0 * (den(x, 2.0, long_prompt) - den(x, 2.0, short_prompt))
    assert torch.allclose(batched, separate, atol=1e-5)


def test_an_inpainting_models_negative_gets_the_positives_concat():
    model = tiny_model(conditional=True)
    concat = torch.ones(1, 4, 8, 8)
    model.unet.conv_in = nn.Conv2d(8, 8, 3, padding=1)  # 4 latent + 4 concat channels
    positive = text_cond(4).with_(concat=concat)
    sample(model, empty(), positive, text_cond(4, seed=1), 0, SamplingOptions(sampler="euler", steps=2, cfg=3.0))
    x_in, _ = model.unet.calls[-1]
    assert x_in.shape == (2, 8, 8, 8) and torch.equal(x_in[:, 4:], concat.expand(2, -1, -1, -1))


# --- model types, samplers, schedules ----------------------------------------------------------------------


class Oracle(nn.Module):
    """Knows the clean latent: returns the exact eps or v for any noisy input."""

    def __init__(self, target: torch.Tensor, alphas_cumprod: torch.Tensor, prediction: str):
        super().__init__()
        self.target, self.abar, self.prediction = target, alphas_cumprod, prediction
        self.weight = nn.Parameter(torch.zeros(1))  # gives the model a device and dtype

    def forward(self, x, timesteps, context=None, y=None):
        t = timesteps.double()
        lo = t.floor().long().clamp(0, len(self.abar) - 1)
        hi = (lo + 1).clamp(max=len(self.abar) - 1)
        log_s = lambda i: (((1 - self.abar[i]) / self.abar[i]).sqrt()).log()
        sigma = ((1 - (t - lo)) * log_s(lo) + (t - lo) * log_s(hi)).exp()
        a = (1 / (1 + sigma**2)).float().view(-1, 1, 1, 1)
        eps = (x - a.sqrt() * self.target) / (1 - a).sqrt()
        return eps if self.prediction == "eps" else a.sqrt() * eps - (1 - a).sqrt() * self.target


@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_eps_and_v_models_denoise_to_the_clean_latent_with_every_sampler(prediction):
    target = torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(2))
    cfg = DiffusionConfig(prediction=prediction, conditioning_key=None)
    model = LatentDiffusionModel(nn.Identity(), cfg)
    model.unet = Oracle(target, model.alphas_cumprod, prediction)
    den = DiscreteDenoiser(model)
    for sigma in (0.05, 1.234, 9.0):
        x = target + sigma * torch.randn_like(target)
        assert torch.allclose(den(x, sigma), target, atol=1e-4)
    for name in SAMPLER_NAMES:
        out = sample(model, empty(size=4), Conditioning(), None, 1,
                     SamplingOptions(sampler=name, scheduler="karras", steps=5, cfg=1.0))
        assert torch.allclose(out.samples, target, atol=1e-3), name


def test_every_sampler_runs_with_every_scheduler():
    assert set(SAMPLERS) == set(SAMPLER_NAMES)
    model = tiny_model(prediction="v")
    for scheduler in SCHEDULER_NAMES:
        for name in SAMPLER_NAMES:
            out = sample(model, empty(size=4), Conditioning(), None, 0,
                         SamplingOptions(sampler=name, scheduler=scheduler, steps=3, cfg=1.0))
            assert torch.isfinite(out.samples).all(), (name, scheduler)


def test_schedules_descend_to_zero_over_the_models_range():
    den = DiscreteDenoiser(tiny_model())
    for name in SCHEDULER_NAMES:
        sigmas = get_sigmas(den, name, 12)
        assert sigmas.shape == (13,) and sigmas[-1] == 0, name
        assert torch.all(sigmas[:-1] > sigmas[1:]), name
        assert den.sigma_min * 0.999 <= float(sigmas[-2]) and float(sigmas[0]) <= den.sigma_max * 1.001, name
    karras = get_sigmas(den, "karras", 12)
    assert math.isclose(karras[0], den.sigma_max, rel_tol=1e-5)
    assert math.isclose(karras[-2], den.sigma_min, rel_tol=1e-5)
    ddim_t = den.sigma_to_t(get_sigmas(den, "ddim_uniform", 10)[:-1]).round().long().tolist()
    assert ddim_t == list(range(901, 0, -100))


def test_stochastic_samplers_use_the_seed_and_deterministic_ones_do_not_need_it():
    model = tiny_model()
    x0 = torch.randn(1, 4, 8, 8)
    for name in SAMPLER_NAMES:
        opts = SamplingOptions(sampler=name, steps=4, denoise=0.6, cfg=1.0)
        a = sample(model, Latent(x0), Conditioning(), None, 1, opts).samples
        b = sample(model, Latent(x0), Conditioning(), None, 1, opts).samples
        assert torch.equal(a, b), name
    base = SamplingOptions(sampler="euler_ancestral", steps=4, cfg=1.0)
    no_noise = SamplingOptions(sampler="euler_ancestral", steps=4, cfg=1.0, eta=0.0)
    euler = SamplingOptions(sampler="euler", steps=4, cfg=1.0)
    assert torch.allclose(sample(model, empty(), Conditioning(), None, 1, no_noise).samples,
                          sample(model, empty(), Conditioning(), None, 1, euler).samples, atol=1e-5)
    assert not torch.allclose(sample(model, empty(), Conditioning(), None, 1, base).samples,
                              sample(model, empty(), Conditioning(), None, 1, euler).samples, atol=1e-3)
    assert "euler_ancestral" in STOCHASTIC_SAMPLERS and "dpmpp_2m" not in STOCHASTIC_SAMPLERS


# --- previews and the nodes -------------------------------------------------------------------------------


def test_latent_preview_uses_the_first_stages_factors():
    latent = torch.zeros(1, 4, 2, 3)
    latent[0, 0] = 1.0
    factors = [[0.5, 0, 0], [0, 0, 0], [0, 0, 0], [0, 0, 0], [0.25, 0.5, 0.75]]  # 4 rows + bias
    rgb = LatentPreviewer(factors, 4)(latent)
    assert rgb.dtype == np.uint8 and rgb.shape == (2, 3, 3)
    assert rgb[0, 0].tolist() == [191, 128, 191]
    fallback = LatentPreviewer(None, 4)(torch.zeros(1, 4, 2, 2))
    assert fallback[0, 0].tolist() == [128, 128, 128]
    network_for_3 = {"w1": [[0.0]] * 3, "b1": [0.0], "w2": [[0.0, 0.0, 0.0]], "b2": [1.0, 1.0, 1.0]}
    other = LatentPreviewer(network_for_3, 4)  # a network for another channel count: the fallback
    assert other.network is None and np.array_equal(other(torch.zeros(1, 4, 2, 2)), fallback)


def test_the_super_resolution_preview_shows_the_colours_of_the_picture():
    """The 4x SR autoencoder's 3 latent channels do not hold colour linearly: its card's fitted network
    draws each object's palette colour where a linear projection drew purple blue and red brown."""
    from engine.models.loader import load_checkpoint
    from training.shapes_world import COLOURS, make_scene, render

    loaded = load_checkpoint(MODELS / "kiln-shapes-sr.safetensors", "cpu")
    first_stage = loaded.first_stage
    assert loaded.model.latent_rgb is first_stage.latent_rgb  # a Sampler without the autoencoder wired uses it
    card = json.loads((MODELS / "kiln-shapes-sr.json").read_text())
    palette = np.array(list(COLOURS.values()), dtype=np.float32)
    scenes = [make_scene(seed) for seed in range(1_000_000, 1_000_012)]
    with torch.no_grad():
        latents = [first_stage.encode_pixels(torch.from_numpy(render(s, 256)).permute(2, 0, 1)[None] / 255.0)
                   for s in scenes]

    def colours_right(previewer: LatentPreviewer) -> float:
        right = [list(COLOURS)[int(np.argmin(((palette - preview[cy, cx]) ** 2).sum(1)))] == obj.colour
                 for scene, latent in zip(scenes, latents, strict=True)
                 for preview in [previewer(latent).astype(np.float32)]  # (64, 64, 3)
                 for obj in scene.objects
                 for cx, cy in [(int((obj.box[0] + obj.box[2]) * 32), int((obj.box[1] + obj.box[3]) * 32))]]
        return sum(right) / len(right)

    network = LatentPreviewer(first_stage.latent_rgb, 3)
    assert network.network is not None
    assert colours_right(network) >= 0.8  # 22 of 25 objects; orange is the one it can take for yellow
    assert colours_right(LatentPreviewer(card["latent_rgb_factors"], 3)) < 0.7  # the linear map: 15 of 25


def test_sampler_previews_with_the_models_own_projection_when_no_autoencoder_is_wired():
    model = tiny_model(conditional=True)
    model.latent_rgb = {"w1": [[0.0]] * 4, "b1": [0.0], "w2": [[0.0, 0.0, 0.0]], "b2": [0.2, 0.6, 0.4]}
    ctx = FakeContext()
    inputs = {"model": model, "positive": text_cond(4), "negative": text_cond(4, seed=1), "latent": empty(1)}
    run_node(SAMPLER, inputs, ctx, seed=1, steps=2, cfg=2.0, sampler="euler")
    assert all(p[0, 0].tolist() == [51, 153, 102] for _, _, p in ctx.progress_calls)


def test_sampler_node_reports_progress_previews_evals_and_seeds():
    model = tiny_model(conditional=True)
    ctx = FakeContext()
    inputs = {"model": model, "positive": text_cond(4), "negative": text_cond(4, seed=1), "latent": empty(2)}
    out = run_node(SAMPLER, inputs, ctx, seed=40, steps=6, cfg=4.0, sampler="dpmpp_2m")["latent"]
    assert out.seeds == (40, 41) and out.samples.shape == (2, 4, 8, 8)
    assert [(s, t) for s, t, _ in ctx.progress_calls] == [(i, 6) for i in range(1, 7)]
    assert all(p.shape == (8, 8, 3) and p.dtype == np.uint8 for _, _, p in ctx.progress_calls)
    assert ctx.evals == 6


class StubAutoencoder:
    """Latents are 8x average-pooled pixels with the channels repeated: easy to check."""

    latent_channels, downsample_factor, is_vq, latent_rgb = 4, 8, False, None

    def __init__(self, name: str = "stub", is_vq: bool = False, convention: str | None = None):
        self.name, self.is_vq, self.decoded, self.convention = name, is_vq, 0, convention

    @property
    def capabilities(self) -> AutoencoderCapabilities:
        return AutoencoderCapabilities(self.latent_channels, self.downsample_factor, 1.0, self.is_vq,
                                       resolved_inpaint_convention(self.convention, self.is_vq))

    def encode_pixels(self, pixels):
        pooled = torch.nn.functional.avg_pool2d(pixels, 8)
        return torch.cat([pooled, pooled[:, :1]], dim=1)

    def decode_latents(self, latent):
        self.decoded += 1
        return torch.nn.functional.interpolate(latent[:, :3], scale_factor=8).clamp(0, 1)


def test_sampler_node_cancels_within_a_step_and_decodes_previews_when_asked():
    model = tiny_model()
    ctx = FakeContext(cancel_after=2)
    with pytest.raises(Cancelled):
        run_node(SAMPLER, {"model": model, "positive": Conditioning(), "latent": empty()}, ctx, steps=10)
    assert len(ctx.progress_calls) == 2 and len(model.unet.calls) == 3
    ae = StubAutoencoder()
    ctx = FakeContext()
    run_node(SAMPLER, {"model": model, "positive": Conditioning(), "latent": empty(), "autoencoder": ae}, ctx,
             steps=4, preview_decode_every=2)
    assert ae.decoded == 2 and ctx.progress_calls[1][2].shape == (64, 64, 3)


def test_sampler_node_explains_bad_inputs():
    model = tiny_model(conditional=True)
    with pytest.raises(UserInputError, match="negative") as err:
        run_node(SAMPLER, {"model": model, "positive": text_cond(4), "latent": empty()}, cfg=5.0)
    assert err.value.param == "cfg"
    with pytest.raises(UserInputError, match="conditioning batch 2 does not divide latent batch 3"):
        cond = Conditioning(crossattn=torch.randn(2, 4, 6))
        run_node(SAMPLER, {"model": model, "positive": cond, "latent": empty(3)}, cfg=1.0)


def test_empty_latent_takes_its_size_from_the_autoencoder():
    out = run_node(EMPTY_LATENT, {}, width=64, height=32, batch_size=2)["latent"]
    assert out.samples.shape == (2, 4, 4, 8) and float(out.samples.abs().sum()) == 0
    ae = StubAutoencoder()
    ae.latent_channels, ae.downsample_factor = 3, 4
    assert run_node(EMPTY_LATENT, {"autoencoder": ae}, width=36, height=20)["latent"].samples.shape == (1, 3, 5, 9)
    with pytest.raises(UserInputError) as err:
        run_node(EMPTY_LATENT, {}, width=100)
    assert err.value.param == "width"


@pytest.mark.parametrize("convention", ["stable_diffusion", "ldm", "kiln"])
def test_inpaint_conditioning_lays_out_the_concat_channels(convention):
    pixels = torch.full((1, 3, 32, 32), 0.9)
    mask = torch.zeros(1, 1, 32, 32)
    mask[..., :16, :] = 1  # top half is the hole
    cond = run_node(INPAINT_CONDITIONING, {"conditioning": text_cond(4), "autoencoder": StubAutoencoder(),
                                           "image": Image(pixels), "mask": mask}, convention=convention)
    concat = cond["conditioning"].concat
    assert concat.shape == (1, 5, 4, 4) and cond["conditioning"].crossattn is not None
    hole_value = {"stable_diffusion": 0.5, "ldm": 0.0, "kiln": 0.0}[convention]
    mask_channel, latent_channels = (concat[:, :1], concat[:, 1:]) if convention == "stable_diffusion" \
        else (concat[:, 4:], concat[:, :4])
    low, high = (-1.0, 1.0) if convention == "ldm" else (0.0, 1.0)
    assert torch.all(mask_channel[..., :2, :] == high) and torch.all(mask_channel[..., 2:, :] == low)
    assert torch.allclose(latent_channels[..., :2, :], torch.tensor(hole_value))
    assert torch.allclose(latent_channels[..., 2:, :], torch.tensor(0.9))


def test_inpaint_convention_auto_follows_the_checkpoint_config_not_the_file_name():
    from engine.capabilities import inpaint_convention_of
    from engine.models.presets import get_preset

    assert inpaint_convention_of(get_preset("sd15-inpainting")) == "stable_diffusion"
    assert inpaint_convention_of(get_preset("inpainting_big")) == "ldm"
    kiln = json.loads((Path(__file__).parents[1] / "resources/models/kiln-shapes-base.json").read_text())
    assert inpaint_convention_of(CheckpointConfig.from_dict(kiln["checkpoint_config"])) == "kiln"
    assert inpaint_convention_of(get_preset("sd15")) is None
    assert StubAutoencoder(is_vq=True).capabilities.inpaint_convention == "ldm"
    assert StubAutoencoder(name="kiln-shapes-ae").capabilities.inpaint_convention == "stable_diffusion"

    def auto(ae: StubAutoencoder) -> torch.Tensor:
        inputs = {"conditioning": text_cond(4), "autoencoder": ae, "image": Image(torch.full((1, 3, 32, 32), 0.9)),
                  "mask": torch.ones(1, 1, 32, 32)}
        return run_node(INPAINT_CONDITIONING, inputs, convention="auto")["conditioning"].concat

    assert torch.equal(auto(StubAutoencoder(convention="kiln"))[:, 4:], torch.ones(1, 1, 4, 4))  # mask last
    assert torch.equal(auto(StubAutoencoder())[:, :1], torch.ones(1, 1, 4, 4))  # Stable Diffusion: mask first
