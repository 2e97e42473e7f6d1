"""load_checkpoint: a file or diffusers folder -> MODEL, AUTOENCODER and CONDITIONER values.

Modules are built on the `meta` device (no memory, no init), every expected key
is checked against the file (presence and shape) before any weight is read,
then tensors are read one at a time straight to the target device and dtype and
assigned in place (`load_state_dict(assign=True)`), so no second full copy of
the model exists. Any problem raises a CheckpointError naming the file and the
first offending key; nothing half-loaded is returned.
"""
from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from engine.capabilities import checkpoint_capabilities
from engine.errors import KilnError
from engine.models.checkpoint import CheckpointError, TensorSource, open_source, read_json, sniff_format
from engine.models.conditioners import Conditioner, build_conditioner
from engine.models.configs import (
    AutoencoderConfig,
    CheckpointConfig,
    ConditionerConfig,
    DiffusionConfig,
    UNetConfig,
)
from engine.models.detect import detect_config, matching_presets
from engine.models.keymaps import (
    AE_PREFIX,
    COND_PREFIX,
    UNET_PREFIX,
    check_first_stage_copies,
    diffusers_component_config,
    ema_key,
    first_stage_copies,
    has_ema,
    is_ignorable,
    open_diffusers,
)
from engine.models.prepacked import prepack_convolutions
from engine.models.schemas import (
    check_diffusers_scheduler,
    check_diffusers_text_encoder,
    check_diffusers_unet,
    check_diffusers_vae,
    check_kiln_config,
)
from engine.models.tokenizers import (
    find_bert_tokenizer,
    find_clip_tokenizer,
    tokenizer_dirs,
    tokenizer_report,
)
from engine.models.yaml_config import load_yaml_config

if TYPE_CHECKING:
    from engine.models.autoencoder import AutoencoderKL, VQModel
    from engine.models.unet import UNetModel

METADATA_CONFIG_KEY = "kiln_config"  # safetensors metadata: CheckpointConfig.to_dict() as JSON
CARD_CONFIG_KEY = "checkpoint_config"  # the same inside a <stem>.json card beside the file

Transform = Callable[[torch.Tensor], torch.Tensor] | None


@dataclass
class LoadedCheckpoint:
    model: Any  # LatentDiffusionModel
    first_stage: Any  # FirstStage
    conditioner: Conditioner
    config: CheckpointConfig
    report: dict[str, Any] = field(default_factory=dict)


@dataclass
class ResolvedCheckpoint:
    """A checkpoint's tensors and config, before any weight is read."""

    source: TensorSource
    config: CheckpointConfig
    config_source: str  # yaml | metadata | card | diffusers | detected
    guessed: list[str] = field(default_factory=list)
    card: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------- device and dtype


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    name = str(device)
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        resolved = torch.device(name)
    except RuntimeError as exc:
        raise KilnError(f"unknown device {name!r} (auto, cpu, cuda, cuda:N or mps)") from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise KilnError(f"device {name!r} asked for but CUDA is not available")
    return resolved


_DEFAULT_THREADS = torch.get_num_threads()  # torch's own choice: OMP_NUM_THREADS, else the cores


def cpu_threads(wanted: int = 0) -> int:
    """Torch threads for CPU work: `wanted` when > 0, OMP_NUM_THREADS when set, else the idle cores (>= 1).

    A thread on a core that other work keeps busy costs more than it brings:
    OpenMP workers spin waiting for each other, and a step of the built-in 10 M
    UNet took 4.3 s with 2 threads instead of 0.1 s with 1 on a 2-core machine
    running two training jobs.
    """
    if wanted > 0:
        return wanted
    if os.environ.get("OMP_NUM_THREADS"):
        return _DEFAULT_THREADS
    busy = busy_cores()
    if busy is None:
        return _DEFAULT_THREADS
    return max(1, min(_DEFAULT_THREADS, round(_DEFAULT_THREADS - busy)))


