"""Every example graph runs headless on the built-in models, most at reduced steps, and the analyser judges the picture.

The graphs are run as shipped (only steps lowered, and an input path where a test brings its own picture),
through the real nodes and the real built-in checkpoints in resources/models. text_to_image and default keep
their 25 steps: their seed is the one that draws their caption at 25 steps, and their SDE sampler's picture
changes with the step count.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from engine import graph_file
from nodes import build_registry
from training.analyser import analyse, label_map_accuracy, layout_ious, match_caption, psnr
from training.data import held_out_seeds
from training.metrics import bicubic_upscale
from training.shapes_world import make_scene, render

ROOT = Path(__file__).resolve().parents[1]
GRAPHS = ROOT / "resources" / "graphs"
BASE_STEPS, SR_STEPS = 12, 4  # super-resolution runs at its shipped 4 steps


@pytest.fixture(scope="module")
def executor():
    from engine.cache import ResultCache
    from engine.executor import Executor
    from engine.spec import EngineSettings

    settings = EngineSettings(device="cpu", precision="fp32")
    cwd = os.getcwd()
    os.chdir(ROOT)  # example graphs name their input pictures relative to the repository
    try:
        yield Executor(build_registry(), settings, cache=ResultCache.from_settings(settings, disk=False))
    finally:
        os.chdir(cwd)


def run_example(executor, name: str, **params) -> np.ndarray:
    """uint8 (B, H, W, 3): the picture the graph's `save` node would write. params: {"node.param": value}."""
    from nodes.image_io import to_uint8_hwc

    graph = graph_file.load(GRAPHS / f"{name}.json")
    for key, value in params.items():
        node, param = key.split(".")
        graph.nodes[node].params[param] = value
    (source,) = [link.src for link in graph.links if link.dst == "save"]  # run up to save, write no file
    result = executor.run(graph, targets=[source])
    assert result.ok, result.error
    return np.stack(to_uint8_hwc(result.outputs[source]["image"].pixels))


def prompt_of(name: str) -> str:
    return graph_file.load(GRAPHS / f"{name}.json").nodes["prompt"].params["text"]


def objects_right(image: np.ndarray, prompt: str) -> list[bool]:
    return [m.colour_ok and m.shape_ok for m in match_caption(analyse(image), prompt).objects]


# The assertions below hold for the shipped base model, which with its layout planner draws 88.5 % of
# held-out full captions entirely right (see the README's model table); they fail for noise or a broken chain.


def test_text_to_image_draws_the_whole_caption(executor):
    (image,) = run_example(executor, "text_to_image")
    assert image.shape == (128, 128, 3)
    match = match_caption(analyse(image), prompt_of("text_to_image"))
    assert match.scene_ok, match  # every object's colour, shape, size and place, the count and the background


def test_text_to_image_plans_the_caption_s_objects_and_runs_without_its_planner(executor):
    from nodes.image_io import to_uint8_hwc

    graph = graph_file.load(GRAPHS / "text_to_image.json")
    graph.nodes["sampler"].params["steps"] = BASE_STEPS
    result = executor.run(graph, targets=["plan", "decode"])
    assert result.ok, result.error
    labels = [item.label for item in result.outputs["plan"]["layout"]]
    assert labels == ["blue triangle", "blue square", "orange triangle"]  # the caption's objects, in its order
    planned = to_uint8_hwc(result.outputs["decode"]["image"].pixels)[0]
    graph.nodes["plan"].disabled = True  # bypassed, as in the GUI: the prompt's conditioning passes through
    result = executor.run(graph, targets=["decode"])
    assert result.ok, result.error
    assert not np.array_equal(to_uint8_hwc(result.outputs["decode"]["image"].pixels)[0], planned)


def test_layout_to_image_draws_each_object_in_its_box(executor):
    # The base model reads the boxes as tokens and as painted region channels (README: mean IoU 0.62 over
    # 200 held-out layouts). At the shipped seed all three land: IoU 0.95, 0.86 and 0.96 at 12 steps.
    boxes = graph_file.load(GRAPHS / "layout_to_image.json").nodes["layout"].params["boxes"]
    (image,) = run_example(executor, "layout_to_image", **{"sampler.steps": BASE_STEPS})
    analysis = analyse(image)
    assert len(analysis.objects) == len(boxes)
    assert min(layout_ious(analysis, boxes)) >= 0.7, [o.label for o in analysis.objects]


def test_regional_prompts_draw_each_box_s_prompt_in_its_box(executor):
    # The built-in model's text path alone: box labels as prompts by masked cross-attention (README: 200
    # held-out scenes of 2-3 objects). The shipped boxes both land at 12 steps.
    graph = graph_file.load(GRAPHS / "regional_prompts.json")
    boxes = graph.nodes["regions"].params["boxes"]
    (image,) = run_example(executor, "regional_prompts", **{"sampler.steps": BASE_STEPS})
    analysis = analyse(image)
    wanted = [{"label": b["label"].split(" ", 2)[2], "box": b["box"]} for b in boxes]  # "a large red circle"
    assert len(analysis.objects) == len(boxes) and analysis.background == "white"
    assert min(layout_ious(analysis, wanted)) >= 0.5, [(o.label, o.box) for o in analysis.objects]


