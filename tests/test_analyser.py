"""The analyser reads rendered scenes back exactly, and the scoring helpers judge like a person would."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from engine.errors import KilnError
from training.analyser import (
    CaptionError,
    analyse,
    label_map,
    label_map_accuracy,
    layout_iou,
    layout_ious,
    match_caption,
    parse_caption,
    psnr,
    scene_matches,
)
from training.data import held_out_seeds
from training.evaluate import main, oracle_report
from training.metrics import (
    evaluate_autoencoder,
    evaluate_inpainting,
    evaluate_one_object,
    hidden_object,
    inpainting_mask,
)
from training.model_files import load_autoencoder
from training.shapes_world import (
    Scene,
    SceneObject,
    layout,
    make_scene,
    object_phrase,
    render,
    render_with_labels,
)

RED_CIRCLE = SceneObject("red", "circle", "large", 0.35, (0.05, 0.05, 0.40, 0.40))
BLUE_TRIANGLE = SceneObject("blue", "triangle", "small", 0.2, (0.40, 0.75, 0.60, 0.95))
TWO = Scene("gray", (RED_CIRCLE, BLUE_TRIANGLE))


def test_analyser_recovers_held_out_scenes_essentially_perfectly():
    seeds = held_out_seeds(300)
    exact = pixel_accuracy = 0.0
    for seed in seeds:
        scene = make_scene(seed)
        image, labels = render_with_labels(scene, 128)
        result = analyse(image)
        exact += scene_matches(result, scene)
        pixel_accuracy += label_map_accuracy(result.labels, labels)
    assert exact / len(seeds) >= 0.99
    assert pixel_accuracy / len(seeds) >= 0.999


def test_analysis_reports_boxes_areas_and_positions():
    result = analyse(render(TWO, 128))
    assert result.background == "gray"
    circle, triangle = result.objects  # sorted top to bottom
    assert (circle.label, circle.size, circle.position) == ("red circle", "large", "top left")
    assert (triangle.label, triangle.size, triangle.position) == ("blue triangle", "small", "bottom")
    assert circle.box == pytest.approx(RED_CIRCLE.box, abs=0.004)
    assert triangle.box == pytest.approx(BLUE_TRIANGLE.box, abs=0.004)
    assert circle.area == pytest.approx(np.pi / 4 * (0.35 * 128) ** 2, rel=0.01)
    assert triangle.area == pytest.approx(0.5 * (0.2 * 128) ** 2, rel=0.02)


def test_analyser_tolerates_noise_like_a_decoder_adds():
    rng = np.random.default_rng(0)
    exact = 0
    for seed in held_out_seeds(40, offset=5000):
        scene = make_scene(seed)
        noisy = render(scene).astype(np.float32) + rng.normal(0, 8, (128, 128, 3))
        exact += scene_matches(analyse(np.clip(noisy, 0, 255).astype(np.uint8)), scene)
    assert exact >= 39


def test_label_map_marks_specks_as_background():
    image = render(Scene("white", (RED_CIRCLE,)), 128)
    image[100:102, 100:102] = (40, 170, 70)  # a 4-pixel green speck is noise, not an object
    result = analyse(image)
    assert [o.label for o in result.objects] == ["red circle"]
    labels = label_map(image)
    assert labels[101, 101] == 0 and labels[30, 30] == 3


def test_parse_caption_reads_full_and_short_captions():
    full = parse_caption("a large red circle at the top left and a small blue triangle in the center "
                         "on a gray background")
    assert full.background == "gray"
    assert [(o.size, o.colour, o.shape, o.position) for o in full.objects] == [
        ("large", "red", "circle", "top left"), ("small", "blue", "triangle", "center")]
    short = parse_caption("a green square")
    assert short.background is None and short.objects[0].size is None and short.objects[0].position is None
    with pytest.raises(CaptionError, match="pink"):
        parse_caption("a pink circle")
    with pytest.raises(CaptionError, match="middle"):
        parse_caption("a red circle at the middle")


def test_match_caption_on_hand_made_cases():
    result = analyse(render(TWO, 128))
    perfect = match_caption(result, TWO)
    assert perfect.scene_ok and perfect.accuracy("object") == 1.0
    # order does not matter, unspecified attributes are not held against the image
    assert match_caption(result, "a blue triangle and a red circle").scene_ok
    wrong_shape = match_caption(result, "a red square and a blue triangle on a gray background")
    assert not wrong_shape.scene_ok
    assert wrong_shape.accuracy("colour") == 1.0 and wrong_shape.accuracy("shape") == 0.5
    assert wrong_shape.objects[0].detected.shape == "circle"  # the red square was matched to the red circle
    wrong_place = match_caption(result, "a red circle at the bottom right and a blue triangle")
    assert wrong_place.accuracy("position") == 0.0 and not wrong_place.scene_ok
    missing = match_caption(result, "a red circle")
    assert not missing.count_ok and missing.accuracy("object") == 1.0 and not missing.scene_ok
    wrong_background = match_caption(result, "a red circle and a blue triangle on a black background")
    assert wrong_background.background_ok is False and not wrong_background.scene_ok
    too_many = match_caption(result, "a red circle and a blue triangle and a green square")
    assert too_many.objects[2].detected is None and too_many.accuracy("object") == pytest.approx(2 / 3)


def test_layout_iou_matches_boxes_by_label():
    result = analyse(render(TWO, 128))
    assert layout_iou(result, layout(TWO)) > 0.95
    shifted = [{"label": "red circle", "box": [0.225, 0.05, 0.575, 0.40]}]  # half overlapping
    assert layout_iou(result, shifted) == pytest.approx(1 / 3, abs=0.02)
    assert layout_iou(result, [{"label": "green circle", "box": list(RED_CIRCLE.box)}]) == 0.0
    placed = layout_ious(result, [{"label": "green circle", "box": list(RED_CIRCLE.box)}], same_label=False)
    assert placed[0] > 0.95  # the right place, the wrong object
    with pytest.raises(KilnError):
        layout_iou(result, [])


def test_psnr_and_label_accuracy():
    a = np.zeros((8, 8, 3), np.uint8)
    b = a.copy()
    b[0, 0] = 255  # one pixel fully wrong: mse = 255^2 / 64
    assert psnr(a, b) == pytest.approx(10 * np.log10(64), abs=1e-9)
    mask = np.zeros((8, 8))
    mask[4:, 4:] = 1
    assert psnr(a, b, mask) == float("inf")
    assert psnr(a.astype(np.float32) / 255, b.astype(np.float32) / 255) == pytest.approx(psnr(a, b))
    assert label_map_accuracy(np.array([[1, 2], [3, 4]]), np.array([[1, 2], [3, 5]])) == 0.75
    with pytest.raises(KilnError):
        analyse(np.zeros((10, 12, 3), np.uint8))


def test_evaluator_metrics_are_perfect_for_the_renderer_and_punish_damage():
    seeds = held_out_seeds(12)
    for result in oracle_report(seeds):
        for key, value in result.items():
            if key.endswith(("accuracy", "exact")):
                assert value == 1.0, (result["metric"], key)
            if key.startswith("psnr"):
                assert value == 100.0, (result["metric"], key)
            if key == "mean_iou":
                assert value > 0.98
    empty = evaluate_one_object(lambda prompt, seed: render(replace(make_scene(seed), objects=()), 128), seeds)
    assert empty["accuracy"] == 0.0 and empty["object_present"] == 0.0
    blurred = evaluate_autoencoder(lambda images: (images // 32 * 32).astype(np.uint8), seeds)
    assert blurred["psnr_mean"] < 35 and blurred["scene_exact"] < 1.0
    scene = make_scene(seeds[0])
    mask = inpainting_mask(scene, seeds[0])
    assert 0 < mask.mean() < 0.2 and set(np.unique(mask)) == {0.0, 1.0}


def test_inpainting_asks_for_the_hidden_object_by_its_phrase_or_for_nothing():
    seeds, prompts = held_out_seeds(3), []

    def ignore_the_hole(image, mask, seed, prompt):  # gives the masked picture back: the object stays hidden
        prompts.append(prompt)
        return image

    asked = evaluate_inpainting(ignore_the_hole, seeds)
    assert prompts == [object_phrase(hidden_object(make_scene(s), s)[0]) for s in seeds]
    assert prompts[0].startswith("a ") and asked["prompt"] == "the hidden object's phrase"
    assert asked["object_accuracy"] == 0.0 and asked["psnr_known"] == 100.0
    prompts.clear()
    assert evaluate_inpainting(ignore_the_hole, seeds, ask=False)["prompt"] == "empty" and prompts == ["", "", ""]


def _tiny_autoencoder_file(tmp_path):
    from safetensors.torch import save_file

    from engine.models.autoencoder import AutoencoderKL
    from training.autoencoder import TrainConfig, autoencoder_config
    from training.autoencoder_export import state_dict_for_file

    tc = TrainConfig(ch=32, ch_mult=(1, 1), num_res_blocks=1)
    torch.manual_seed(0)
    model = AutoencoderKL(autoencoder_config(tc))
    path = tmp_path / "ae.safetensors"
    save_file(state_dict_for_file(model, torch.float16), str(path))
    path.with_suffix(".json").write_text(json.dumps({"architecture": autoencoder_config(tc).to_dict()}))
    return path


def test_evaluate_command_measures_an_autoencoder_file(tmp_path, capsys):
    path = _tiny_autoencoder_file(tmp_path)
    model, card = load_autoencoder(path)
    assert card["architecture"]["ch_mult"] == [1, 1]
    assert next(model.parameters()).dtype == torch.float32  # fp16 files are widened for evaluation
    assert main(["autoencoder", "--model", str(path), "--n", "3", "--json", "--threads", "1"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["n"] == 3 and report["psnr_mean"] < 20  # random weights reconstruct nothing
    path.with_suffix(".json").unlink()
    assert main(["autoencoder", "--model", str(path), "--n", "3"]) == 2
    assert "card" in capsys.readouterr().err
