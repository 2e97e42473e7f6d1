"""The diffusion trainers' model side: ConcatTrainer (eps- or v-prediction training of a UNet with concat and
optional cross-attention conditioning, EMA weights under the single-file keys), its config helpers and the
weight utilities (EMA update, grown input layers, moving batches between devices).
"""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import fields, is_dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from engine.errors import KilnError
from engine.models.configs import DiffusionConfig, UNetConfig
from engine.models.diffusion import LatentDiffusionModel
from engine.models.keymaps import COND_PREFIX, UNET_PREFIX
from engine.models.unet import UNetModel
from training.loop import log

LATENT_CHANNELS = 4  # the base autoencoder's latents, which the base and semantic models denoise


# ---------------------------------------------------------------- config


def dataclass_from(cls: type, data: dict[str, Any], nested: dict[str, type] | None = None) -> Any:
    """A (nested) config dataclass from a plain dict; lists become tuples, unknown keys are an error.

    `nested` names the fields holding config dataclasses (default: unet and diffusion).
    """
    names = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ValueError(f"unknown {cls.__name__} field {unknown[0]!r}")
    nested = nested or {"unet": UNetConfig, "diffusion": DiffusionConfig}
    values = {}
    for key, value in data.items():
        if key in nested and isinstance(value, dict):
            value = dataclass_from(nested[key], value)
        values[key] = tuple(value) if isinstance(value, list) else value
    return cls(**values)


def with_overrides(unet: UNetConfig, text: str | None) -> UNetConfig:
    """The UNet config with the fields of a JSON object (the --unet flag) replaced."""
    if not text:
        return unet
    try:
        changes = json.loads(text)
        merged = dataclass_from(UNetConfig, {**unet.to_dict(), **changes})
    except (ValueError, TypeError) as exc:
        raise KilnError(f"--unet: {exc}") from None
    return merged


# ---------------------------------------------------------------- the shared trainer


