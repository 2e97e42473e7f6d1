"""The Sampler node: denoise a latent with a model, guided by positive/negative conditioning.

The heavy lifting is engine.sampling.pipeline.sample; this module checks the
inputs, reports progress with a live preview each step (and, for a large latent,
within a step, block by block, without a preview), honours cancel (between the
UNet's blocks too), and counts UNet forward passes. torch is imported inside compute.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from engine.capabilities import ModelCapabilities
from engine.errors import UserInputError, quote
from engine.model_geometry import nearest_multiples
from engine.sampling.names import CONVENTIONS, SAMPLER_NAMES, SCHEDULER_NAMES
from engine.spec import SEED_MAX, ComputeContext, Input, NodeSpec, Output, Param, ParamType, SocketType
from engine.values import Latent

DEFAULT_SAMPLER = "dpmpp_2m"  # second order, one UNet call per step: the best all-rounder at 20-30 steps
DEFAULT_SCHEDULER = "karras"
SAMPLER_HELP = (
    "the update rule; ddim, plms and ddpm are the paper's samplers, exact with the ddim_uniform scheduler. "
    "*_cfg_pp: CFG++ (steps with the unconditional prediction; use cfg near 1). Under the comfyui "
    "convention ddim is ComfyUI's (an Euler step) and uni_pc ends as ComfyUI's; dpmpp_sde, dpmpp_2m_sde and "
    "dpmpp_3m_sde draw seeded per-step noise where ComfyUI uses a Brownian tree (the same pictures only "
    "with eta 0)")
CONVENTION_HELP = (
    "kiln: Kiln's own rules (batch item k uses seed + k, fractional timesteps, the paper's ddim). comfyui: "
    "ComfyUI's, to get the same picture as its KSampler: one noise draw for the whole batch, per-step "
    "noise re-seeded, timesteps rounded to the table, ComfyUI's sigma lists and names (a converted "
    "ComfyUI graph sets it)")


def _check_inputs(model: Any, latent: Latent, negative: Any, cfg: float) -> None:
    samples = latent.samples
    if samples.dim() != 4:
        raise UserInputError(f"the latent has shape {list(samples.shape)}, expected (batch, channels, h, w)")
    capabilities: ModelCapabilities = model.capabilities
    channels = capabilities.latent_channels
    if channels is not None and samples.shape[1] != channels:
        raise UserInputError(f"the latent has {samples.shape[1]} channels but model {model.name!r} works on "
                             f"{channels}: connect this model's autoencoder to Empty Latent")
    if negative is None and cfg != 1.0 and capabilities.conditional:
        raise UserInputError(f"cfg {cfg:g} needs a 'negative' conditioning (an empty prompt is the usual one); "
                             f"connect one or set cfg to 1", "cfg")


def _check_latent_size(ctx: ComputeContext, model: Any, latent: Latent, autoencoder: Any) -> None:
    """Refuse a latent the UNet cannot halve evenly at every level, naming the node and param that set
    its size, before any step (else it fails inside the UNet with "Sizes of tensors must match")."""
    capabilities: ModelCapabilities = model.capabilities
    down = capabilities.unet_multiple
    if down is None:
        return
    h, w = (int(n) for n in latent.samples.shape[-2:])
    if h % down == 0 and w % down == 0:
        return
    source = _latent_source(ctx)
    side, size = ("width", w) if w % down else ("height", h)
    params = source[1].get("params", {}) if source else {}
    known = autoencoder.capabilities.factor if autoencoder is not None else capabilities.latent_factor
    factor = known or _factor_from(params.get(side), size)
    where = f" of node {quote(source[0])} ({source[1].get('type')})" if source else ""
    if not factor:
        raise UserInputError(f"the latent{where} is {w}x{h}, not a multiple of {down}, which model "
                             f"{model.name!r} needs (its UNet halves the latent {down.bit_length() - 1} times)")
    multiple = int(factor) * down
    lower, upper = nearest_multiples(size * int(factor), multiple)
    raise UserInputError(f"{side} {size * int(factor)}{where} is not a multiple of {multiple}, which model "
                         f"{model.name!r} needs: use {lower} or {upper}")


def _latent_source(ctx: ComputeContext) -> tuple[str, dict] | None:
    """(id, node dict) of the node feeding the latent input, from the run's graph; None if unknown."""
    try:
        graph = ctx.graph_json
        src = next(lk["from"][0] for lk in graph["links"] if lk["to"] == [ctx.node_id, "latent"])
        return src, graph["nodes"][src]
    except (AttributeError, KeyError, IndexError, TypeError, StopIteration):
        return None


def _factor_from(pixels: Any, latent_size: int) -> int | None:
    """The autoencoder factor a width/height param implies (136 px made 17 latent pixels: 8)."""
    if isinstance(pixels, int) and not isinstance(pixels, bool) and latent_size and pixels % latent_size == 0:
        return pixels // latent_size
    return None


