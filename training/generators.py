"""The shipped example graphs as generators the metrics call: generate(input, seed) -> uint8 picture,
run through the real nodes with the model loaded once. One per model: the base model's text-to-image,
layout-to-image and inpainting, semantic synthesis, and 4x super-resolution.
"""
from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from engine.drawing import encode_png_b64, write_png
from training.pipeline import (
    IMAGE_SIZE,
    REFINE_DENOISE,
    REFINE_STEPS,
    SR_SAMPLER,
    SR_SCHEDULER,
    SR_STEPS,
    TEXT_ETA,
    TEXT_SAMPLER,
    TEXT_SCHEDULER,
    engine_executor,
    example_graph,
    run_image,
)
from training.shapes_world import NUM_CLASSES, make_scene, render

# ---------------------------------------------------------------- the base model


def _sampler_params(node: str, seed: int | None, steps: int, cfg: float, sampler: str, scheduler: str,
                    eta: float = 1.0) -> dict[str, Any]:
    """The sampler's settings as overrides; seed None leaves its seed to what feeds it."""
    values = {"seed": seed, "steps": steps, "cfg": cfg, "sampler": sampler, "scheduler": scheduler, "eta": eta}
    return {f"{node}.{name}": value for name, value in values.items() if value is not None}


def text_graph(model: str, prompt: str, seed: int, steps: int = 25, cfg: float = 3.0, sampler: str = TEXT_SAMPLER,
               scheduler: str = TEXT_SCHEDULER, negative: str = "", size: int = IMAGE_SIZE, eta: float = TEXT_ETA,
               plan: bool = True):
    """text_to_image.json (TextEncode prompt -> Plan Layout, and the negative -> Sampler -> decode) with this
    prompt and sampling; the seed goes to the graph's Seed node `seed`, which drives both the planner and the
    sampler, as in the example. plan False disables the Plan Layout node (the prompt alone conditions). The
    defaults are the example's own."""
    graph = example_graph("text_to_image", model, {
        "prompt.text": prompt, "negative.text": negative, "latent.width": size, "latent.height": size,
        "latent.batch_size": 1, "seed.value": seed,
        **_sampler_params("sampler", None, steps, cfg, sampler, scheduler, eta)})
    graph.nodes["plan"].disabled = not plan
    return graph


def layout_graph(model: str, boxes: list[dict], seed: int, steps: int = 25, cfg: float = 3.0,
                 sampler: str = "dpmpp_2m", scheduler: str = "karras", size: int = IMAGE_SIZE):
    """layout_to_image.json (LayoutEditor -> LayoutEncode, negative the empty prompt -> Sampler -> decode)."""
    return example_graph("layout_to_image", model, {
        "layout.boxes": boxes, "latent.width": size, "latent.height": size, "latent.batch_size": 1,
        **_sampler_params("sampler", seed, steps, cfg, sampler, scheduler)})


def regional_graph(model: str, background: str, boxes: list[dict], seed: int, steps: int = 25, cfg: float = 3.0,
                   sampler: str = TEXT_SAMPLER, scheduler: str = TEXT_SCHEDULER, eta: float = TEXT_ETA,
                   size: int = IMAGE_SIZE, mode: str = "attention"):
    """regional_prompts.json (the global prompt, Layout Editor boxes as region prompts -> Regional Prompts ->
    Sampler -> decode) with these prompts and sampling; the defaults are the example's own."""
    return example_graph("regional_prompts", model, {
        "prompt.text": background, "regions.boxes": boxes, "regional.mode": mode, "latent.width": size,
        "latent.height": size, "latent.batch_size": 1,
        **_sampler_params("sampler", seed, steps, cfg, sampler, scheduler, eta)})


def inpaint_graph(model: str, image_path: str, mask_b64: str, seed: int, steps: int = 25, prompt: str = "",
                  sampler: str = "dpmpp_2m", scheduler: str = "karras", feather: int = 0, cfg: float = 1.0,
                  refine: float = 0.0, refine_steps: int = REFINE_STEPS) -> tuple[Any, str]:
    """inpainting.json with this picture, mask, prompt and sampling, and the node that holds its result:
    `paste` after the second pass (the pasted result encoded, noised to `refine` and sampled again for
    `refine_steps` steps with the same inpainting conditioning, then pasted into the picture: with the whole
    object in its starting latent, the model lines the new half up with the old), or with refine 0 `draft`,
    the first pass pasted. The negative is the empty prompt (cfg 1: no guidance)."""
    params = {"image.path": image_path, "mask.mask": mask_b64, "prompt.text": prompt, "negative.text": "",
              "draft.feather": feather, "paste.feather": feather,
              **_sampler_params("sampler", seed, steps, cfg, sampler, scheduler)}
    if refine > 0:
        params.update(_sampler_params("refine", seed, refine_steps, cfg, sampler, scheduler))
        params["refine.denoise"] = refine
    return example_graph("inpainting", model, params), "paste" if refine > 0 else "draft"


