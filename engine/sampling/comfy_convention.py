"""ComfyUI's sampling conventions, for graphs converted from ComfyUI (SamplingOptions.convention "comfyui").

Each rule below is what ComfyUI's KSampler does (comfy/samplers.py, comfy/sample.py,
comfy/k_diffusion/sampling.py, comfy/extra_samplers/uni_pc.py) where Kiln's own
convention differs; the pipeline applies them only under "comfyui":

- timesteps: the UNet gets the timestep of the table nearest to sigma in float32 log sigma
  (ComfyDenoiser), not the interpolated fractional one;
- sigmas: dpm_2, dpm_2_ancestral, uni_pc and uni_pc_bh2 get steps + 1 sigmas with the
  second-to-last dropped; "ddim_uniform" is ComfyUI's (timesteps 1, 1 + c, ... below T with
  c = T // steps, so a step count that does not divide T gives an extra step);
- start: noise * sqrt(1 + sigma_0^2) only when sigma_0 is the model's largest sigma, else
  noise * sigma_0 (Kiln: by denoise == 1);
- noise: the whole batch in one draw from a CPU generator seeded with the seed (Kiln: item k
  from seed + k); the per-step noise of ancestral and SDE samplers from a fresh generator on
  the latent's device, seeded seed + 1 on the CPU and seed on other devices;
- lms: a last step to sigma 0 returns the prediction;
- names: "ddim" is Euler (with a latent noise mask, the re-noised known part uses a separate
  draw seeded seed + 1); "uni_pc"/"uni_pc_bh2" are `unipc.sample_uni_pc_comfy`.

Not reproduced: ComfyUI's dpmpp_sde, dpmpp_2m_sde and dpmpp_3m_sde take their noise from
torchsde's Brownian tree; here they use the per-step generator (same update rules).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from engine.models.diffusion import LatentDiffusionModel
from engine.sampling.denoiser import DiscreteDenoiser
from engine.sampling.noise import SEED_MODULUS
from engine.sampling.schedules import SigmaTable, get_sigmas

DISCARD_PENULTIMATE = frozenset({"dpm_2", "dpm_2_ancestral", "uni_pc", "uni_pc_bh2"})


class ComfyDenoiser(DiscreteDenoiser):
    """The UNet sees the timestep whose float32 log sigma is nearest (ModelSamplingDiscrete.timestep),
    which settles a sigma halfway between two timesteps as ComfyUI does."""

    def __init__(self, model: LatentDiffusionModel):
        super().__init__(model, quantize_timesteps=True)
        self._log_table32 = self.log_sigmas.float()

    def sigma_to_t(self, sigma: torch.Tensor) -> torch.Tensor:
        log_sigma = sigma.detach().to("cpu", torch.float32).log().reshape(-1)
        t = (log_sigma[None, :] - self._log_table32[:, None]).abs().argmin(dim=0)
        return t.to(sigma.device, torch.float64).view(sigma.shape)

    def sigma_to_t_scalar(self, sigma: float) -> float:
        return float(self.sigma_to_t(torch.tensor([sigma]))[0])


def ddim_uniform_schedule(model: SigmaTable, steps: int) -> torch.Tensor:
    """ComfyUI's "ddim_uniform": table sigmas at 1, 1 + c, 1 + 2c, ... < T (c = T // steps), descending, then 0."""
    stride = max(model.num_timesteps // steps, 1)
    index = list(range(1, model.num_timesteps, stride))[::-1]
    return torch.cat([model.sigmas[index].float(), torch.zeros(1)])


def normal_schedule(model: DiscreteDenoiser, steps: int, sgm: bool = False) -> torch.Tensor:
    """ComfyUI's "normal" / "sgm_uniform": the same timesteps as Kiln's, but the sigmas interpolated in
    float32 as ComfyUI does (a sigma halfway between two timesteps then rounds to the same one)."""
    last = model.num_timesteps - 1
    t = torch.linspace(last, 0, steps + 1)[:-1] if sgm else torch.linspace(last, 0, steps)
    low, high, w = t.floor().long(), t.ceil().long(), t.frac()
    table = model.log_sigmas.float()
    return torch.cat([((1 - w) * table[low] + w * table[high]).exp(), torch.zeros(1)])


def schedule(model: SigmaTable, scheduler: str, sampler: str, steps: int) -> torch.Tensor:
    """KSampler.calculate_sigmas: the scheduler's sigmas, the penultimate dropped for some samplers."""
    discard = sampler in DISCARD_PENULTIMATE
    count = steps + 1 if discard else steps
    if scheduler == "ddim_uniform":
        sigmas = ddim_uniform_schedule(model, count)
    elif scheduler in ("normal", "sgm_uniform") and isinstance(model, DiscreteDenoiser):
        sigmas = normal_schedule(model, count, sgm=scheduler == "sgm_uniform")
    else:
        sigmas = get_sigmas(model, scheduler, count)
    return torch.cat([sigmas[:-2], sigmas[-1:]]) if discard else sigmas


def comfy_sigmas(model: SigmaTable, scheduler: str, sampler: str, steps: int, denoise: float) -> torch.Tensor:
    """KSampler.set_steps: the whole schedule, or for denoise < 1 the last steps + 1 sigmas of
    a schedule of int(steps / denoise) steps."""
    if denoise <= 0:
        return torch.zeros(0)
    if denoise > 0.9999:
        return schedule(model, scheduler, sampler, steps)
    return schedule(model, scheduler, sampler, int(steps / denoise))[-(steps + 1):]


def split_sigmas(sigmas: torch.Tensor, start: int | None, end: int | None, leftover_noise: bool) -> torch.Tensor:
    """KSamplerAdvanced's part of a schedule: steps start..end of it (sigmas[start:end + 1]).

    Ending before the schedule does, the last sigma becomes 0 unless the leftover noise is kept;
    a start at or past the last step leaves no step (the latent passes through)."""
    if end is not None and end < len(sigmas) - 1:
        sigmas = sigmas[: end + 1].clone()
        if not leftover_noise:
            sigmas[-1] = 0.0
    if start is not None and start > 0:
        sigmas = sigmas[start:] if start < len(sigmas) - 1 else sigmas[-1:]
    return sigmas


def start_scale(sigma_0: float, sigma_max: float) -> float:
    """How much of the initial noise the latent gets: sqrt(1 + sigma_0^2) at the top of the table."""
    at_top = math.isclose(sigma_max, sigma_0, rel_tol=1e-5) or sigma_0 > sigma_max
    return math.sqrt(1 + sigma_0**2) if at_top else sigma_0


def batch_noise(seed: int, shape: Sequence[int]) -> torch.Tensor:
    """(B, C, h, w) float32 CPU noise, the whole batch from one generator seeded `seed`."""
    generator = torch.Generator("cpu").manual_seed(seed % SEED_MODULUS)
    return torch.randn(tuple(shape), generator=generator, dtype=torch.float32)


class StepNoise:
    """ComfyUI's per-step noise: a fresh generator on the latent's device (seed + 1 on the CPU)."""

    def __init__(self, seed: int, like: torch.Tensor):
        device = like.device
        offset = 1 if device.type == "cpu" else 0
        self.generator = torch.Generator(device).manual_seed((seed + offset) % SEED_MODULUS)
        self.shape, self.device, self.dtype = tuple(like.shape), device, like.dtype

    def __call__(self, sigma: float | None = None, sigma_next: float | None = None) -> torch.Tensor:
        return torch.randn(self.shape, generator=self.generator, device=self.device, dtype=self.dtype)
