"""The denoiser samplers see: `denoiser(x, sigma, **extra) -> denoised x0`.

Samplers work in the k-diffusion parameterisation: x = x0 + sigma * eps, the
noise level sigma running from large to 0. A discrete-time model (the paper's
1000-step DDPM schedule) maps onto it by sigma_t = sqrt((1 - abar_t) / abar_t);
its input is scaled back to the variance-preserving x_t = x / sqrt(1 + sigma^2)
and its eps or v output is turned into a prediction of the clean latent.

`GuidedDenoiser` adds classifier-free guidance on top, batching the
conditional and unconditional passes into one UNet call where it can.
"""
from __future__ import annotations

import bisect
import math
from collections.abc import Callable

import torch

from engine.models.diffusion import LatentDiffusionModel
from engine.models.regional import regions_for_items
from engine.models.regions import pad_regions
from engine.sampling.region_blend import blend_passes, blended, run_all, uses_blend
from engine.values import Conditioning

# Pad cross-attention contexts by repetition only up to this many tokens;
# beyond it the two passes run as separate UNet calls.
MAX_REPEATED_TOKENS = 77 * 12


class DiscreteDenoiser:
    """Wraps a LatentDiffusionModel once: sigma <-> timestep, input scaling, eps/v -> x0."""

    def __init__(self, model: LatentDiffusionModel, quantize_timesteps: bool = False):
        self.model = model
        self.quantize_timesteps = quantize_timesteps
        alphas_cumprod = model.alphas_cumprod.detach().to("cpu", torch.float64)
        self.sigmas = ((1 - alphas_cumprod) / alphas_cumprod).sqrt()  # (T,) ascending, float64
        self.log_sigmas = self.sigmas.log()
        self.num_timesteps = int(self.sigmas.shape[0])
        self._log_sigmas_dev: dict[torch.device, torch.Tensor] = {}
        self._log_sigma_list: list[float] = self.log_sigmas.tolist()

    @property
    def sigma_min(self) -> float:
        return float(self.sigmas[0])

    @property
    def sigma_max(self) -> float:
        return float(self.sigmas[-1])

    @property
    def prediction(self) -> str:
        return self.model.prediction

    def t_to_sigma(self, t: torch.Tensor) -> torch.Tensor:
        """Fractional timesteps -> sigmas, interpolating log sigma (float64 on the CPU)."""
        t = t.to(torch.float64).clamp(0, self.num_timesteps - 1)
        low = t.floor().long()
        high = (low + 1).clamp(max=self.num_timesteps - 1)
        frac = t - low
        return ((1 - frac) * self.log_sigmas[low] + frac * self.log_sigmas[high]).exp()

    def sigma_to_t(self, sigma: torch.Tensor) -> torch.Tensor:
        """Sigmas -> fractional timesteps, the inverse of t_to_sigma."""
        log_sigmas = self._log_sigmas_on(sigma.device)
        log_sigma = sigma.to(log_sigmas.dtype).clamp(min=1e-12).log()
        dists = log_sigma - log_sigmas[:, None]  # (T, N)
        low = dists.ge(0).cumsum(dim=0).argmax(dim=0).clamp(max=self.num_timesteps - 2)
        high = low + 1
        w = (log_sigmas[low] - log_sigma) / (log_sigmas[low] - log_sigmas[high])
        t = (1 - w.clamp(0, 1)) * low + w.clamp(0, 1) * high
        if self.quantize_timesteps:
            t = t.round()
        return t.view(sigma.shape)

    def _log_sigmas_on(self, device: torch.device) -> torch.Tensor:
        # float64 where the device has it (MPS does not), so t is exact at table sigmas.
        if device not in self._log_sigmas_dev:
            dtype = torch.float32 if device.type == "mps" else torch.float64
            self._log_sigmas_dev[device] = self.log_sigmas.to(device, dtype)
        return self._log_sigmas_dev[device]

    def sigma_to_t_scalar(self, sigma: float) -> float:
        """sigma_to_t for one Python float, without tensor work (the samplers' common case)."""
        log_sigma = math.log(max(sigma, 1e-12))
        table = self._log_sigma_list
        low = min(max(bisect.bisect_right(table, log_sigma) - 1, 0), self.num_timesteps - 2)
        w = min(max((log_sigma - table[low]) / (table[low + 1] - table[low]), 0.0), 1.0)
        t = low + w
        return float(round(t)) if self.quantize_timesteps else t

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor | float,
                 cond: Conditioning | None = None) -> torch.Tensor:
        """x: (B, C, h, w) at noise level sigma (scalar or (B,)); returns denoised (B, C, h, w)."""
        if not isinstance(sigma, torch.Tensor) or sigma.ndim == 0:
            return self._call_scalar(x, float(sigma), cond)
        sigma = _as_batch(sigma, x)
        return self.denoise_raw(x, sigma, self.model.apply(self.scale_input(x, sigma), self.timestep(sigma), cond))

    def _call_scalar(self, x: torch.Tensor, sigma: float, cond: Conditioning | None) -> torch.Tensor:
        t = torch.full((x.shape[0],), self.sigma_to_t_scalar(sigma), device=x.device, dtype=torch.float32)
        out = self.model.apply(x * (1 / math.sqrt(sigma**2 + 1)), t, cond)
        if self.prediction == "v":
            return x * (1 / (sigma**2 + 1)) - out * (sigma / math.sqrt(sigma**2 + 1))
        return x - out * sigma

    def scale_input(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return x / (sigma**2 + 1).sqrt()[:, None, None, None]

    def timestep(self, sigma: torch.Tensor) -> torch.Tensor:
        return self.sigma_to_t(sigma).to(torch.float32)

    def denoise_raw(self, x: torch.Tensor, sigma: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """The UNet's raw eps or v output -> predicted clean latent."""
        s = sigma[:, None, None, None].to(x.dtype)
        if self.prediction == "v":
            return x / (s**2 + 1) - out * s / (s**2 + 1).sqrt()
        return x - out * s


def _as_batch(sigma: torch.Tensor | float, x: torch.Tensor) -> torch.Tensor:
    if not isinstance(sigma, torch.Tensor):
        return torch.full((x.shape[0],), float(sigma), device=x.device, dtype=x.dtype)
    sigma = sigma.to(x.device, x.dtype)
    return sigma.expand(x.shape[0]) if sigma.ndim == 0 else sigma


class GuidedDenoiser:
    """Classifier-free guidance: uncond + scale * (cond - uncond), in x0 space.

    Guiding denoised x0 is the same as guiding eps (x0 = x - sigma * eps is affine
    in eps with the same x and sigma), so this equals the paper's
    `e = e_u + s * (e_c - e_u)`.

    With scale == 1 or no unconditional conditioning, one UNet call per
    evaluation. Otherwise `[uncond, cond]` are stacked along the batch and run as
    one UNet call when their tensors fit together; `on_model_eval(1)` is called
    once per UNet forward pass, so a batched guided evaluation counts as one.

    Cross-attention contexts of different token lengths (chunked long CLIP
    prompts: 77, 154, ... tokens) are made equal by repeating each context along
    the token axis up to the least common multiple of the lengths. Repeating a
    whole key/value sequence k times leaves attention output unchanged (each key
    gets k equal copies, the softmax weights renormalise to the same mixture), so
    the result equals separate calls exactly, unlike zero padding or padding with
    the empty prompt. Tensors that still do not fit run as two UNet calls.
    """

    def __init__(self, denoiser: DiscreteDenoiser, cond: Conditioning | None,
                 uncond: Conditioning | None = None, scale: float = 1.0,
                 on_model_eval: Callable[[int], None] | None = None, record_uncond: bool = False):
        self.inner = denoiser
        self.cond = cond
        # record_uncond (CFG++ samplers): run the unconditional pass even at scale 1
        self.uncond = uncond if scale != 1.0 or record_uncond else None
        self.last_uncond: torch.Tensor | None = None  # the last call's unconditional prediction
        self.scale = float(scale)
        self.on_model_eval = on_model_eval
        self._batched: Conditioning | None = None
        self._batched_for = -1
        self.batch_blend_passes = True  # blend-mode regions: all prompts in one UNet call where they stack

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
        if isinstance(sigma, torch.Tensor) and sigma.ndim:
            sigma = _as_batch(sigma, x)
        if uses_blend(self.cond) or uses_blend(self.uncond):
            return self._blended(x, sigma)
        if self.uncond is None:
            self.last_uncond = self._run(x, sigma, self.cond)
            return self.last_uncond
        both = self._batched_conditioning(x.shape[0])
        if both is not None:
            doubled = torch.cat([sigma, sigma]) if isinstance(sigma, torch.Tensor) and sigma.ndim else sigma
            denoised = self._run(torch.cat([x, x]), doubled, both)
            uncond_x0, cond_x0 = denoised.chunk(2)
        else:
            uncond_x0 = self._run(x, sigma, self.uncond)
            cond_x0 = self._run(x, sigma, self.cond)
        self.last_uncond = uncond_x0
        return uncond_x0 + (cond_x0 - uncond_x0) * self.scale

    def _blended(self, x: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
        """Blend-mode regional prompts: every prompt's prediction, averaged under its mask, then guided."""
        level = float(sigma.flatten()[0]) if isinstance(sigma, torch.Tensor) else float(sigma)
        progress = 1.0 - self.inner.sigma_to_t_scalar(level) / max(self.inner.num_timesteps - 1, 1)
        sides = [c or Conditioning() for c in ((self.uncond, self.cond) if self.uncond is not None else (self.cond,))]
        passes = [blend_passes(c, progress) for c in sides]
        flat = [cond for conds, _ in passes for cond in conds]
        outputs = run_all(self._run, x, sigma, flat, self.batch_blend_passes)
        results, start = [], 0
        for conds, regions in passes:
            results.append(blended(outputs[start:start + len(conds)], regions))
            start += len(conds)
        if len(results) == 1:
            self.last_uncond = results[0]
            return results[0]
        self.last_uncond = results[0]
        return results[0] + (results[1] - results[0]) * self.scale

    def _run(self, x: torch.Tensor, sigma: torch.Tensor | float, cond: Conditioning | None) -> torch.Tensor:
        if self.on_model_eval is not None:
            self.on_model_eval(1)
        return self.inner(x, sigma, cond)

    def _batched_conditioning(self, batch: int) -> Conditioning | None:
        if self._batched_for != batch:
            self._batched = stack_conditionings(self.uncond, self.cond, batch)
            self._batched_for = batch
        return self._batched


def stack_conditionings(first: Conditioning | None, second: Conditioning | None,
                        batch: int) -> Conditioning | None:
    """One Conditioning of 2*batch items, [first, second]; None when they cannot stack."""
    first = first or Conditioning()
    second = second or Conditioning()
    fields: dict[str, torch.Tensor | None] = {}
    prompt_regions = _stacked_prompt_regions(first, second, batch)
    if prompt_regions is None:
        return None
    first, second = _with_equal_regions(first, second)
    for name in ("crossattn", "concat", "y", "regions"):
        a, b = getattr(first, name), getattr(second, name)
        if (a is None) != (b is None):
            return None
        if a is None:
            fields[name] = None
            continue
        if name == "crossattn":
            a, b = _equal_token_lengths(a, b)
        a, b = _repeat_batch(a, batch), _repeat_batch(b, batch)
        if a is None or b is None or a.shape[1:] != b.shape[1:] or a.dtype != b.dtype:
            return None
        fields[name] = torch.cat([a, b.to(a.device)])
    with_regions = second if second.prompt_regions else first
    return Conditioning(**fields, meta=dict(second.meta), prompt_regions=prompt_regions,
                        region_mode=with_regions.region_mode, region_background=with_regions.region_background)


def _stacked_prompt_regions(first: Conditioning, second: Conditioning, batch: int) -> tuple | None:
    """Both sides' regional prompts, each kept to its own half of the stacked batch; None when the two
    apply them differently (they then run as separate calls)."""
    if first.prompt_regions and second.prompt_regions and (
            (first.region_mode, first.region_background) != (second.region_mode, second.region_background)):
        return None
    if (first.prompt_regions or second.prompt_regions) and (first.crossattn is None or second.crossattn is None):
        return None
    return regions_for_items(first.prompt_regions, 0, batch) + regions_for_items(second.prompt_regions, batch, batch)


def _with_equal_regions(a: Conditioning, b: Conditioning) -> tuple[Conditioning, Conditioning]:
    """Layout regions on one side only become empty regions (no box) on the other; counts padded to match."""
    ra, rb = a.regions, b.regions
    template = ra if ra is not None else rb
    if template is None:
        return a, b
    ra = ra if ra is not None else template.new_zeros(1, 1, template.shape[2])
    rb = rb if rb is not None else template.new_zeros(1, 1, template.shape[2])
    n = max(ra.shape[1], rb.shape[1])
    return a.with_(regions=pad_regions(ra, n)), b.with_(regions=pad_regions(rb, n))


def _equal_token_lengths(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    la, lb = a.shape[1], b.shape[1]
    if la == lb:
        return a, b
    target = math.lcm(la, lb)
    if target > MAX_REPEATED_TOKENS:
        return a, b  # left unequal: the caller falls back to separate calls
    return a.repeat(1, target // la, 1), b.repeat(1, target // lb, 1)


def _repeat_batch(t: torch.Tensor, batch: int) -> torch.Tensor | None:
    if t.shape[0] == batch:
        return t
    if batch % t.shape[0]:
        return None
    return t.repeat_interleave(batch // t.shape[0], dim=0)