def training_target(prediction: str, x0: torch.Tensor, noise: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """What the UNet learns to output: eps, or v = sqrt(a) eps - sqrt(1 - a) x0 (a = alphas_cumprod[t]).

    v keeps the loss meaningful at the noisiest steps, where an eps model must be very precise for its
    x0 estimate (x0 = (x_t - sqrt(1 - a) eps) / sqrt(a)) to be of any use; short runs need that."""
    if prediction == "eps":
        return noise
    return a.sqrt() * noise - (1 - a).sqrt() * x0


class ConcatTrainer:
    """eps- or v-prediction training (the diffusion config's `prediction`) of a UNet with concat conditioning.

    `cond_stage` is an optional conditioner module trained with the UNet; its
    weights are exported under `cond_stage_model.`. Subclasses turn the batch's
    conditioning input into the concat channels in `concat`.
    """

    def __init__(self, unet_cfg: UNetConfig, diffusion_cfg: DiffusionConfig, cond_stage: nn.Module | None,
                 lr: float, ema_decay: float, seed: int, device: str = "cpu", position_lr_scale: float = 1.0):
        torch.manual_seed(seed)
        self.device = torch.device(device)
        # on a GPU the forward pass runs in bfloat16 (about twice the speed; the loss stays float32)
        self.autocast: torch.dtype | None = torch.bfloat16 if self.device.type == "cuda" else None
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        self.unet = UNetModel(unet_cfg)
        self.cond_stage = cond_stage
        self.model = LatentDiffusionModel(self.unet, diffusion_cfg).to(self.device)
        if cond_stage is not None:
            cond_stage.to(self.device)
        self.ema_decay = ema_decay
        self.opt = torch.optim.AdamW(self._param_groups(lr, position_lr_scale), lr=lr, weight_decay=0.0)
        self.ema = {k: v.detach().clone() for k, v in self.weights().items()}
        self.step = 0
        self.forward_unet: Callable[..., torch.Tensor] = self.unet  # compile_unet() swaps in a compiled one

    def compile_unet(self, backend: str = "inductor") -> None:
        """Run the UNet's training forward and backward through torch.compile (fused kernels: on a GPU far
        fewer launches per step). The compiled module shares the UNet's parameters, so saved state, EMA and
        exports are unchanged; the first step pays the compilation (on this 2-core CPU 4 minutes cold,
        10 s from inductor's cache; steady speed there within the noise of eager)."""
        self.forward_unet = torch.compile(self.unet, backend=backend)
        log("the UNet is compiled with torch.compile (the first step compiles it)")

    def _parameters(self) -> list[nn.Parameter]:
        modules = [self.unet] + ([self.cond_stage] if self.cond_stage is not None else [])
        return [p for m in modules for p in m.parameters()]

    def _param_groups(self, lr: float, position_lr_scale: float) -> list[dict[str, Any]]:
        """One group, or two when the UNet's position projections learn at their own rate: added to a
        trained model they start at zero, and at the model's rate they would take thousands of steps to matter."""
        position = [p for name, p in self.unet.named_parameters() if ".pos_proj." in name]
        if position_lr_scale == 1.0 or not position:
            return [{"params": self._parameters()}]
        chosen = {id(p) for p in position}
        rest = [p for p in self._parameters() if id(p) not in chosen]
        return [{"params": rest}, {"params": position, "lr": lr * position_lr_scale}]

    def weights(self) -> dict[str, torch.Tensor]:
        """Live weights under their original single-file keys."""
        out = {UNET_PREFIX + k: v for k, v in self.unet.state_dict().items()}
        if self.cond_stage is not None:
            out.update({COND_PREFIX + k: v for k, v in self.cond_stage.state_dict().items()})
        return out

    def concat(self, cond_input: Any) -> torch.Tensor:
        return cond_input

    def context(self, cond_input: Any) -> torch.Tensor | None:
        """Cross-attention context (B, T, D) of the batch's conditioning; none for concat-only models."""
        return None

    def train_step(self, x0: torch.Tensor, cond_input: Any, gen: torch.Generator) -> float:
        """One AdamW step on the eps or v loss; x0 (B, C, h, w) scaled latents.

        Noise and timesteps are drawn on the CPU from `gen` on every device, so a run
        resumed on another device goes on with the same draws."""
        t = torch.randint(0, self.model.config.timesteps, (x0.shape[0],), generator=gen).to(self.device)
        noise = torch.randn(x0.shape, generator=gen).to(self.device)
        x0, cond_input = to_device(x0, self.device), to_device(cond_input, self.device)
        a = self.model.alphas_cumprod[t].float().view(-1, 1, 1, 1)
        x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise
        with torch.autocast(self.device.type, dtype=self.autocast or torch.bfloat16, enabled=self.autocast is not None):
            pred = self.forward_unet(torch.cat([x_t, self.concat(cond_input)], dim=1), t,
                                     context=self.context(cond_input))
        loss = F.mse_loss(pred.float(), training_target(self.model.prediction, x0, noise, a))
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self._parameters(), 1.0)
        self.opt.step()
        self._update_ema()
        self.step += 1
        return loss.item()

    def _update_ema(self) -> None:
        update_ema(self.ema, self.weights(), self.step, self.ema_decay)

    def state(self) -> dict[str, Any]:
        """Everything to resume, on the CPU (a run moves between machines)."""
        return {"weights": {k: v.detach().cpu().clone() for k, v in self.weights().items()},
                "ema": {k: v.cpu() for k, v in self.ema.items()},
                "opt": to_device(self.opt.state_dict(), torch.device("cpu")), "step": self.step}

    def load_weights(self, weights: dict[str, torch.Tensor], strict: bool = True) -> list[str]:
        """Live weights from single-file keys (the EMA restarts from them).

        strict=False lets this model have tensors `weights` lacks (a part added to the
        architecture, which keeps its initial values); returns their keys."""
        unet_weights = {k[len(UNET_PREFIX):]: v for k, v in weights.items() if k.startswith(UNET_PREFIX)}
        if not strict:
            unet_weights = grown_inputs(unet_weights, self.unet.state_dict())
        missing = self.unet.load_state_dict(unet_weights, strict=strict).missing_keys
        if self.cond_stage is not None:
            self.cond_stage.load_state_dict({k[len(COND_PREFIX):]: v for k, v in weights.items()
                                             if k.startswith(COND_PREFIX)})
        if not strict and (unexpected := sorted(set(weights) - set(self.weights()))):
            raise KilnError(f"the model file has tensors this architecture lacks: {', '.join(unexpected[:4])}")
        self.ema = {k: v.detach().clone() for k, v in self.weights().items()}
        return [UNET_PREFIX + k for k in missing]

    def start_from(self, weights: dict[str, torch.Tensor], step: int, source: str) -> None:
        """A new run going on from an exported model's weights and step count (`--init-from`).

        Tensors the architecture adds (say `--unet '{"position_features": 6}'`) start at their initial values."""
        added = self.load_weights(weights, strict=False)
        self.step = step
        log(f"starting from {source} (its step {step}; fresh optimizer, EMA from its weights)")
        if added:
            log(f"{len(added)} tensors are new to this architecture and start from their initial values")

    def load(self, state: dict[str, Any]) -> None:
        self.load_weights(state["weights"])
        self.ema = {k: v.to(self.device) for k, v in state["ema"].items()}
        self.opt.load_state_dict(state["opt"])  # moves its tensors to the parameters' device
        self.step = int(state["step"])


