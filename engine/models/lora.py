"""LoRA (and LoCon) files applied to a loaded UNet and CLIP text encoder.

Layouts read (all `.safetensors`; pickled .pt/.ckpt LoRAs are refused):
- kohya / A1111: `lora_unet_<module path with _>.lora_down.weight`, `.lora_up.weight`, `.alpha`;
  `lora_te_<text module path>...` for the text encoder. UNet paths may use diffusers names
  (`down_blocks_0_attentions_0_proj_in`) or the original ones (`input_blocks_1_1_proj_in`).
- diffusers / PEFT: `unet.<diffusers path>.lora_A.weight` / `.lora_B.weight` (also `.lora.down/up`
  and the older `processor.to_q_lora.down.weight`), `text_encoder.<path>...`.
LoCon convolutions store `lora_down` as a 4-D (rank, in, kh, kw) kernel and `lora_up` as (out, rank, 1, 1).

Every layer gets W' = W + strength * (alpha / rank) * up @ down (kernels flattened, the product
reshaped to W's shape), computed in fp32 and stored in W's dtype, device and memory layout.

The base model is never changed: `patched_copy` returns a copy of the module tree whose patched
layers hold new weight tensors while every other parameter and buffer is the base model's own
tensor, shared (memory: the base model once, plus the patched layers once per LoRA node; the model
store's cached model and every node that shares it are untouched, and a cached output stays valid).
"""
from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
from torch import nn

from engine.errors import UserInputError
from engine.models.checkpoint import CheckpointError, SafetensorsSource, sniff_format
from engine.models.keymaps import unet_key_to_diffusers

_PARTS = (  # key ending -> (part, how the module name ends)
    (".lora_down.weight", "down"), (".lora_up.weight", "up"), (".lora_mid.weight", "mid"),
    (".lora_A.weight", "down"), (".lora_B.weight", "up"),
    (".lora.down.weight", "down"), (".lora.up.weight", "up"),
    ("_lora.down.weight", "down"), ("_lora.up.weight", "up"),
    (".lora_linear_layer.down.weight", "down"), (".lora_linear_layer.up.weight", "up"),
    (".alpha", "alpha"),
)


@dataclass
class LoraLayer:
    down: torch.Tensor | None = None
    up: torch.Tensor | None = None
    alpha: float | None = None
    keys: list[str] = field(default_factory=list)
    unsupported: bool = False  # a part this loader does not apply (LoCon's Tucker `lora_mid`)


@dataclass
class LoraPlan:
    """Which layers of which module a LoRA changes; what it leaves unused."""

    unet: dict[str, LoraLayer] = field(default_factory=dict)  # Kiln module path -> layer
    text: dict[str, LoraLayer] = field(default_factory=dict)
    unused: list[str] = field(default_factory=list)  # file keys that match nothing
    skipped: list[str] = field(default_factory=list)  # text encoder keys when only the model is patched

    @property
    def used_keys(self) -> int:
        return sum(len(layer.keys) for layer in (*self.unet.values(), *self.text.values()))


# ---------------------------------------------------------------- reading


def read_lora_file(path: str) -> dict[str, torch.Tensor]:
    """Every tensor of a LoRA `.safetensors` file, on the CPU; pickled files are refused unread."""
    try:
        fmt = sniff_format(path)
    except CheckpointError as exc:
        raise UserInputError(str(exc), param="lora_name") from None
    if fmt != "safetensors":
        raise UserInputError(f"{path}: LoRA files are read as .safetensors only; this is a pickled "
                             f"{os.path.splitext(path)[1] or 'torch'} file, which could run code when read "
                             "(convert it to .safetensors with a tool you trust)", param="lora_name")
    try:
        source = SafetensorsSource(path)
        return {key: source.get(key) for key in source.shapes()}
    except CheckpointError as exc:
        raise UserInputError(str(exc), param="lora_name") from None


