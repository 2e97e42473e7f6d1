"""Measure Kiln's models against the exact ground truth of the shapes world (held-out seeds).

    python -m training.evaluate autoencoder --model resources/models/kiln-shapes-ae.safetensors --n 500
    python -m training.evaluate oracle --n 50 --json
    python -m training.evaluate semantic --model resources/models/kiln-shapes-semantic.safetensors --n 200
    python -m training.evaluate super-resolution --model resources/models/kiln-shapes-sr.safetensors --n 200 --time-512
    python -m training.evaluate text-to-image --model resources/models/kiln-shapes-base.safetensors --n 200
    python -m training.evaluate layout-to-image --model resources/models/kiln-shapes-base.safetensors --n 200
    python -m training.evaluate inpainting --model resources/models/kiln-shapes-base.safetensors --n 200

One function per metric, each taking a `generate` callable that returns uint8
(S, S, 3) images, so that graphs run through the engine plug in unchanged:

- evaluate_autoencoder(reconstruct)          PSNR of encode -> decode, and whether the scene survives
- evaluate_text_to_image(generate(prompt, seed))        caption match: colour, shape, size, position, count
- evaluate_one_object(generate(prompt, seed))           short prompts like "a red circle": that one object
- evaluate_layout_to_image(generate(layout, seed))      mean box IoU and label accuracy
- evaluate_inpainting(generate(image, mask, seed, prompt)) PSNR in the hole and outside it, the object asked for
- evaluate_semantic(generate(labels, seed))             label-map accuracy and mIoU of the result
- evaluate_super_resolution(generate(low, seed))        PSNR against the 128 px render (and bicubic's), scene kept

`oracle` runs every metric with a perfect generator (the renderer itself),
which checks the measuring chain: every score must come out perfect.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from engine.errors import KilnError
from engine.sampling.names import SAMPLER_NAMES, SCHEDULER_NAMES
from training.analyser import (
    analyse,
    box_iou,
    label_map_accuracy,
    label_map_miou,
    layout_iou,
    layout_ious,
    match_caption,
    psnr,
    scene_matches,
)
from training.data import held_out_seeds, render_batch
from training.shapes_world import (
    COLOUR_NAMES,
    SHAPES,
    Scene,
    SceneObject,
    caption,
    layout,
    make_scene,
    object_phrase,
    render,
    render_with_labels,
)

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
PSNR_CAP = 100.0  # identical images: count as 100 dB so means stay finite

Reconstruct = Callable[[np.ndarray], np.ndarray]  # uint8 (N, S, S, 3) -> uint8 (N, S, S, 3)


def inpaint_steps(total: int) -> tuple[int, int]:
    """(first pass, refine pass) steps adding up to `total`: 25 -> (15, 10), as inpainting.json runs."""
    refine = min(REFINE_STEPS, total // 2)
    return max(total - refine, 1), refine


def _summary(values: Sequence[float]) -> dict[str, float]:
    array = np.asarray(values, dtype=np.float64)
    return {"mean": float(array.mean()), "median": float(np.median(array)), "min": float(array.min())}


def _rate(name: str, hits: Sequence[bool], seeds: Sequence[int]) -> dict[str, Any]:
    """`name`: the fraction of hits; `name`_stderr: its binomial standard error (200 seeds at 95 %: 0.015),
    to tell a real gain from noise; `name`_failed_seeds: the seeds that missed, to compare runs seed by seed."""
    n = len(hits)
    rate = sum(hits) / n
    return {name: rate, f"{name}_stderr": float(np.sqrt(rate * (1 - rate) / n)),
            f"{name}_failed_seeds": [seed for seed, hit in zip(seeds, hits, strict=True) if not hit]}


def _capped_psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    return min(psnr(a, b, mask), PSNR_CAP)


def _check_output(image: np.ndarray, size: int, what: str) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.shape != (size, size, 3):
        raise KilnError(f"{what}: the generator returned {image.dtype} {tuple(image.shape)}, "
                        f"expected uint8 ({size}, {size}, 3)")
    return image


# ---------------------------------------------------------------- metrics


def evaluate_autoencoder(reconstruct: Reconstruct, seeds: Sequence[int], size: int = 128, batch: int = 50
                         ) -> dict:
    """PSNR (dB, peak 255) of reconstructions of held-out renders, and the share whose scene reads back."""
    values, exact = [], 0
    for start in range(0, len(seeds), batch):
        chunk = list(seeds[start : start + batch])
        images = render_batch(chunk, size)
        recs = np.asarray(reconstruct(images))
        if recs.shape != images.shape or recs.dtype != np.uint8:
            raise KilnError(f"autoencoder: reconstructions are {recs.dtype} {recs.shape}, "
                            f"expected uint8 {images.shape}")
        for seed, image, rec in zip(chunk, images, recs):
            values.append(_capped_psnr(image, rec))
            exact += scene_matches(analyse(rec), make_scene(seed))
    stats = _summary(values)
    return {"metric": "autoencoder", "n": len(values), "size": size, "psnr_mean": stats["mean"],
            "psnr_median": stats["median"], "psnr_min": stats["min"], "scene_exact": exact / len(values)}


def evaluate_text_to_image(generate: Callable[[str, int], np.ndarray], seeds: Sequence[int],
                           size: int = 128) -> dict:
    """Prompt with each held-out scene's full caption; score what the analyser sees against it."""
    scores: dict[str, list[float]] = {k: [] for k in ("colour", "shape", "size", "position", "object")}
    count = background = 0
    scene: list[bool] = []
    for seed in seeds:
        scene_truth = make_scene(seed)
        image = _check_output(generate(caption(scene_truth), seed), size, "text-to-image")
        match = match_caption(analyse(image), scene_truth)
        for key, values in scores.items():
            values.append(match.accuracy(key))
        count += match.count_ok
        background += bool(match.background_ok)
        scene.append(bool(match.scene_ok))
    n = len(seeds)
    result = {"metric": "text_to_image", "n": n, **_rate("scene_accuracy", scene, seeds),
              "count_accuracy": count / n, "background_accuracy": background / n}
    result.update({f"{k}_accuracy": float(np.mean(v)) for k, v in scores.items()})
    return result


