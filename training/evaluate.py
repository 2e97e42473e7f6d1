"""Measure Kiln's models against the exact ground truth of the shapes world (held-out seeds).

    python -m training.evaluate autoencoder --model resources/models/kiln-shapes-ae.safetensors --n 500
    python -m training.evaluate oracle --n 50 --json
    python -m training.evaluate semantic --model resources/models/kiln-shapes-semantic.safetensors --n 200
    python -m training.evaluate super-resolution --model resources/models/kiln-shapes-sr.safetensors --n 200 --time-512
    python -m training.evaluate text-to-image --model resources/models/kiln-shapes-base.safetensors --n 200
    python -m training.evaluate layout-to-image --model resources/models/kiln-shapes-base.safetensors --n 200
    python -m training.evaluate inpainting --model resources/models/kiln-shapes-base.safetensors --n 200
    python -m training.evaluate regional-prompts --model resources/models/kiln-shapes-base.safetensors --n 200

One function per metric (training.metrics), each taking a `generate` callable that
returns uint8 (S, S, 3) images, so that graphs run through the engine
(training.generators) plug in unchanged:

- evaluate_autoencoder(reconstruct)          PSNR of encode -> decode, and whether the scene survives
- evaluate_text_to_image(generate(prompt, seed))        caption match: colour, shape, size, position, count
- evaluate_one_object(generate(prompt, seed))           short prompts like "a red circle": that one object
- evaluate_layout_to_image(generate(layout, seed))      mean box IoU and label accuracy
- evaluate_regional_prompts(generate(prompt, boxes, seed)) every object in its box (IoU >= 0.5), mean IoU
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
from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from engine.errors import KilnError
from engine.sampling.names import SAMPLER_NAMES, SCHEDULER_NAMES
from training import generators, pipeline
from training.data import held_out_seeds
from training.metrics import (
    evaluate_autoencoder,
    evaluate_inpainting,
    evaluate_layout_to_image,
    evaluate_one_object,
    evaluate_regional_prompts,
    evaluate_semantic,
    evaluate_super_resolution,
    evaluate_text_to_image,
    reconstruct,
    scenes_with_objects,
)
from training.shapes_world import make_scene, render

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


# ---------------------------------------------------------------- commands


def _autoencoder_command(args: argparse.Namespace) -> list[dict]:
    import torch

    from training.model_files import load_autoencoder  # torch: only the commands that load a model need it

    torch.set_num_threads(args.threads)
    model, _ = load_autoencoder(args.model)
    seeds = held_out_seeds(args.n, args.offset)
    return [evaluate_autoencoder(lambda images: reconstruct(model, images), seeds, args.size)]


def _oracle_command(args: argparse.Namespace) -> list[dict]:
    return oracle_report(held_out_seeds(args.n, args.offset), args.size)


def _semantic_command(args: argparse.Namespace) -> list[dict]:
    """A semantic synthesis checkpoint through the engine (Load Checkpoint -> Semantic Encode -> Sampler)."""
    import torch

    torch.set_num_threads(args.threads)
    generate = generators.semantic_generator(args.model, args.steps, args.cfg, args.sampler, args.scheduler)
    return [evaluate_semantic(generate, held_out_seeds(args.n, args.offset), args.size)]


def _super_resolution_command(args: argparse.Namespace) -> list[dict]:
    """A 4x SR checkpoint through the engine (Super-Resolution Conditioning -> Sampler -> Match Low-Res Input),
    against bicubic."""
    import torch

    torch.set_num_threads(args.threads)
    generate = generators.sr_generator(args.model, args.steps, args.sampler, args.scheduler,
                                       match_iterations=args.match_iterations)
    model_only = generate.model_only if args.match_iterations else None
    result = evaluate_super_resolution(generate, held_out_seeds(args.n, args.offset), args.size,
                                       model_only=model_only)
    result.update(sampler=f"{args.sampler} {args.scheduler} {args.steps} steps", match_iterations=args.match_iterations)
    if args.time_512:
        result["seconds_128_to_512"] = generators.time_upscale(generate, 128)
    return [result]


def _base_model_command(args: argparse.Namespace) -> list[dict]:
    """The base checkpoint through the engine: text, layout (Text/Layout Encode -> Sampler) or inpainting
    (Inpaint Conditioning -> Sampler -> Paste Inpainted Result)."""
    import torch

    torch.set_num_threads(args.threads)
    seeds = held_out_seeds(args.n, args.offset)
    if args.command == "text-to-image":
        generate = generators.text_generator(args.model, args.steps, args.cfg, args.sampler, args.scheduler,
                                             eta=args.eta, plan=not args.no_plan)
        from training.model_files import has_planner

        planned = not args.no_plan and has_planner(args.model)
        sampling = {"sampler": f"{args.sampler} {args.scheduler}", "eta": args.eta, "layout_planner": planned}
        return [{**evaluate_one_object(generate, seeds, args.size), **sampling},
                {**evaluate_text_to_image(generate, seeds, args.size), **sampling}]
    if args.command == "layout-to-image":
        generate = generators.layout_generator(args.model, args.steps, args.cfg, args.sampler, args.scheduler)
        return [evaluate_layout_to_image(generate, seeds, args.size)]
    first, refine_steps = pipeline.inpaint_steps(args.steps) if args.refine > 0 else (args.steps, 0)
    generate = generators.inpaint_generator(args.model, first, args.sampler, args.scheduler, cfg=args.cfg,
                                            refine=args.refine, refine_steps=refine_steps)
    result = evaluate_inpainting(generate, seeds, args.size, ask=args.ask == "object")
    return [{**result, "steps": first, "refine": args.refine, "refine_steps": refine_steps}]


def _regional_command(args: argparse.Namespace) -> list[dict]:
    """regional_prompts.json on held-out scenes of 2 and 3 objects, next to the same model's whole caption."""
    import torch

    torch.set_num_threads(args.threads)
    executor = pipeline.engine_executor()
    generate = generators.regional_generator(args.model, args.steps, args.cfg, args.sampler, args.scheduler,
                                             eta=args.eta, mode=args.mode, executor=executor)
    prompt_only = None
    if not args.no_prompt_only:
        prompt_only = generators.text_generator(args.model, args.steps, args.cfg, args.sampler, args.scheduler,
                                                executor=executor, eta=args.eta, plan=False)
    seeds = scenes_with_objects(args.n, (2, 3), args.offset)
    result = evaluate_regional_prompts(generate, seeds, args.size, prompt_only)
    return [{**result, "mode": args.mode, "sampler": f"{args.sampler} {args.scheduler}", "eta": args.eta,
             "cfg": args.cfg, "steps": args.steps}]


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
    sr.add_argument("--match-iterations", type=int, default=pipeline.SR_MATCH,
                    help=f"Match Low-Res Input passes after the model (default {pipeline.SR_MATCH}, as the "
                         "example graphs; 0 = the model's output alone); the model's own PSNR is reported too")
    sr.set_defaults(run=_super_resolution_command, steps=pipeline.SR_STEPS)
    base = []
    for name, what in (("text-to-image", "caption accuracy"), ("layout-to-image", "box IoU"),
                       ("inpainting", "PSNR in and outside the hole")):
        p = sub.add_parser(name, help=f"{what} of the base checkpoint (kiln-shapes-base)")
        p.add_argument("--cfg", type=float, default=3.0, help="guidance scale (the negative is the empty prompt)")
        if name == "text-to-image":
            p.add_argument("--eta", type=float, default=pipeline.TEXT_ETA,
                           help=f"fresh noise per step of an SDE or ancestral sampler (default {pipeline.TEXT_ETA}, as "
                                "text_to_image.json; 0 = none)")
            p.add_argument("--no-plan", action="store_true",
                           help="disable text_to_image.json's Plan Layout node: the prompt alone conditions (the "
                                "text model's own cross-attention; a checkpoint without a planner always runs so)")
        if name == "inpainting":
            p.add_argument("--ask", choices=("object", "nothing"), default="object",
                           help="prompt with the hidden object's phrase (default), or leave the prompt empty")
            p.add_argument("--refine", type=float, default=pipeline.REFINE_DENOISE, metavar="DENOISE",
                           help=f"the second pass of inpainting.json over the pasted result (default denoise "
                                f"{pipeline.REFINE_DENOISE}; it takes {pipeline.REFINE_STEPS} of the 25 steps; "
                                "0 = one pass)")
        p.set_defaults(run=_base_model_command, steps=25)
        base.append(p)
    regional = sub.add_parser("regional-prompts", help="box success and IoU of regional_prompts.json (each object's "
                              "phrase on its box, the background as the global prompt) on scenes of 2-3 objects")
    regional.add_argument("--cfg", type=float, default=3.0, help="guidance scale (the negative is the empty prompt)")
    regional.add_argument("--eta", type=float, default=pipeline.TEXT_ETA)
    regional.add_argument("--mode", choices=("attention", "blend"), default="attention")
    regional.add_argument("--no-prompt-only", action="store_true",
                          help="skip the same scenes from their whole caption alone (the text path's own figure)")
    regional.set_defaults(run=_regional_command, steps=25)
    pipelines = {sr: (pipeline.SR_SAMPLER, pipeline.SR_SCHEDULER),
                 base[0]: (pipeline.TEXT_SAMPLER, pipeline.TEXT_SCHEDULER),
                 regional: (pipeline.TEXT_SAMPLER, pipeline.TEXT_SCHEDULER)}
    for p in (sem, sr, *base, regional):
        p.add_argument("--model", required=True, help="a checkpoint file (with its .json card beside it)")
        p.add_argument("--steps", type=int, help=f"sampler steps (super-resolution {pipeline.SR_STEPS}, the others 25; "
                       "inpainting: both passes together)")
        sampler, scheduler = pipelines.get(p, ("dpmpp_2m", "karras"))  # the example graphs' own
        p.add_argument("--sampler", default=sampler, choices=SAMPLER_NAMES)
        p.add_argument("--scheduler", default=scheduler, choices=SCHEDULER_NAMES)
        p.add_argument("--threads", type=int, default=1,
                       help="torch threads; 1 is fastest while other work shares the CPU (measured 5-10x)")
    for p in (ae, oracle, sem, sr, *base, regional):
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
