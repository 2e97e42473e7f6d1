"""The SamplerAdvanced node: ComfyUI's KSamplerAdvanced, one schedule run in parts by several samplers.

The sigmas are those of `steps` steps; this node runs steps start_at_step..end_at_step of them. Two
nodes with the same seed, steps, sampler and scheduler, the first ending at step k with its leftover
noise, the second starting at k without adding noise, give the picture of one full run (exactly for
one-step samplers; multistep samplers restart their history at the split, as in ComfyUI).
The rest is the Sampler node (nodes.sampler): inputs, checks, previews, cancel.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from engine.spec import ComputeContext, NodeSpec, Param, ParamType
from nodes.sampler import SAMPLER, _sample, sampling_options

LAST_STEP = 10000  # "to the end" (ComfyUI's default end_at_step)


def _sample_part(ctx: ComputeContext, inputs: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    options = sampling_options({**params, "denoise": 1.0}, add_noise=bool(params["add_noise"]),
                               start_step=params["start_at_step"], end_step=params["end_at_step"],
                               leftover_noise=bool(params["return_with_leftover_noise"]))
    return _sample(ctx, inputs, params, options)


def _sampler_param(name: str) -> Param:
    return next(p for p in SAMPLER.params if p.name == name)


SAMPLER_ADVANCED = NodeSpec(
    type="SamplerAdvanced", title="Sampler (Advanced)", category="sampling",
    aliases=("KSamplerAdvanced", "KSampler (Advanced)", "refiner", "split steps"),
    help="Runs part of a schedule: steps start_at_step..end_at_step of `steps`. Chain two to split one "
         "run (the first keeps its leftover noise, the second adds none), e.g. to change the model or the "
         "prompt partway.",
    compute=_sample_part,
    inputs=SAMPLER.inputs,
    outputs=SAMPLER.outputs,
    params=(
        Param("add_noise", ParamType.BOOL, True, "add the seed's noise to the latent first (off: continue "
              "from a latent that still has its noise)", inline=True),
        *(_sampler_param(name) for name in ("seed", "steps", "cfg", "sampler", "scheduler")),
        Param("start_at_step", ParamType.INT, 0, "the first step to run", min=0, max=LAST_STEP, inline=True),
        Param("end_at_step", ParamType.INT, LAST_STEP, "the step to stop at (past the last: run to the end)",
              min=0, max=LAST_STEP, inline=True),
        Param("return_with_leftover_noise", ParamType.BOOL, False, "stopping early: return the latent with "
              "its remaining noise (for another sampler to finish), not denoised", inline=True),
        *(_sampler_param(name) for name in ("convention", "eta", "ddim_eta", "preview_decode_every")),
    ),
)

SPECS = (SAMPLER_ADVANCED,)