def one_object_prompt(seed: int) -> str:
    """'a {colour} {shape}', drawn from the seed so that every pair comes up equally often."""
    rng = np.random.default_rng([seed, 11])
    return f"a {COLOUR_NAMES[int(rng.integers(len(COLOUR_NAMES)))]} {SHAPES[int(rng.integers(len(SHAPES)))]}"


def evaluate_one_object(generate: Callable[[str, int], np.ndarray], seeds: Sequence[int], size: int = 128) -> dict:
    """Prompts like 'a red circle': right when the analyser sees exactly one object, of that colour and shape."""
    exact: list[bool] = []
    present = 0
    for seed in seeds:
        prompt = one_object_prompt(seed)
        objects = analyse(_check_output(generate(prompt, seed), size, "text-to-image")).objects
        labels = [o.label for o in objects]
        wanted = prompt.removeprefix("a ")
        exact.append(labels == [wanted])
        present += wanted in labels
    n = len(seeds)
    return {"metric": "one_object_text_to_image", "n": n, **_rate("accuracy", exact, seeds),
            "object_present": present / n}


def evaluate_layout_to_image(generate: Callable[[list[dict], int], np.ndarray], seeds: Sequence[int],
                             size: int = 128) -> dict:
    """Request each held-out scene's layout; mean IoU of requested vs detected boxes of the same label."""
    ious, placed, counts = [], [], 0
    for seed in seeds:
        boxes = layout(make_scene(seed))
        result = analyse(_check_output(generate(boxes, seed), size, "layout-to-image"))
        ious.append(layout_iou(result, boxes))
        placed.append(float(np.mean(layout_ious(result, boxes, same_label=False))))
        counts += len(result.objects) == len(boxes)
    return {"metric": "layout_to_image", "n": len(seeds), "mean_iou": float(np.mean(ious)),
            "mean_iou_any_label": float(np.mean(placed)), "count_accuracy": counts / len(seeds)}


