"""`sample(...)`: one sampling run as the Sampler node needs it.

Text to image, image to image (partial denoise), masked sampling (a latent
noise mask: outside it the known latent is kept) and inpainting-model
conditioning all go through here.

Starting point: x = latent + noise * sigma_0, the LDM `q_sample` in sigma
space. At full denoise the noise is scaled by sqrt(1 + sigma_0^2) instead, so
that an empty latent gives x_T ~ N(0, I) in the paper's variance-preserving
terms, as its DDIM/PLMS samplers start.

Ending: ddim, plms and ddpm with the "ddim_uniform" schedule end as the
original code does, with a last step to alphas_cumprod[0] whose x_vp is
returned (a little noise is left); every other pairing, "ddim_uniform_to_zero"
included, takes the last step to sigma 0 and returns the prediction of x0.
"""
from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from engine.models.diffusion import LatentDiffusionModel
from engine.sampling import comfy_convention, extra_samplers, paper_samplers, samplers, unipc
from engine.sampling.block_watch import BlockProgress, BlockWatch
from engine.sampling.denoiser import DiscreteDenoiser, GuidedDenoiser
from engine.sampling.names import (
    CFG_PP_SAMPLERS,
    CONVENTIONS,
    ETA_SAMPLERS,
    PAPER_ENDING_SCHEDULERS,
    PAPER_SAMPLERS,
    SAMPLER_NAMES,
    SCHEDULER_NAMES,
)
from engine.sampling.noise import SeededNoise, batch_seeds
from engine.sampling.schedules import img2img_sigmas
from engine.values import Conditioning, Latent

SAMPLERS: dict[str, Callable[..., torch.Tensor]] = {
    "euler": samplers.sample_euler,
    "euler_ancestral": samplers.sample_euler_ancestral,
    "heun": samplers.sample_heun,
    "dpm_2": samplers.sample_dpm_2,
    "dpm_2_ancestral": samplers.sample_dpm_2_ancestral,
    "lms": samplers.sample_lms,
    "dpmpp_2m": samplers.sample_dpmpp_2m,
    "dpmpp_2m_sde": samplers.sample_dpmpp_2m_sde,
    "dpmpp_sde": samplers.sample_dpmpp_sde,
    "dpmpp_2s_ancestral": samplers.sample_dpmpp_2s_ancestral,
    "uni_pc": unipc.sample_uni_pc,
    "uni_pc_bh2": unipc.sample_uni_pc_bh2,
    "lcm": samplers.sample_lcm,
    "ddpm": paper_samplers.sample_ddpm,
    "ddim": paper_samplers.sample_ddim,
    "plms": paper_samplers.sample_plms,
    "dpmpp_3m_sde": extra_samplers.sample_dpmpp_3m_sde,
    "ipndm": extra_samplers.sample_ipndm,
    "deis": extra_samplers.sample_deis,
    "res_multistep": extra_samplers.sample_res_multistep,
    "res_multistep_ancestral": extra_samplers.sample_res_multistep_ancestral,
    "euler_cfg_pp": extra_samplers.sample_euler_cfg_pp,
    "euler_ancestral_cfg_pp": extra_samplers.sample_euler_ancestral_cfg_pp,
    "dpmpp_2m_cfg_pp": extra_samplers.sample_dpmpp_2m_cfg_pp,
    "res_multistep_cfg_pp": extra_samplers.sample_res_multistep_cfg_pp,
}
# Under the "comfyui" convention these names run ComfyUI's versions (engine.sampling.comfy_convention).
COMFY_SAMPLERS: dict[str, Callable[..., torch.Tensor]] = {
    "ddim": samplers.sample_euler,
    "lms": functools.partial(samplers.sample_lms, final_denoised=True),
    "uni_pc": unipc.sample_uni_pc_comfy,
    "uni_pc_bh2": unipc.sample_uni_pc_bh2_comfy,
}


BLOCK_PROGRESS_CELLS = 128 * 128  # latents larger than this report progress within a UNet call


def get_sampler(name: str, convention: str = "kiln") -> Callable[..., torch.Tensor]:
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; known: {', '.join(SAMPLER_NAMES)}")
    if convention == "comfyui" and name in COMFY_SAMPLERS:
        return COMFY_SAMPLERS[name]
    return SAMPLERS[name]


@dataclass
class SamplingOptions:
    sampler: str = "dpmpp_2m"
    scheduler: str = "karras"
    steps: int = 25
    cfg: float = 5.0
    denoise: float = 1.0  # 1 = from pure noise; 0 = return the latent unchanged
    eta: float = 1.0  # ancestral and SDE samplers: noise per step (0 = none)
    ddim_eta: float = 0.0  # ddim: 0 = deterministic (the paper's default)
    convention: str = "kiln"  # "comfyui": ComfyUI's noise, timesteps and schedules (comfy_convention)
    # ComfyUI's KSamplerAdvanced: steps start..end of the schedule, with or without the initial noise
    add_noise: bool = True
    start_step: int | None = None
    end_step: int | None = None
    leftover_noise: bool = False  # ending early: keep the noise of the last sigma (else step to 0)

    @property
    def comfy(self) -> bool:
        return self.convention == "comfyui"

    def sampler_kwargs(self) -> dict[str, Any]:
        if self.sampler == "ddim":
            return {} if self.comfy else {"eta": self.ddim_eta}
        return {"eta": self.eta} if self.sampler in ETA_SAMPLERS else {}