def group_layers(tensors: dict[str, torch.Tensor]) -> tuple[dict[str, LoraLayer], list[str]]:
    """File keys grouped by the module they patch (name as in the file); keys of no known part."""
    layers: dict[str, LoraLayer] = {}
    other: list[str] = []
    for key, tensor in tensors.items():
        for ending, part in _PARTS:
            if key.endswith(ending):
                name = key[: -len(ending)].replace(".processor.", ".")
                for suffix in ("_lora.down.weight", ".lora.down.weight", ".lora_linear_layer.down.weight"):
                    name = name.removesuffix(suffix)  # alphas stored as `<down key>.alpha`
                layer = layers.setdefault(name, LoraLayer())
                layer.keys.append(key)
                if part == "alpha":
                    layer.alpha = float(tensor.float().reshape(-1)[0])
                elif part == "mid":
                    layer.unsupported = True
                else:
                    setattr(layer, part, tensor)
                break
        else:
            other.append(key)
    return layers, other


# ---------------------------------------------------------------- names


def _weighted(module: nn.Module) -> Iterable[str]:
    """Paths of the layers a LoRA can patch: those with a weight matrix or kernel."""
    for name, sub in module.named_modules():
        weight = getattr(sub, "weight", None)
        if name and isinstance(weight, torch.Tensor) and weight.dim() >= 2 and not isinstance(sub, nn.Embedding):
            yield name


def _with_underscores(names: dict[str, str]) -> dict[str, str]:
    out = dict(names)
    out.update({name.replace(".", "_"): path for name, path in names.items()})
    return out


def unet_names(unet: nn.Module) -> dict[str, str]:
    """Every name a LoRA may give a UNet layer (original and diffusers, dotted and with _) -> its path."""
    cfg = getattr(unet, "cfg", None)
    names: dict[str, str] = {}
    nrb: list[int] = []
    if cfg is not None:
        levels = len(cfg.channel_mult)
        nrb = list(cfg.num_res_blocks) if isinstance(cfg.num_res_blocks, (list, tuple)) else [cfg.num_res_blocks] * levels
    for path in _weighted(unet):
        names[path] = path
        if nrb:
            try:
                names[unet_key_to_diffusers(path + ".weight", nrb).removesuffix(".weight")] = path
            except KeyError:
                pass
    return _with_underscores(names)


def text_names(conditioner: nn.Module) -> dict[str, str]:
    """Names a LoRA gives CLIP text layers (`text_model.encoder.layers.0.self_attn.q_proj`) -> path."""
    names: dict[str, str] = {}
    for path in _weighted(conditioner):
        inner = path.removeprefix("transformer.")
        if inner.startswith("text_model."):
            names[inner] = path
            names[inner.removeprefix("text_model.")] = path
    return _with_underscores(names)


_UNET_PREFIXES = ("lora_unet_", "unet.", "model.diffusion_model.", "")
_TEXT_PREFIXES = ("lora_te_", "lora_te1_", "text_encoder.", "te.")


_OLD_TEXT_NAMES = (("self_attn.to_q", "self_attn.q_proj"), ("self_attn.to_k", "self_attn.k_proj"),
                   ("self_attn.to_v", "self_attn.v_proj"), ("self_attn.to_out", "self_attn.out_proj"))


def _target(name: str, prefixes: tuple[str, ...], table: dict[str, str]) -> str | None:
    for old, new in _OLD_TEXT_NAMES:  # diffusers' attention-processor names for CLIP's projections
        if name.endswith(old):
            name = name[: -len(old)] + new
    for prefix in prefixes:
        if name.startswith(prefix):
            rest = name[len(prefix):]
            found = table.get(rest) or (table.get(rest + ".0") if rest.endswith(".to_out") else None)
            if found is not None:
                return found
    return None


