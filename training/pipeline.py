"""The shipped example pipelines as the evaluator and the trainers run them: their settings (sampler,
steps, denoise of resources/graphs/*.json, checked against the files by tests/test_example_graphs.py)
and the engine that runs them (the example graph files with parameters set, an executor, the image out).
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np

IMAGE_SIZE = 128  # the shapes world's pictures: what every built-in model trains on and is measured at

# The shipped super-resolution pipeline (super_resolution.json, default.json): a few steps of a deterministic
# sampler land near the posterior mean, the highest PSNR (15 steps of dpmpp_2m: 0.5 dB lower on 200 scenes), then
# Match Low-Res Input. Figures in the README.
SR_SAMPLER, SR_SCHEDULER, SR_STEPS, SR_MATCH = "euler", "karras", 4, 3
# The shipped text-to-image pipeline (text_to_image.json, default.json): DPM++ 2M SDE at half the fresh noise.
# The deterministic DPM++ 2M left half its misses on one-object prompts as an empty canvas: its early steps
# spread the object over several faint places and the ODE fades them all; fresh noise lets one of them win.
# Figures in the README.
TEXT_SAMPLER, TEXT_SCHEDULER, TEXT_ETA = "dpmpp_2m_sde", "karras", 0.5
# the second pass of resources/graphs/inpainting.json over the pasted result: its denoise and steps (of the
# 25 every base-model metric gets, the first pass takes 15)
REFINE_DENOISE, REFINE_STEPS = 0.5, 10


def inpaint_steps(total: int) -> tuple[int, int]:
    """(first pass, refine pass) steps adding up to `total`: 25 -> (15, 10), as inpainting.json runs."""
    refine = min(REFINE_STEPS, total // 2)
    return max(total - refine, 1), refine


EXAMPLE_GRAPHS = Path(__file__).resolve().parents[1] / "resources" / "graphs"


@functools.cache
def _example_file(name: str) -> Any:
    from engine import graph_file

    return graph_file.load(EXAMPLE_GRAPHS / f"{name}.json")  # read once; example_graph hands out copies


@functools.cache
def _node_registry() -> Any:
    from nodes import build_registry

    return build_registry()


def example_graph(name: str, model: str, params: dict[str, Any], checkpoint_node: str = "ckpt") -> Any:
    """A copy of resources/graphs/NAME.json on `model` (its `checkpoint_node`), with `params`
    ({"node.param": value}) set through `main.py run --set`'s own checks (an unknown node or param is a
    KilnError): the evaluator measures the shipped example graphs themselves, not copies."""
    from kiln.cli import apply_overrides, resolve_override

    graph = _example_file(name)
    values = {f"{checkpoint_node}.checkpoint": str(Path(model).resolve()) if Path(model).exists() else model,
              **params}
    overrides = []
    for key, value in values.items():
        node, param = key.split(".")
        overrides.append(resolve_override(node, param, graph, _node_registry(), value))
    return apply_overrides(graph, overrides)


def run_image(executor: Any, graph: Any, target: str = "decode") -> np.ndarray:
    """Run a graph; the target's IMAGE as uint8 (H, W, 3); a failed node raises its KilnError."""
    from nodes.image_io import to_uint8_hwc

    result = executor.run(graph, targets=[target])
    if not result.ok:
        raise result.error
    return to_uint8_hwc(result.outputs[target]["image"].pixels)[0]


def engine_executor() -> Any:
    """An Executor over the built-in nodes with a memory-only result cache."""
    from engine.cache import ResultCache
    from engine.executor import Executor
    from engine.spec import EngineSettings
    from nodes import build_registry

    settings = EngineSettings(device="cpu", precision="fp32")
    return Executor(build_registry(), settings, cache=ResultCache.from_settings(settings, disk=False))