def hidden_object(scene: Scene, seed: int) -> tuple[SceneObject, tuple[float, float, float, float]]:
    """The object whose half the inpainting metric hides, and that half (x0, y0, x1, y1), chosen by seed."""
    rng = np.random.default_rng([seed, 7])
    obj = scene.objects[int(rng.integers(len(scene.objects)))]
    x0, y0, x1, y1 = obj.box
    xm, ym = (x0 + x1) / 2, (y0 + y1) / 2
    halves = [(x0, y0, xm, y1), (xm, y0, x1, y1), (x0, y0, x1, ym), (x0, ym, x1, y1)]
    return obj, halves[int(rng.integers(4))]


def inpainting_mask(scene: Scene, seed: int, size: int = 128) -> np.ndarray:
    """(S, S) float32, 1 = hole: one half (left/right/top/bottom, by seed) of one object's box, grown 2 px."""
    x0, y0, x1, y1 = hidden_object(scene, seed)[1]
    grow = 2 / size
    mask = np.zeros((size, size), dtype=np.float32)
    r0, r1 = max(int((y0 - grow) * size), 0), min(int(np.ceil((y1 + grow) * size)), size)
    c0, c1 = max(int((x0 - grow) * size), 0), min(int(np.ceil((x1 + grow) * size)), size)
    mask[r0:r1, c0:c1] = 1.0
    return mask


def evaluate_inpainting(generate: Callable[[np.ndarray, np.ndarray, int, str], np.ndarray], seeds: Sequence[int],
                        size: int = 128, ask: bool = True) -> dict:
    """Hide half of one object and ask for it: the prompt is the object's phrase ("a large yellow triangle at
    the top left"), or empty with ask=False, when only the visible half says what belongs in the hole.

    object_accuracy: the hidden object is whole again, seen with its colour and shape where it was: box IoU >= 0.7
    (the visible half alone reaches at most 0.60 on 200 held-out scenes, and 8 % of them pass at 0.5)."""
    hole, known, exact, restored = [], [], 0, []
    for seed in seeds:
        scene = make_scene(seed)
        truth = render(scene, size)
        mask = inpainting_mask(scene, seed, size)
        masked = np.where(mask[..., None] > 0, 0, truth).astype(np.uint8)
        obj = hidden_object(scene, seed)[0]
        image = _check_output(generate(masked, mask, seed, object_phrase(obj) if ask else ""), size, "inpainting")
        hole.append(_capped_psnr(truth, image, mask))
        known.append(_capped_psnr(truth, image, 1.0 - mask))
        analysis = analyse(image)
        exact += scene_matches(analysis, scene)
        restored.append(any(d.label == obj.label and box_iou(d.box, obj.box) >= 0.7 for d in analysis.objects))
    n = len(seeds)
    return {"metric": "inpainting", "n": n, "prompt": "the hidden object's phrase" if ask else "empty",
            "psnr_hole": float(np.mean(hole)), "psnr_known": float(np.mean(known)),
            **_rate("object_accuracy", restored, seeds), "scene_exact": exact / n}


def evaluate_semantic(generate: Callable[[np.ndarray, int], np.ndarray], seeds: Sequence[int],
                      size: int = 128) -> dict:
    """Ask for each held-out scene's semantic map; compare it with the label map read from the result."""
    accuracy, miou, exact = [], [], 0
    for seed in seeds:
        scene = make_scene(seed)
        _, labels = render_with_labels(scene, size)
        result = analyse(_check_output(generate(labels, seed), size, "semantic synthesis"))
        accuracy.append(label_map_accuracy(result.labels, labels))
        miou.append(label_map_miou(result.labels, labels))
        exact += scene_matches(result, scene)
    return {"metric": "semantic", "n": len(seeds), "pixel_accuracy": float(np.mean(accuracy)),
            "miou": float(np.mean(miou)), "scene_exact": exact / len(seeds)}


def bicubic_upscale(low: np.ndarray, size: int) -> np.ndarray:
    """uint8 (s, s, 3) -> uint8 (size, size, 3) by PIL's bicubic filter: the baseline SR must beat."""
    from PIL import Image

    return np.asarray(Image.fromarray(low).resize((size, size), Image.Resampling.BICUBIC))