@dataclass
class StepInfo:
    """Passed to the step callback once per sampler step."""

    step: int  # 0-based
    total: int
    x: torch.Tensor  # current latent (masked region composited in)
    denoised: torch.Tensor  # predicted clean latent
    sigma: float


class MaskedDenoiser:
    """Re-imposes the known latent, noised to the current sigma, outside the mask.

    mask 1 = regenerate. The known part is x0 + noise * sigma with the run's
    initial noise, as the LDM code's `q_sample(x0, t)`; the prediction there is x0.
    """

    def __init__(self, inner: Callable[..., torch.Tensor], x0: torch.Tensor, noise: torch.Tensor,
                 mask: torch.Tensor):
        self.inner, self.x0, self.noise, self.mask = inner, x0, noise, mask

    @property
    def last_uncond(self) -> torch.Tensor | None:
        """The inner denoiser's last unconditional prediction (CFG++ samplers read it)."""
        return getattr(self.inner, "last_uncond", None)

    def known_at(self, sigma: torch.Tensor | float) -> torch.Tensor:
        if isinstance(sigma, torch.Tensor) and sigma.ndim:
            sigma = sigma.view(-1, 1, 1, 1)
        return self.x0 + self.noise * sigma

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor | float, **extra: Any) -> torch.Tensor:
        known = self.known_at(sigma)
        denoised = self.inner(known + (x - known) * self.mask, sigma, **extra)
        return self.x0 + (denoised - self.x0) * self.mask