def plan_lora(tensors: dict[str, torch.Tensor], unet: nn.Module | None,
              conditioner: nn.Module | None) -> LoraPlan:
    """Match a LoRA file's layers to the UNet's and text encoder's (either may be None: not patched)."""
    layers, other = group_layers(tensors)
    plan = LoraPlan(unused=list(other))
    unet_table = unet_names(unet) if unet is not None else {}
    text_table = text_names(conditioner) if conditioner is not None else {}
    for name, layer in layers.items():
        is_text = name.startswith(_TEXT_PREFIXES)
        if is_text and conditioner is None:
            plan.skipped += layer.keys
            continue
        path = _target(name, _TEXT_PREFIXES, text_table) if is_text else _target(name, _UNET_PREFIXES, unet_table)
        complete = layer.down is not None and layer.up is not None and not layer.unsupported
        if path is None or not complete:
            plan.unused += layer.keys
        else:
            (plan.text if is_text else plan.unet)[path] = layer
    return plan


# ---------------------------------------------------------------- applying


def lora_delta(layer: LoraLayer, shape: torch.Size, device: torch.device | str = "cpu") -> torch.Tensor:
    """(alpha / rank) * up @ down in fp32 on `device`, shaped like the weight it adds to."""
    assert layer.down is not None and layer.up is not None
    down, up = layer.down.to(device, torch.float32), layer.up.to(device, torch.float32)
    rank = down.shape[0]
    if up.shape[1] != rank:
        raise ValueError(f"lora_up has rank {up.shape[1]}, lora_down {rank}")
    scale = (layer.alpha / rank) if layer.alpha is not None else 1.0
    product = up.flatten(1) @ down.flatten(1)  # (out, in * kh * kw)
    if product.numel() != shape.numel():
        raise ValueError(f"gives {list(product.shape)} for a weight of shape {list(shape)}")
    return product.reshape(shape) * scale


def patched_weight(weight: torch.Tensor, layer: LoraLayer, strength: float) -> torch.Tensor:
    """A new tensor W + strength * delta, in W's dtype, device and memory format."""
    delta = lora_delta(layer, weight.shape, weight.device)
    new = weight.detach().float() + strength * delta
    channels_last = weight.dim() == 4 and weight.is_contiguous(memory_format=torch.channels_last) \
        and not weight.is_contiguous()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return new.to(dtype=weight.dtype).contiguous(memory_format=fmt)


def shared_copy(module: nn.Module, memo: dict[int, nn.Module] | None = None) -> nn.Module:
    """A copy of the module tree whose parameters and buffers are the original's tensors (no copy)."""
    memo = {} if memo is None else memo
    if id(module) in memo:
        return memo[id(module)]
    clone = module.__class__.__new__(module.__class__)
    clone.__dict__.update(module.__dict__)  # other attributes shared as they are
    if "_packed" in clone.__dict__:  # a PrepackedConv2d packs its own (possibly patched) weight anew
        clone.__dict__.update(_packed={}, _packed_from=())
    clone._parameters = dict(module._parameters)
    clone._buffers = dict(module._buffers)
    memo[id(module)] = clone
    clone._modules = {name: None if child is None else shared_copy(child, memo)
                      for name, child in module._modules.items()}
    return clone


def apply_layers(module: nn.Module, layers: dict[str, LoraLayer], strength: float, where: str) -> None:
    """Give each listed layer of `module` (a shared copy) a new, patched weight."""
    for path, layer in layers.items():
        sub = module.get_submodule(path)
        weight = sub._parameters["weight"]
        assert weight is not None
        try:
            new = patched_weight(weight, layer, strength)
        except ValueError as exc:
            raise UserInputError(f"{where}: {layer.keys[0]!r} does not fit layer {path!r} ({exc}); "
                                 "is the LoRA made for another model?", param="lora_name") from None
        sub._parameters["weight"] = nn.Parameter(new, requires_grad=False)


def patched_copy(module: nn.Module, layers: dict[str, LoraLayer], strength: float, where: str,
                 inner: str = "") -> nn.Module:
    """`module` itself when nothing changes, else a shared copy with `layers` of `module.<inner>` patched."""
    if not layers or strength == 0:
        return module
    clone = shared_copy(module)
    target = clone.get_submodule(inner) if inner else clone
    with torch.no_grad():
        apply_layers(target, layers, strength, where)
    return clone