def test_regional_prompts_take_boxes_and_a_batch_from_the_command_line(tmp_path):
    import json

    from kiln.cli import main

    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text("\n".join(json.dumps({"sampler.seed": seed}) for seed in (1, 2)) + "\n")
    boxes = [{"label": "a small blue square", "box": [0.1, 0.1, 0.3, 0.3]},
             {"label": "a large yellow circle", "box": [0.45, 0.4, 0.9, 0.85]}]
    code = main(["run", str(GRAPHS / "regional_prompts.json"), "--set", f"regions.boxes={json.dumps(boxes)}",
                 "--set", "sampler.steps=2", "--batch", str(jobs), "--out", str(tmp_path / "out")])
    assert code == 0
    assert len(list((tmp_path / "out").glob("regional_*.png"))) == 2


def test_image_to_image_keeps_the_picture_s_background_and_colours(executor):
    from PIL import Image

    original = np.asarray(Image.open(GRAPHS / "sample_scene.png").convert("RGB"))
    (image,) = run_example(executor, "image_to_image", **{"sampler.steps": BASE_STEPS})
    analysis = analyse(image)
    assert analysis.background == analyse(original).background
    assert {"orange", "blue"} <= {o.colour for o in analysis.objects}
    assert not np.array_equal(image, original)


def test_inpainting_changes_only_the_painted_hole_and_fills_it_sensibly(executor):
    import cv2
    from PIL import Image

    (image,) = run_example(executor, "inpainting", **{"sampler.steps": BASE_STEPS})
    original = np.asarray(Image.open(GRAPHS / "sample_scene.png").convert("RGB"))
    graph = graph_file.load(GRAPHS / "inpainting.json")
    mask = _painted_mask(graph.nodes["mask"].params["mask"])
    feather = graph.nodes["paste"].params["feather"]
    touched = cv2.dilate(mask, np.ones((2 * feather + 3, 2 * feather + 3), np.uint8)) > 0
    assert psnr(image, original, ~touched) >= 45.0
    assert not np.array_equal(image[mask > 0], original[mask > 0])  # the hole was regenerated
    assert objects_right(image, prompt_of("inpainting"))[1:] == [True, True]  # the two objects outside the hole


def _painted_mask(b64: str) -> np.ndarray:
    from engine.drawing import decode_png_b64

    return (np.asarray(decode_png_b64(b64)) > 127).astype(np.uint8)


def test_unconditional_samples_are_distinct_shapes_world_scenes(executor):
    images = run_example(executor, "unconditional", **{"sampler.steps": BASE_STEPS})
    assert images.shape == (4, 128, 128, 3)
    for image in images:
        assert analyse(image).objects
    assert len({image.tobytes() for image in images}) == 4


def test_semantic_to_image_paints_what_the_map_says(executor):
    from engine.drawing import decode_png_b64

    graph = graph_file.load(GRAPHS / "semantic_to_image.json")
    labels = decode_png_b64(graph.nodes["semantic"].params["labels"])
    (image,) = run_example(executor, "semantic_to_image", **{"sampler.steps": BASE_STEPS})
    assert label_map_accuracy(analyse(image).labels, labels) >= 0.85


def test_super_resolution_upscales_a_held_out_32px_scene_to_128px(executor, tmp_path):
    from engine.drawing import write_png

    seed = held_out_seeds(1)[0]
    low, truth = render(make_scene(seed), 32), render(make_scene(seed), 128)
    write_png(str(tmp_path / "low.png"), low)
    (image,) = run_example(executor, "super_resolution", **{"image.path": str(tmp_path / "low.png"),
                                                            "sampler.steps": SR_STEPS})
    (model_only,) = run_example(executor, "super_resolution", **{"image.path": str(tmp_path / "low.png"),
                                                                 "sampler.steps": SR_STEPS, "sr_match.iterations": 0})
    assert image.shape == (128, 128, 3)
    # README: +3.9 dB over bicubic on average (the model alone +2.7); on this scene 34.6 (the model alone 33.9) against 28.7.
    bicubic = psnr(bicubic_upscale(low, 128), truth)
    assert psnr(model_only, truth) > bicubic + 2.0  # the diffusion model does most of it
    assert psnr(image, truth) > max(bicubic + 3.0, psnr(model_only, truth) + 0.5)
    assert analyse(image).objects[0].label == analyse(truth).objects[0].label


def test_default_graph_makes_a_512px_picture_of_its_prompt(executor):
    from PIL import Image

    (image,) = run_example(executor, "default")
    assert image.shape == (512, 512, 3)
    small = np.asarray(Image.fromarray(image).resize((128, 128), Image.Resampling.BOX))
    match = match_caption(analyse(small), prompt_of("default"))
    assert match.scene_ok, match