def _preview_fn(ctx: ComputeContext, inputs: Mapping[str, Any], params: Mapping[str, Any],
                channels: int) -> Callable[[Any], None]:
    from engine.sampling.preview import LatentPreviewer, decoded_preview

    ae, model = inputs.get("autoencoder"), inputs["model"]
    factors = (ae.latent_rgb if ae is not None else None) or model.latent_rgb
    project = LatentPreviewer(factors, channels)
    every = params["preview_decode_every"]

    def on_step(info: Any) -> None:
        ctx.check_cancelled()
        step = info.step + 1
        if ae is not None and every > 0 and (step % every == 0 or step == info.total):
            preview = decoded_preview(ae.decode_latents(info.denoised[:1]))
        else:
            preview = project(info.denoised)
        ctx.progress(step, info.total, preview)

    return on_step


def sampling_options(params: Mapping[str, Any], **advanced: Any) -> Any:
    """The pipeline's SamplingOptions for a sampler node's params (SamplerAdvanced adds its fields)."""
    from engine.sampling.pipeline import SamplingOptions

    return SamplingOptions(sampler=params["sampler"], scheduler=params["scheduler"], steps=params["steps"],
                           cfg=params["cfg"], denoise=params.get("denoise", 1.0), eta=params["eta"],
                           ddim_eta=params["ddim_eta"], convention=params.get("convention", "kiln"), **advanced)


def _sample(ctx: ComputeContext, inputs: Mapping[str, Any], params: Mapping[str, Any],
            options: Any = None) -> dict[str, Any]:
    from engine.oom import sample_with_retry, sampling_workload
    from engine.sampling.pipeline import sample

    model, latent = inputs["model"], inputs["latent"]
    negative = inputs.get("negative")
    _check_inputs(model, latent, negative, params["cfg"])
    _check_latent_size(ctx, model, latent, inputs.get("autoencoder"))
    options = options or sampling_options(params)
    ctx.check_cancelled()
    on_step = _preview_fn(ctx, inputs, params, latent.samples.shape[1])
    work = sampling_workload(model, latent.samples, inputs.get("autoencoder"))
    try:  # out of device memory: the idle models leave the device and it runs once more (engine.oom)
        out = sample_with_retry(lambda: sample(
            model, latent, inputs["positive"], negative, params["seed"], options,
            step_callback=on_step, on_model_eval=ctx.count_model_evals,
            check_cancelled=ctx.check_cancelled, block_progress=ctx.progress),
            lambda: ctx.models.free_device(inputs.values()), work)
    except ValueError as exc:  # conditioning that does not fit the latent or the model
        raise UserInputError(str(exc)) from exc
    return {"latent": out}


SAMPLER = NodeSpec(
    type="Sampler", title="Sampler", category="sampling",
    aliases=("KSampler", "SamplerCustom", "txt2img", "img2img", "Sampling method"),
    help="Denoises the latent step by step. denoise < 1 keeps part of the input (image to image); a latent "
         "noise mask limits the change to the masked region. cfg > 1 pushes the result towards the positive "
         "and away from the negative conditioning (one batched UNet call per step; cfg 1 skips the negative).",
    compute=_sample,
    inputs=(Input("model", SocketType.MODEL),
            Input("positive", SocketType.CONDITIONING),
            Input("negative", SocketType.CONDITIONING, optional=True, help="needed when cfg is not 1"),
            Input("latent", SocketType.LATENT, help="Empty Latent for text to image, an encoded image otherwise"),
            Input("autoencoder", SocketType.AUTOENCODER, optional=True,
                  help="only for previews: its preview colours, and full decodes if asked")),
    outputs=(Output("latent", SocketType.LATENT, "with each item's seed recorded"),),
    params=(
        Param("seed", ParamType.SEED, 0, "batch item k uses seed + k (comfyui convention: one draw for the "
              "whole batch)", min=0, max=SEED_MAX, inline=True),
        Param("steps", ParamType.INT, 25, "denoising steps", min=1, max=1000, inline=True),
        Param("cfg", ParamType.FLOAT, 5.0, "classifier-free guidance scale (1 = off)", min=0.0, max=30.0,
              step=0.5, inline=True),
        Param("sampler", ParamType.CHOICE, DEFAULT_SAMPLER, SAMPLER_HELP, choices=SAMPLER_NAMES, inline=True),
        Param("scheduler", ParamType.CHOICE, DEFAULT_SCHEDULER, "how the noise levels are spaced. ddim_uniform: "
              "the paper's timesteps; with ddim/plms/ddpm the last step ends at the first timestep, as the "
              "paper's code (a trace of noise is left); ddim_uniform_to_zero: the same timesteps, the last step "
              "to noise 0 (the predicted clean latent, as every other sampler ends)",
              choices=SCHEDULER_NAMES, inline=True),
        Param("convention", ParamType.CHOICE, "kiln", CONVENTION_HELP, choices=CONVENTIONS),
        Param("denoise", ParamType.FLOAT, 1.0, "1 = from pure noise; lower keeps more of the input latent",
              min=0.0, max=1.0, step=0.01),
        Param("eta", ParamType.FLOAT, 1.0, "ancestral and SDE samplers: fresh noise per step (0 = none)",
              min=0.0, max=2.0, step=0.05),
        Param("ddim_eta", ParamType.FLOAT, 0.0, "ddim only: 0 = deterministic (the paper), 1 = DDPM-like",
              min=0.0, max=1.0, step=0.05),
        Param("preview_decode_every", ParamType.INT, 0, "with an autoencoder connected, a full decode as the "
              "preview every N steps (0 = fast colour previews only)", min=0, max=1000),
    ),
)

SPECS = (SAMPLER,)