def prepare_mask(mask: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor | None:
    """A (B|1, 1, H, W) mask in [0, 1] resized to the latent and repeated to its batch."""
    if mask is None:
        return None
    mask = mask.to(like.device, torch.float32)
    if mask.ndim == 2:
        mask = mask[None, None]
    elif mask.ndim == 3:
        mask = mask[:, None]
    if mask.shape[-2:] != like.shape[-2:]:
        mask = F.interpolate(mask, size=like.shape[-2:], mode="bilinear", align_corners=False)
    batch = like.shape[0]
    if mask.shape[0] != batch:
        if batch % mask.shape[0]:
            raise ValueError(f"the noise mask has {mask.shape[0]} items but the latent has {batch}")
        mask = mask.repeat_interleave(batch // mask.shape[0], dim=0)
    return mask[:, :1].clamp(0, 1)


def with_shared_concat(positive: Conditioning, negative: Conditioning | None) -> Conditioning | None:
    """An inpainting model needs the masked image for both passes: give the negative the positive's."""
    if negative is not None and positive.concat is not None and negative.concat is None:
        return negative.with_(concat=positive.concat)
    return negative


def sample(model: LatentDiffusionModel, latent: Latent, positive: Conditioning,
           negative: Conditioning | None, seed: int, options: SamplingOptions,
           step_callback: Callable[[StepInfo], None] | None = None,
           on_model_eval: Callable[[int], None] | None = None,
           check_cancelled: Callable[[], None] | None = None,
           block_progress: BlockProgress | None = None) -> Latent:
    """Denoise `latent` and return the result with each item's seed recorded.

    `check_cancelled` is also called before each UNet block (it raises to stop inside a
    long UNet call); `block_progress(done, total)` reports progress in blocks, for
    latents over BLOCK_PROGRESS_CELLS cells only.

    A latent that already carries seeds (the picture of an earlier pass, upscaled or
    re-noised) keeps them: the seed that made the picture is the first pass's, and it
    is the one the viewer and the saved PNG report."""
    _check_options(options)
    denoiser = comfy_convention.ComfyDenoiser(model) if options.comfy else DiscreteDenoiser(model)
    sigmas = _sigmas(denoiser, options)
    batch = latent.samples.shape[0]
    # ComfyUI's batch items share one seed (item k is not the picture of seed + k)
    seeds = (seed,) * batch if options.comfy else batch_seeds(seed, batch)
    recorded = latent.seeds or seeds
    if len(sigmas) < 2:
        return Latent(latent.samples.clone(), latent.noise_mask, recorded)
    x0 = latent.samples.to(model.device, torch.float32)
    initial_noise, step_noise, mask_noise = _noises(seed, x0, options)
    x = x0 + initial_noise * _start_scale(options, float(sigmas[0]), denoiser.sigma_max)
    guided = GuidedDenoiser(denoiser, positive, with_shared_concat(positive, negative), options.cfg, on_model_eval,
                            record_uncond=options.sampler in CFG_PP_SAMPLERS)
    mask = prepare_mask(latent.noise_mask, x0)
    model_fn: Callable[..., torch.Tensor] = guided
    if mask is not None:
        model_fn = MaskedDenoiser(guided, x0, mask_noise, mask)
    total = len(sigmas) - 1
    large = x0.shape[-2] * x0.shape[-1] > BLOCK_PROGRESS_CELLS
    with BlockWatch(model.unet, total, check_cancelled, block_progress if large else None) as watch:
        callback = _step_reporter(step_callback, total, model_fn, watch)
        out = get_sampler(options.sampler, options.convention)(model_fn, x, sigmas, callback=callback,
                                                               noise_sampler=step_noise, **options.sampler_kwargs())
    if uses_paper_ending(options):  # the original code returns x_vp at alphas_cumprod[0]
        out = paper_samplers.to_paper_space(out, float(sigmas[-1]))
    if mask is not None:
        out = x0 + (out - x0) * mask
    return Latent(out.to("cpu", torch.float32), latent.noise_mask, recorded)


def uses_paper_ending(options: SamplingOptions) -> bool:
    """ddim/plms/ddpm with "ddim_uniform" end as the original code: last step to alphas_cumprod[0]
    (Kiln's convention, when the run goes to the end of the schedule)."""
    return (options.sampler in PAPER_SAMPLERS and options.scheduler in PAPER_ENDING_SCHEDULERS
            and not options.comfy and options.end_step is None)


def _sigmas(denoiser: DiscreteDenoiser, options: SamplingOptions) -> torch.Tensor:
    """(steps + 1,) sigmas, or fewer for a partial denoise; the paper's ending where it applies; the
    advanced sampler's part of them. Repeated sigmas (long schedules over few timesteps) are dropped."""
    if options.comfy:
        sigmas = comfy_convention.comfy_sigmas(denoiser, options.scheduler, options.sampler, options.steps,
                                               options.denoise)
        sigmas = torch.unique_consecutive(sigmas)
    else:
        sigmas = img2img_sigmas(denoiser, options.scheduler, options.steps, options.denoise)
    if uses_paper_ending(options):
        sigmas = paper_samplers.with_paper_ending(sigmas, denoiser.sigma_min)
    return comfy_convention.split_sigmas(sigmas, options.start_step, options.end_step, options.leftover_noise)


def _noises(seed: int, x0: torch.Tensor,
            options: SamplingOptions) -> tuple[torch.Tensor, Callable[..., torch.Tensor], torch.Tensor]:
    """(initial noise, per-step noise sampler, the noise that re-noises the known part of a masked latent)."""
    if options.comfy:
        initial = comfy_convention.batch_noise(seed, x0.shape).to(x0.device)
        step: Callable[..., torch.Tensor] = comfy_convention.StepNoise(seed, x0)
        own_draw = options.sampler == "ddim"  # ComfyUI's "ddim" re-noises the known part with seed + 1
        masked = comfy_convention.batch_noise(seed + 1, x0.shape).to(x0.device) if own_draw else initial
    else:
        noise = SeededNoise(batch_seeds(seed, x0.shape[0]), x0.shape[1:], x0.device)
        initial = noise.draw()
        step, masked = noise, initial
    if not options.add_noise:
        masked = masked if options.comfy and options.sampler == "ddim" else torch.zeros_like(initial)
        initial = torch.zeros_like(initial)
    return initial, step, masked


def _start_scale(options: SamplingOptions, sigma_0: float, sigma_max: float) -> float:
    """sqrt(1 + sigma_0^2) from pure noise (x_T ~ N(0, I) in the paper's terms), else sigma_0."""
    if options.comfy:
        return comfy_convention.start_scale(sigma_0, sigma_max)
    full = options.denoise >= 1 and not options.start_step
    return math.sqrt(1 + sigma_0**2) if full else sigma_0


def _check_options(options: SamplingOptions) -> None:
    if options.sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {options.sampler!r}; known: {', '.join(SAMPLER_NAMES)}")
    if options.scheduler not in SCHEDULER_NAMES:
        raise ValueError(f"unknown scheduler {options.scheduler!r}; known: {', '.join(SCHEDULER_NAMES)}")
    if options.steps < 1:
        raise ValueError(f"steps must be at least 1, got {options.steps}")
    if options.convention not in CONVENTIONS:
        raise ValueError(f"unknown convention {options.convention!r}; known: {', '.join(CONVENTIONS)}")


def _step_reporter(step_callback: Callable[[StepInfo], None] | None, total: int,
                   model_fn: Callable[..., torch.Tensor], watch: BlockWatch) -> Callable[[dict[str, Any]], None]:
    def report(info: dict[str, Any]) -> None:
        watch.step_done(info["i"] + 1)
        if step_callback is None:
            return
        x = info["x"]
        if isinstance(model_fn, MaskedDenoiser):
            known = model_fn.known_at(info["sigma"])
            x = known + (x - known) * model_fn.mask
        step_callback(StepInfo(info["i"], total, x, info["denoised"], info["sigma"]))

    return report