def busy_cores(samples: int = 9, path: str = "/proc/loadavg") -> float | None:
    """How many cores other work keeps busy right now; None where that cannot be read.

    Linux: the median, over a few reads 1 ms apart, of the runnable threads in
    `path` less this reader. Not the 1-minute load average: it trails the
    present by a minute, so a run that starts after another one has just
    ended (a benchmark's second run, a quick re-run) would see the finished
    run's load and halve its threads for nothing (one UNet call of the
    built-in base model: 56 ms on 1 thread against 41 ms on 2 of a 2-core
    machine). Elsewhere the 1-minute load average.
    """
    counts = []
    try:
        for index in range(samples):
            with open(path, encoding="ascii") as file:
                counts.append(int(file.read().split()[3].split("/")[0]) - 1)  # "R/T": runnable/total
            if index < samples - 1:
                time.sleep(0.001)
    except (OSError, ValueError, IndexError):
        return os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return float(max(0, sorted(counts)[len(counts) // 2]))


def use_cpu_threads(wanted: int = 0) -> int:
    """Set torch's CPU thread count by `cpu_threads`; returns it."""
    threads = cpu_threads(wanted)
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return threads


DECODE_THREADS = 1  # the final decode's CPU threads: fixed, so a picture's bytes follow neither --threads nor the load


@contextmanager
def fixed_cpu_threads(threads: int = DECODE_THREADS) -> Iterator[None]:
    """Run a block on a fixed number of torch CPU threads, then restore the count.

    The autoencoder decode is the one stage of a 128 px text_to_image run whose floats depend on the
    thread count (its convolutions split their sums by thread: up to 1.3e-5 between 1 and 2 threads,
    which flips a few 8-bit values); conditioning and sampling were bit-identical.
    """
    before = torch.get_num_threads()
    if before != threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_dtype(precision: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """fp32 on the CPU; fp16 on GPUs unless told otherwise; bf16 where asked and supported."""
    from engine.precision import choose_precision

    if isinstance(precision, torch.dtype):
        return precision
    return _DTYPES[choose_precision(device.type, precision or "auto", bf16_supported(device)).model]


def bf16_supported(device: torch.device) -> bool:
    if device.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    return device.type == "cpu"  # MPS: left out, its bf16 support depends on the macOS version


# ---------------------------------------------------------------- config resolution


def resolve_checkpoint(path: str | os.PathLike) -> ResolvedCheckpoint:
    """Open a checkpoint and find its config: YAML beside it, embedded/card config, or shapes."""
    path = str(path)
    if sniff_format(path) == "diffusers":
        return _resolve_diffusers(path)
    source = open_source(path)
    card = _read_card(path)
    shapes = source.shapes()
    yaml_path = Path(path).with_suffix(".yaml")
    guessed: list[str]
    if yaml_path.is_file():
        config, origin, guessed = load_yaml_config(yaml_path), "yaml", []
    elif (embedded := _embedded_config(source, card, path)) is not None:
        config, origin, guessed = embedded
    else:
        detection = _detect(shapes, path)
        config, origin, guessed = detection.config, "detected", detection.guessed
    if config.preset == "custom":
        names = matching_presets(config)
        config.preset = names[0] if names and origin == "yaml" and _same_schedule(config, names[0]) else "custom"
    _apply_stored_schedule(source, config, origin)
    return ResolvedCheckpoint(source, config, origin, guessed, card)


def _detect(shapes: dict, path: str) -> Any:
    try:
        return detect_config(shapes, os.path.basename(path))
    except KilnError as exc:
        raise CheckpointError(path, str(exc)) from None
    except (KeyError, ValueError, IndexError) as exc:
        raise CheckpointError(path, f"cannot tell the architecture from the tensor shapes ({exc})") from None


def _same_schedule(config: CheckpointConfig, name: str) -> bool:
    from engine.models.presets import get_preset

    preset = get_preset(name)
    return (config.diffusion.linear_start, config.diffusion.linear_end) == \
        (preset.diffusion.linear_start, preset.diffusion.linear_end)


def _read_card(path: str) -> dict[str, Any]:
    card_path = Path(path).with_suffix(".json")
    return read_json(card_path) if card_path.is_file() else {}


def _embedded_config(source: TensorSource, card: dict, path: str) -> tuple[CheckpointConfig, str, list[str]] | None:
    raw, origin = source.metadata().get(METADATA_CONFIG_KEY), "metadata"
    data = _metadata_json(raw, path) if raw else None
    if data is None and isinstance(card.get(CARD_CONFIG_KEY), dict):
        data, origin = card[CARD_CONFIG_KEY], "card"
    if data is None:
        return None
    where = f"embedded {METADATA_CONFIG_KEY}" if origin == "metadata" else f"{CARD_CONFIG_KEY} of its card"
    check_kiln_config(data, path, where)
    try:
        config = CheckpointConfig.from_dict(data)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(path, f"bad embedded model config ({exc})") from None
    if "scale_factor" in card and origin == "card" and "diffusion" not in data:
        config.diffusion.scale_factor = float(card["scale_factor"])
    return config, origin, []


def _metadata_json(raw: str, path: str) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        raise CheckpointError(path, f"its embedded {METADATA_CONFIG_KEY} is not valid JSON") from None


def _apply_stored_schedule(source: TensorSource, config: CheckpointConfig, origin: str) -> None:
    """A `scale_factor` tensor (scale_by_std models) wins; `betas` fill in an unknown schedule."""
    shapes = source.shapes()
    if "scale_factor" in shapes and shapes["scale_factor"] in ((), (1,)):
        config.diffusion.scale_factor = float(source.get("scale_factor", "cpu", torch.float64).reshape(()))
    if origin == "detected" and config.preset == "custom" and "betas" in shapes:
        betas = source.get("betas", "cpu", torch.float64)
        config.diffusion.timesteps = int(betas.shape[0])
        config.diffusion.linear_start = round(float(betas[0]), 8)
        config.diffusion.linear_end = round(float(betas[-1]), 8)


def _resolve_diffusers(path: str) -> ResolvedCheckpoint:
    from engine.models.autoencoder import AutoencoderKL
    from engine.models.unet import UNetModel

    unet_raw, vae_raw = diffusers_component_config(path, "unet"), diffusers_component_config(path, "vae")
    check_diffusers_unet(unet_raw, Path(path) / "unet" / "config.json")
    check_diffusers_vae(vae_raw, Path(path) / "vae" / "config.json")
    unet_cfg, nrb = _unet_from_diffusers(unet_raw)
    ae_cfg = _vae_from_diffusers(vae_raw)
    cond = _text_from_diffusers(path)
    diffusion = _schedule_from_diffusers(path, cond)
    diffusion.scale_factor = float(vae_raw.get("scaling_factor", 0.18215))
    config = CheckpointConfig(unet_cfg, ae_cfg, diffusion, cond)
    names = matching_presets(config)
    config.preset = names[0] if names else "custom"
    with meta_modules():
        unet_keys = list(UNetModel(unet_cfg).state_dict())
        vae_keys = list(AutoencoderKL(ae_cfg).state_dict())
    source = open_diffusers(path, unet_keys, vae_keys, nrb, len(ae_cfg.ch_mult))
    return ResolvedCheckpoint(source, config, "diffusers")


def _unet_from_diffusers(c: dict) -> tuple[UNetConfig, list[int]]:
    channels = list(c["block_out_channels"])
    levels = len(channels)
    nrb = c.get("layers_per_block", 2)
    nrb_list = list(nrb) if isinstance(nrb, list) else [nrb] * levels
    attn_levels = [i for i, t in enumerate(c.get("down_block_types", [])) if "CrossAttn" in t or "Attn" in t]
    heads = c.get("num_attention_heads") or c.get("attention_head_dim", 8)
    cfg = UNetConfig(in_channels=c.get("in_channels", 4), out_channels=c.get("out_channels", 4),
                     model_channels=channels[0], num_res_blocks=nrb if isinstance(nrb, int) else tuple(nrb),
                     attention_resolutions=tuple(2 ** i for i in attn_levels),
                     channel_mult=tuple(ch // channels[0] for ch in channels), use_spatial_transformer=True,
                     context_dim=c.get("cross_attention_dim", 768),
                     use_linear_in_transformer=bool(c.get("use_linear_projection", False)), legacy=False,
                     transformer_depth=_depth(c.get("transformer_layers_per_block", 1)),
                     num_classes=c.get("num_class_embeds"))
    if isinstance(heads, int):
        cfg.num_heads = heads
    else:
        per_head = {ch // h for ch, h in zip(channels, heads, strict=True)}
        if len(per_head) != 1:
            raise KilnError(f"unsupported diffusers attention_head_dim {heads}")
        cfg.num_head_channels, cfg.num_heads = per_head.pop(), -1
    return cfg, nrb_list


def _depth(value: Any) -> int | tuple[int, ...]:
    return tuple(value) if isinstance(value, list) else int(value)


def _vae_from_diffusers(c: dict) -> AutoencoderConfig:
    channels = list(c["block_out_channels"])
    latent = int(c.get("latent_channels", 4))
    return AutoencoderConfig(kind="kl", embed_dim=latent, z_channels=latent, double_z=True,
                             in_channels=c.get("in_channels", 3), out_ch=c.get("out_channels", 3), ch=channels[0],
                             ch_mult=tuple(ch // channels[0] for ch in channels),
                             num_res_blocks=int(c.get("layers_per_block", 2)),
                             resolution=int(c.get("sample_size", 256)))


def _text_from_diffusers(path: str) -> ConditionerConfig:
    folder = Path(path) / "text_encoder"
    if not folder.is_dir():
        return ConditionerConfig("none")
    c = read_json(folder / "config.json")
    check_diffusers_text_encoder(c, folder / "config.json")
    return ConditionerConfig("clip", {
        "width": c["hidden_size"], "layers": c["num_hidden_layers"], "heads": c["num_attention_heads"],
        "intermediate": c["intermediate_size"], "vocab": c["vocab_size"],
        "max_length": c.get("max_position_embeddings", 77), "act": c.get("hidden_act", "quick_gelu"),
        "layer": "last", "pad": "eos" if c.get("hidden_act", "quick_gelu") == "quick_gelu" else 0})


def _schedule_from_diffusers(path: str, cond: ConditionerConfig) -> DiffusionConfig:
    sched_path = Path(path) / "scheduler" / "scheduler_config.json"
    s = read_json(sched_path) if sched_path.is_file() else {}
    check_diffusers_scheduler(s, sched_path)
    if s.get("beta_schedule", "scaled_linear") != "scaled_linear":
        raise CheckpointError(sched_path, f"beta_schedule {s['beta_schedule']!r} is not supported (scaled_linear)")
    prediction = {"epsilon": "eps", "v_prediction": "v"}.get(s.get("prediction_type", "epsilon"))
    if prediction is None:
        raise CheckpointError(sched_path, f"prediction_type {s['prediction_type']!r} is not supported")
    return DiffusionConfig(timesteps=int(s.get("num_train_timesteps", 1000)),
                           linear_start=float(s.get("beta_start", 0.00085)),
                           linear_end=float(s.get("beta_end", 0.012)), prediction=prediction,  # type: ignore[arg-type]
                           conditioning_key="crossattn" if cond.kind != "none" else None)


# ---------------------------------------------------------------- building and loading


class _SkipInit(TorchFunctionMode):
    """torch.nn.init functions leave their tensor as it is.

    Modules built on meta need no initial values (the file supplies them), and
    the meta kernel of `normal_` (embeddings) imports torch._dynamo on first
    use: seconds of start-up on a small CPU for nothing.
    """

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if getattr(func, "__module__", None) == "torch.nn.init":
            return args[0] if args else kwargs["tensor"]
        return func(*args, **kwargs)


@contextmanager
def meta_modules() -> Iterator[None]:
    """Modules built inside have their parameters on the meta device, uninitialised (no memory, no work)."""
    with torch.device("meta"), _SkipInit():
        yield


def build_modules(config: CheckpointConfig,
                  tokenizer: Any = None) -> tuple[UNetModel, AutoencoderKL | VQModel, Conditioner]:
    """UNet, autoencoder and conditioner for a config (call under `meta_modules()` to skip init)."""
    from engine.models.autoencoder import AutoencoderKL, VQModel
    from engine.models.unet import UNetModel

    unet = UNetModel(config.unet)
    ae = (VQModel if config.autoencoder.kind == "vq" else AutoencoderKL)(config.autoencoder)
    conditioner = build_conditioner(config.conditioner, config.diffusion.conditioning_key, tokenizer)
    return unet, ae, conditioner


@dataclass
class KeyPlan:
    """For one module: module key -> (checkpoint key, transform)."""

    module: nn.Module
    entries: dict[str, tuple[str, Transform]]


def plan_keys(unet: nn.Module, ae: nn.Module, conditioner: Conditioner, shapes: dict[str, tuple[int, ...]],
              use_ema: bool) -> tuple[list[KeyPlan], dict[str, Any]]:
    """Map every module key to a checkpoint key; report EMA use, missing and unexpected keys."""
    ema = use_ema and has_ema(shapes)
    unet_entries: dict[str, tuple[str, Transform]] = {}
    for k in unet.state_dict():
        name = UNET_PREFIX + k
        unet_entries[k] = (ema_key(name) if ema and ema_key(name) in shapes else name, None)
    ae_entries: dict[str, tuple[str, Transform]] = {k: (AE_PREFIX + k, None) for k in ae.state_dict()}
    cond_entries = {}
    for k in conditioner.state_dict():
        src, transform = conditioner.source_key(k)
        cond_entries[k] = (COND_PREFIX + src, transform)
    plans = [KeyPlan(unet, unet_entries), KeyPlan(ae, ae_entries), KeyPlan(conditioner, cond_entries)]
    used = {src for plan in plans for src, _ in plan.entries.values()}
    if ema:  # the regular UNet weights the EMA copies replace are accounted for
        used |= {UNET_PREFIX + k for k in unet_entries}
    copies = first_stage_copies(shapes) if conditioner.kind == "masked_image" else {}
    used |= set(copies)  # LDM inpainting: its conditioning stage is the first stage, stored twice
    missing = [src for plan in plans for src, _ in plan.entries.values() if src not in shapes]
    unexpected = sorted(k for k in shapes if k not in used and not is_ignorable(k))
    report = {"ema": "used" if ema else ("not in the file" if use_ema else "not asked"),
              "missing": missing, "unexpected": unexpected, "strict": not missing and not unexpected,
              "keys_used": len(used), "keys_in_file": len(shapes), "first_stage_copies": len(copies)}
    return plans, report


def check_shapes(plans: list[KeyPlan], shapes: dict[str, tuple[int, ...]], path: str) -> None:
    """Raise on the first key whose checkpoint shape differs from the module's."""
    for plan in plans:
        expected = plan.module.state_dict()
        for key, (src, transform) in plan.entries.items():
            shape = shapes[src]
            if transform is not None:
                shape = tuple(transform(torch.empty(shape, device="meta")).shape)
            if tuple(expected[key].shape) != tuple(shape):
                raise CheckpointError(path, f"shape mismatch for {src!r}: the file has {list(shape)}, "
                                            f"the architecture needs {list(expected[key].shape)}")


def _load_plan(plan: KeyPlan, source: TensorSource, device: torch.device, dtype: torch.dtype,
               channels_last: bool = False) -> None:
    """Read each tensor once, converting dtype (and with `channels_last` the layout of 4-D
    weights) in the same copy: a later `Module.to(memory_format=...)` then has nothing to do."""
    state = {}
    shapes = source.shapes() if channels_last else {}
    for key, (src, transform) in plan.entries.items():
        if channels_last and transform is None and len(shapes[src]) == 4:
            raw = source.get(src, device)
            wanted = dtype if raw.is_floating_point() else raw.dtype
            state[key] = raw.to(dtype=wanted, memory_format=torch.channels_last)
            continue
        tensor = source.get(src, device, dtype)
        state[key] = transform(tensor).contiguous() if transform is not None else tensor
    plan.module.load_state_dict(state, strict=True, assign=True)
    _materialise_buffers(plan.module, device)
    plan.module.eval().requires_grad_(False)


def _materialise_buffers(module: nn.Module, device: torch.device) -> None:
    """Non-persistent buffers built on meta (CLIP position ids) are recreated on the device."""
    for name, buf in list(module.named_buffers()):
        if buf.device.type != "meta":
            continue
        owner = module.get_submodule(name.rsplit(".", 1)[0]) if "." in name else module
        leaf = name.rsplit(".", 1)[-1]
        if leaf != "position_ids":
            raise KilnError(f"internal: buffer {name} has no value after loading")
        owner.register_buffer(leaf, torch.arange(buf.shape[-1], device=device).expand(1, -1), persistent=False)


def find_tokenizer(config: ConditionerConfig, path: str) -> Any:
    dirs = tokenizer_dirs(path)
    if config.kind in ("clip", "openclip"):
        return find_clip_tokenizer(dirs)
    if config.kind == "bert" and config.params.get("tokenizer") == "bert" and "words" not in config.params:
        return find_bert_tokenizer(dirs)
    return None


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "auto",
                    dtype: str | torch.dtype | None = None, use_ema: bool = False,
                    prediction: str = "auto") -> LoadedCheckpoint:
    """Load a checkpoint file or diffusers folder onto `device` in `dtype` (auto: fp32 CPU, fp16 GPU)."""
    from engine.models.diffusion import LatentDiffusionModel
    from engine.models.first_stage import FirstStage

    path = str(path)
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    resolved = resolve_checkpoint(path)
    config = resolved.config
    if prediction not in ("auto", "eps", "v"):
        raise KilnError(f"prediction must be auto, eps or v, not {prediction!r}")
    if prediction != "auto":
        config.diffusion.prediction = prediction  # type: ignore[assignment]
    shapes = resolved.source.shapes()
    tokenizer = find_tokenizer(config.conditioner, path)
    try:
        with meta_modules():
            unet, ae, conditioner = build_modules(config, tokenizer)
    except (KilnError, ValueError) as exc:
        raise CheckpointError(path, f"cannot build the model: {exc}") from None
    plans, report = plan_keys(unet, ae, conditioner, shapes, use_ema)
    if report["missing"]:
        raise CheckpointError(path, f"missing key {report['missing'][0]!r}"
                                    + (f" (and {len(report['missing']) - 1} more)" if len(report["missing"]) > 1 else ""))
    if report["unexpected"]:
        raise CheckpointError(path, f"unexpected key {report['unexpected'][0]!r} for a {config.preset} model"
                                    + (f" (and {len(report['unexpected']) - 1} more)" if len(report["unexpected"]) > 1 else ""))
    check_shapes(plans, shapes, path)
    if report["first_stage_copies"]:
        check_first_stage_copies(resolved.source, first_stage_copies(shapes), path)
        copies = report["first_stage_copies"]
        report["notes"] = [f"{copies} cond_stage_model.* keys are the first stage again (checked equal)"]
    ae_dtype = torch.float32 if dt == torch.float16 else dt  # SD-style VAEs overflow in fp16
    for plan in plans:
        _load_plan(plan, resolved.source, dev, ae_dtype if plan.module is ae else dt,
                   channels_last=dev.type == "cpu" and plan.module is not conditioner)
    if dev.type == "cpu":
        # oneDNN convolutions then skip reordering every activation: measured on one thread, the
        # 4x SR decoder at 512 px took 2.0 s instead of 2.7 s, the base UNet step 68 ms instead of 88 ms
        for module in (unet, ae):
            # Module.to takes memory_format at run time; torch's stub leaves it out
            module.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
            prepack_convolutions(module)  # and their weights once (small models: bench.bench_prepacked)
    name = os.path.basename(path.rstrip("/"))
    capabilities = checkpoint_capabilities(config)
    model = LatentDiffusionModel(unet, config.diffusion, name, capabilities).to(dev)
    model.latent_rgb = _latent_rgb(resolved.card)  # previews without the autoencoder wired to the sampler
    first_stage = FirstStage(ae, config.diffusion.scale_factor, name=name, latent_rgb=model.latent_rgb,
                             inpaint_convention=capabilities.inpaint_convention)
    report.update({"format": resolved.source.format, "config_source": resolved.config_source,
                   "guessed": resolved.guessed, "preset": config.preset, "device": str(dev), "dtype": str(dt),
                   "tokenizer": tokenizer_report(tokenizer, getattr(conditioner, "tokenizer", None))})
    return LoadedCheckpoint(model, first_stage, conditioner, config, report)


def _latent_rgb(card: dict) -> Any:
    """The card's preview projection: its fitted network when it has one, else its linear factors."""
    from engine.sampling.preview import is_preview_network

    network = card.get("latent_rgb_network")
    if is_preview_network(network):
        return network
    factors = card.get("latent_rgb_factors")
    if isinstance(factors, list) and factors:
        return tuple(tuple(float(v) for v in row) for row in factors)
    return None