def text_generator(model: str, steps: int = 25, cfg: float = 3.0, sampler: str = TEXT_SAMPLER,
                   scheduler: str = TEXT_SCHEDULER, executor: Any = None, eta: float = TEXT_ETA, plan: bool = True
                   ) -> Callable[[str, int], np.ndarray]:
    """generate(prompt, seed) -> uint8 (128, 128, 3), through the real nodes (model loaded once); by default
    as text_to_image.json runs: its sampler, and its layout planner (plan False: the prompt alone)."""
    executor = executor or engine_executor()
    return lambda prompt, seed: run_image(executor, text_graph(model, prompt, seed, steps, cfg, sampler, scheduler,
                                                               eta=eta, plan=plan))


def layout_generator(model: str, steps: int = 25, cfg: float = 3.0, sampler: str = "dpmpp_2m",
                     scheduler: str = "karras", executor: Any = None) -> Callable[[list[dict], int], np.ndarray]:
    """generate(boxes, seed) -> uint8 (128, 128, 3), through the real nodes."""
    executor = executor or engine_executor()
    return lambda boxes, seed: run_image(executor, layout_graph(model, boxes, seed, steps, cfg, sampler, scheduler))


def regional_generator(model: str, steps: int = 25, cfg: float = 3.0, sampler: str = TEXT_SAMPLER,
                       scheduler: str = TEXT_SCHEDULER, eta: float = TEXT_ETA, mode: str = "attention",
                       executor: Any = None) -> Callable[[str, list[dict], int], np.ndarray]:
    """generate(global prompt, boxes whose labels are prompts, seed) -> uint8 (128, 128, 3), through
    regional_prompts.json's real nodes."""
    executor = executor or engine_executor()
    return lambda background, boxes, seed: run_image(executor, regional_graph(
        model, background, boxes, seed, steps, cfg, sampler, scheduler, eta, mode=mode))


def inpaint_generator(model: str, steps: int = 25, sampler: str = "dpmpp_2m", scheduler: str = "karras",
                      executor: Any = None, workdir: str | None = None, cfg: float = 3.0,
                      refine: float = REFINE_DENOISE, refine_steps: int = REFINE_STEPS
                      ) -> Callable[[np.ndarray, np.ndarray, int, str], np.ndarray]:
    """generate(masked image uint8 (S, S, 3), mask (S, S) 1 = hole, seed, prompt) -> the pasted result, uint8;
    guided by `cfg` against the empty prompt when there is a prompt; refine > 0: with the example graph's
    second pass (inpaint_graph), 0: its first pass alone."""
    folder = Path(workdir or tempfile.mkdtemp(prefix="kiln-inpaint-"))
    executor, calls = executor or engine_executor(), [0]

    def generate(image: np.ndarray, mask: np.ndarray, seed: int, prompt: str = "") -> np.ndarray:
        calls[0] += 1
        path = folder / f"image-{calls[0]}.png"
        write_png(str(path), np.ascontiguousarray(image, dtype=np.uint8))
        mask_b64 = encode_png_b64((np.asarray(mask) > 0.5).astype(np.uint8) * 255)
        graph, result = inpaint_graph(model, str(path), mask_b64, seed, steps, prompt, sampler, scheduler,
                                      cfg=cfg if prompt else 1.0, refine=refine, refine_steps=refine_steps)
        return run_image(executor, graph, target=result)

    return generate


# ---------------------------------------------------------------- semantic synthesis


def semantic_graph(model: str, labels_b64: str, seed: int, steps: int, cfg: float, sampler: str, scheduler: str):
    """semantic_to_image.json (SemanticPainter -> SemanticEncode, negative zeroed -> Sampler -> decode) with
    this map and sampling."""
    return example_graph("semantic_to_image", model, {
        "semantic.labels": labels_b64, "semantic.num_classes": NUM_CLASSES, "latent.width": IMAGE_SIZE,
        "latent.height": IMAGE_SIZE, "latent.batch_size": 1, "sampler.seed": seed, "sampler.steps": steps,
        "sampler.cfg": cfg, "sampler.sampler": sampler, "sampler.scheduler": scheduler})