def evaluate_super_resolution(generate: Callable[[np.ndarray, int], np.ndarray], seeds: Sequence[int],
                              size: int = 128, factor: int = 4,
                              model_only: Callable[[np.ndarray, int], np.ndarray] | None = None) -> dict:
    """Upscale the size/factor render of each scene; compare with the render at full size, and bicubic's.

    `model_only`, called right after `generate` on the same input, gives the pipeline's image before any
    post-processing (Match Low-Res Input), reported as `model_psnr`."""
    values, bicubic, own, exact = [], [], [], 0
    for seed in seeds:
        scene = make_scene(seed)
        low, truth = render(scene, size // factor), render(scene, size)
        image = _check_output(generate(low, seed), size, "super-resolution")
        values.append(_capped_psnr(truth, image))
        if model_only is not None:
            own.append(_capped_psnr(truth, _check_output(model_only(low, seed), size, "super-resolution")))
        bicubic.append(_capped_psnr(truth, bicubic_upscale(low, size)))
        exact += scene_matches(analyse(image), scene)
    result = {"metric": "super_resolution", "n": len(seeds), "factor": factor, "psnr_mean": float(np.mean(values)),
              "bicubic_psnr": float(np.mean(bicubic)), "gain_over_bicubic_db": float(np.mean(values) - np.mean(bicubic)),
              "scene_exact": exact / len(seeds)}
    if own:
        result["model_psnr"] = float(np.mean(own))
    return result


# ---------------------------------------------------------------- the oracle


def oracle_report(seeds: Sequence[int], size: int = 128) -> list[dict]:
    """Every metric with the renderer as a perfect generator: an upper bound that must be perfect."""
    def truth(seed: int) -> np.ndarray:
        return render(make_scene(seed), size)

    def one_object(prompt: str, seed: int) -> np.ndarray:  # the seed's first object, recoloured and reshaped
        scene = make_scene(seed)
        colour, shape = prompt.split()[1:]
        return render(replace(scene, objects=(replace(scene.objects[0], colour=colour, shape=shape),)), size)

    return [
        evaluate_autoencoder(lambda images: images, seeds, size),
        evaluate_one_object(one_object, seeds, size),
        evaluate_text_to_image(lambda prompt, seed: truth(seed), seeds, size),
        evaluate_layout_to_image(lambda boxes, seed: truth(seed), seeds, size),
        evaluate_inpainting(lambda image, mask, seed, prompt: truth(seed), seeds, size),
        evaluate_semantic(lambda labels, seed: truth(seed), seeds, size),
        evaluate_super_resolution(lambda low, seed: truth(seed), seeds, size),
    ]


# ---------------------------------------------------------------- the autoencoder file


def load_autoencoder(path: str | Path):
    """The AutoencoderKL of a Kiln autoencoder file (`first_stage_model.*` keys) and its JSON card."""
    import torch
    from safetensors.torch import load_file

    from engine.models.autoencoder import AutoencoderKL
    from engine.models.configs import AutoencoderConfig

    path = Path(path)
    card_path = path.with_suffix(".json")
    if not path.is_file():
        raise KilnError(f"{path}: no such model file")
    if not card_path.is_file():
        raise KilnError(f"{path}: the card {card_path.name} with the architecture is missing beside it")
    card = json.loads(card_path.read_text())
    # an autoencoder's own card, or a whole model's (its autoencoder inside the checkpoint config)
    architecture = card.get("architecture") or card.get("checkpoint_config", {}).get("autoencoder")
    if not isinstance(architecture, dict):
        raise KilnError(f"{card_path}: no autoencoder architecture in the card")
    arch = {k: tuple(v) if isinstance(v, list) else v for k, v in architecture.items()}
    model = AutoencoderKL(AutoencoderConfig(**arch))
    prefix = "first_stage_model."
    tensors = load_file(str(path))
    state = {k[len(prefix):]: v.to(torch.float32) for k, v in tensors.items() if k.startswith(prefix)}
    if not state:
        raise KilnError(f"{path}: no '{prefix}*' tensors in the file")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        first_line = str(err).splitlines()[0]
        raise KilnError(f"{path}: weights do not fit the card's architecture ({first_line})") from None
    return model.eval(), card


def _autoencoder_command(args: argparse.Namespace) -> list[dict]:
    import torch

    from training.train_autoencoder import reconstruct

    torch.set_num_threads(args.threads)
    model, _ = load_autoencoder(args.model)
    seeds = held_out_seeds(args.n, args.offset)
    return [evaluate_autoencoder(lambda images: reconstruct(model, images), seeds, args.size)]


def _oracle_command(args: argparse.Namespace) -> list[dict]:
    return oracle_report(held_out_seeds(args.n, args.offset), args.size)


def _semantic_command(args: argparse.Namespace) -> list[dict]:
    """A semantic synthesis checkpoint through the engine (Load Checkpoint -> Semantic Encode -> Sampler)."""
    import torch

    from training.train_semantic import engine_generator

    torch.set_num_threads(args.threads)
    generate = engine_generator(args.model, args.steps, args.cfg, args.sampler, args.scheduler)
    return [evaluate_semantic(generate, held_out_seeds(args.n, args.offset), args.size)]


def _super_resolution_command(args: argparse.Namespace) -> list[dict]:
    """A 4x SR checkpoint through the engine (Super-Resolution Conditioning -> Sampler -> Match Low-Res Input),
    against bicubic."""
    import torch

    from training.train_sr import engine_generator, time_upscale

    torch.set_num_threads(args.threads)
    generate = engine_generator(args.model, args.steps, args.sampler, args.scheduler,
                                match_iterations=args.match_iterations)
    model_only = generate.model_only if args.match_iterations else None
    result = evaluate_super_resolution(generate, held_out_seeds(args.n, args.offset), args.size,
                                       model_only=model_only)
    result.update(sampler=f"{args.sampler} {args.scheduler} {args.steps} steps", match_iterations=args.match_iterations)
    if args.time_512:
        result["seconds_128_to_512"] = time_upscale(generate, 128)
    return [result]


def _base_model_command(args: argparse.Namespace) -> list[dict]:
    """The base checkpoint through the engine: text, layout (Text/Layout Encode -> Sampler) or inpainting
    (Inpaint Conditioning -> Sampler -> Paste Inpainted Result)."""
    import torch

    from training import train_ldm

    torch.set_num_threads(args.threads)
    seeds = held_out_seeds(args.n, args.offset)
    if args.command == "text-to-image":
        generate = train_ldm.text_generator(args.model, args.steps, args.cfg, args.sampler, args.scheduler,
                                            eta=args.eta, plan=not args.no_plan)
        from training.train_planner import has_planner

        planned = not args.no_plan and has_planner(args.model)
        pipeline = {"sampler": f"{args.sampler} {args.scheduler}", "eta": args.eta, "layout_planner": planned}
        return [{**evaluate_one_object(generate, seeds, args.size), **pipeline},
                {**evaluate_text_to_image(generate, seeds, args.size), **pipeline}]
    if args.command == "layout-to-image":
        generate = train_ldm.layout_generator(args.model, args.steps, args.cfg, args.sampler, args.scheduler)
        return [evaluate_layout_to_image(generate, seeds, args.size)]
    first, refine_steps = inpaint_steps(args.steps) if args.refine > 0 else (args.steps, 0)
    generate = train_ldm.inpaint_generator(args.model, first, args.sampler, args.scheduler, cfg=args.cfg,
                                           refine=args.refine, refine_steps=refine_steps)
    result = evaluate_inpainting(generate, seeds, args.size, ask=args.ask == "object")
    return [{**result, "steps": first, "refine": args.refine, "refine_steps": refine_steps}]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training.evaluate", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    ae = sub.add_parser("autoencoder", help="reconstruction PSNR of an autoencoder file")
    ae.add_argument("--model", required=True, help="a .safetensors file with its .json card beside it")
    ae.add_argument("--threads", type=int, default=2)
    ae.set_defaults(run=_autoencoder_command)
    oracle = sub.add_parser("oracle", help="every metric with a perfect generator (checks the metrics)")
    oracle.set_defaults(run=_oracle_command)
    sem = sub.add_parser("semantic", help="label-map accuracy of a semantic synthesis checkpoint")
    sem.add_argument("--cfg", type=float, default=2.0, help="guidance scale (the negative is the zeroed map)")
    sem.set_defaults(run=_semantic_command, steps=25)
    sr = sub.add_parser("super-resolution", help="PSNR of a 4x SR checkpoint at size/4 -> size, next to bicubic")
    sr.add_argument("--time-512", action="store_true", help="also time one 128 -> 512 px upscale")
    sr.add_argument("--match-iterations", type=int, default=SR_MATCH,
                    help=f"Match Low-Res Input passes after the model (default {SR_MATCH}, as the example graphs; "
                         "0 = the model's output alone); the model's own PSNR is reported too")
    sr.set_defaults(run=_super_resolution_command, steps=SR_STEPS)
    base = []
    for name, what in (("text-to-image", "caption accuracy"), ("layout-to-image", "box IoU"),
                       ("inpainting", "PSNR in and outside the hole")):
        p = sub.add_parser(name, help=f"{what} of the base checkpoint (kiln-shapes-base)")
        p.add_argument("--cfg", type=float, default=3.0, help="guidance scale (the negative is the empty prompt)")
        if name == "text-to-image":
            p.add_argument("--eta", type=float, default=TEXT_ETA,
                           help=f"fresh noise per step of an SDE or ancestral sampler (default {TEXT_ETA}, as "
                                "text_to_image.json; 0 = none)")
            p.add_argument("--no-plan", action="store_true",
                           help="disable text_to_image.json's Plan Layout node: the prompt alone conditions (the "
                                "text model's own cross-attention; a checkpoint without a planner always runs so)")
        if name == "inpainting":
            p.add_argument("--ask", choices=("object", "nothing"), default="object",
                           help="prompt with the hidden object's phrase (default), or leave the prompt empty")
            p.add_argument("--refine", type=float, default=REFINE_DENOISE, metavar="DENOISE",
                           help=f"the second pass of inpainting.json over the pasted result (default denoise "
                                f"{REFINE_DENOISE}; it takes {REFINE_STEPS} of the 25 steps; 0 = one pass)")
        p.set_defaults(run=_base_model_command, steps=25)
        base.append(p)
    pipelines = {sr: (SR_SAMPLER, SR_SCHEDULER), base[0]: (TEXT_SAMPLER, TEXT_SCHEDULER)}
    for p in (sem, sr, *base):
        p.add_argument("--model", required=True, help="a checkpoint file (with its .json card beside it)")
        p.add_argument("--steps", type=int, help=f"sampler steps (super-resolution {SR_STEPS}, the others 25; "
                       "inpainting: both passes together)")
        sampler, scheduler = pipelines.get(p, ("dpmpp_2m", "karras"))  # the example graphs' own
        p.add_argument("--sampler", default=sampler, choices=SAMPLER_NAMES)
        p.add_argument("--scheduler", default=scheduler, choices=SCHEDULER_NAMES)
        p.add_argument("--threads", type=int, default=1,
                       help="torch threads; 1 is fastest while other work shares the CPU (measured 5-10x)")
    for p in (ae, oracle, sem, sr, *base):
        p.add_argument("--n", type=int, default=500, help="held-out scenes (seeds from 1,000,000 + offset)")
        p.add_argument("--offset", type=int, default=0)
        p.add_argument("--size", type=int, default=128)
        p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return parser


def _print_table(results: list[dict]) -> None:
    for result in results:
        print(result["metric"])
        for key, value in result.items():
            if key == "metric":
                continue
            if isinstance(value, list):
                shown = ", ".join(str(v) for v in value[:8]) + (f", ... ({len(value)} in all)" if len(value) > 8 else "")
                print(f"  {key:<28} {shown or '(none)'}")
            else:
                print(f"  {key:<28} {value:.4f}" if isinstance(value, float) else f"  {key:<28} {value}")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        results = args.run(args)
    except KilnError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(results if len(results) > 1 else results[0], indent=2))
    else:
        _print_table(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