@torch.no_grad()
def update_ema(ema: dict[str, torch.Tensor], live: dict[str, torch.Tensor], step: int, decay: float) -> None:
    """Move `ema` towards the `live` weights; the decay warms up ((1 + step) / (10 + step)) so that a short
    run's EMA is not stuck at its start. Integer tensors are copied."""
    decay = min(decay, (1 + step) / (10 + step))
    floats: tuple[list[torch.Tensor], list[torch.Tensor]] = ([], [])
    for k, v in live.items():
        if v.dtype.is_floating_point:
            floats[0].append(ema[k])
            floats[1].append(v.detach())
        else:
            ema[k].copy_(v)
    torch._foreach_lerp_(*floats, 1 - decay)  # one kernel per group of tensors on a GPU, not two per tensor


def grown_inputs(weights: dict[str, torch.Tensor], model: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Weights whose input dimension (dim 1) the model has grown, padded with zeros there.

    New input channels (say layout regions added to the concat) then start with no effect."""
    out = dict(weights)
    for key, value in weights.items():
        target = model.get(key)
        if target is None or not _has_more_inputs(target.shape, value.shape):
            continue
        pad = value.new_zeros(value.shape[0], target.shape[1] - value.shape[1], *value.shape[2:])
        out[key] = torch.cat([value, pad], dim=1)
        log(f"{key}: {value.shape[1]} -> {target.shape[1]} input channels, the new ones zero-weighted")
    return out


def _has_more_inputs(grown: torch.Size, old: torch.Size) -> bool:
    """The same shape but for a larger dim 1 (a layer's input channels)."""
    return (len(grown) == len(old) >= 2 and grown[1] > old[1]
            and grown[:1] == old[:1] and grown[2:] == old[2:])


def to_device(value: Any, device: torch.device) -> Any:
    """Tensors inside tensors, dataclasses, lists, tuples and dicts, moved to `device`."""
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if is_dataclass(value) and not isinstance(value, type):
        return replace(value, **{f.name: to_device(getattr(value, f.name), device) for f in fields(value)})
    if isinstance(value, (list, tuple)):
        return type(value)(to_device(v, device) for v in value)
    if isinstance(value, dict):
        return {k: to_device(v, device) for k, v in value.items()}
    return value