def semantic_generator(model: str, steps: int = 25, cfg: float = 2.0, sampler: str = "dpmpp_2m",
                       scheduler: str = "karras") -> Callable[[np.ndarray, int], np.ndarray]:
    """generate(labels (S, S) uint8, seed) -> uint8 (S, S, 3), through the real nodes (model loaded once)."""
    executor = engine_executor()

    def generate(labels: np.ndarray, seed: int) -> np.ndarray:
        graph = semantic_graph(model, encode_png_b64(labels.astype(np.uint8)), seed, steps, cfg, sampler, scheduler)
        return run_image(executor, graph)

    return generate


# ---------------------------------------------------------------- 4x super-resolution


def sr_graph(model: str, image_path: str, seed: int, steps: int, sampler: str, scheduler: str, scale: int = 4,
             match_iterations: int = 0) -> tuple[Any, str]:
    """super_resolution.json (LoadImage -> SuperResolutionConditioning + EmptyLatentLike -> Sampler -> decode
    -> MatchLowRes) with this picture and sampling, and the node that holds the result: `sr_match` with
    match_iterations > 0, else `sr_decode`, the model's own output."""
    params = {"image.path": image_path, "sr_latent.scale": scale, "sampler.seed": seed, "sampler.steps": steps,
              "sampler.cfg": 1.0, "sampler.sampler": sampler, "sampler.scheduler": scheduler}
    if match_iterations:
        params["sr_match.iterations"] = match_iterations
    graph = example_graph("super_resolution", model, params, checkpoint_node="sr_ckpt")
    return graph, "sr_match" if match_iterations else "sr_decode"


class SrGenerator:
    """generate(low uint8 (s, s, 3), seed) -> uint8 (4s, 4s, 3) through the real nodes (model loaded once):
    the model's decoded output, then Match Low-Res Input when match_iterations > 0.

    `model_only(low, seed)` right after gives the same sample before matching (from the engine's cache)."""

    def __init__(self, model: str, steps: int = SR_STEPS, sampler: str = SR_SAMPLER, scheduler: str = SR_SCHEDULER,
                 workdir: str | None = None, match_iterations: int = 0):
        self.folder = Path(workdir or tempfile.mkdtemp(prefix="kiln-sr-"))
        self.executor = engine_executor()
        self.model, self.steps, self.sampler, self.scheduler = model, steps, sampler, scheduler
        self.match_iterations = match_iterations
        self._last: tuple[np.ndarray, int, Any] | None = None  # (low, seed, graph) of the latest call

    def _graph(self, low: np.ndarray, seed: int) -> Any:
        """The graph for this input, the low picture written once (model_only reuses the latest call's)."""
        if self._last is not None and self._last[0] is low and self._last[1] == seed:
            return self._last[2]
        path = self.folder / f"low-{seed}-{low.shape[0]}.png"
        write_png(str(path), np.ascontiguousarray(low, dtype=np.uint8))
        graph, _ = sr_graph(self.model, str(path), seed, self.steps, self.sampler, self.scheduler,
                            match_iterations=self.match_iterations)
        self._last = (low, seed, graph)
        return graph

    def __call__(self, low: np.ndarray, seed: int) -> np.ndarray:
        return run_image(self.executor, self._graph(low, seed), "sr_match" if self.match_iterations else "sr_decode")

    def model_only(self, low: np.ndarray, seed: int) -> np.ndarray:
        return run_image(self.executor, self._graph(low, seed), "sr_decode")


def sr_generator(model: str, steps: int = SR_STEPS, sampler: str = SR_SAMPLER, scheduler: str = SR_SCHEDULER,
                 workdir: str | None = None, match_iterations: int = 0) -> SrGenerator:
    return SrGenerator(model, steps, sampler, scheduler, workdir, match_iterations)


def time_upscale(generate: SrGenerator, size: int = 128, seed: int = 1_000_000) -> float:
    """Seconds for one size -> 4*size upscale of a held-out render through `generate`'s pipeline, model loaded."""
    low = render(make_scene(seed), size)
    generate(low[: size // 4, : size // 4], seed)  # loads the model if this generator has not yet
    started = time.perf_counter()
    generate(low, seed)
    return time.perf_counter() - started
