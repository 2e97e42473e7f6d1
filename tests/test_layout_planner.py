"""The layout planner: its tokens, its sampling, its training, the shipped one, and the Plan Layout node."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.capabilities import ConditionerCapabilities
from engine.layout import Layout
from engine.models.layout_planner import LayoutPlanner, LayoutPlannerConfig
from engine.models.loader import load_checkpoint
from engine.models.token_conditioner import TokenConditionerConfig
from training import shapes_world as world
from training import train_planner as tp

ROOT = Path(__file__).resolve().parents[1]
BASE = ROOT / "resources" / "models" / "kiln-shapes-base.safetensors"
WORDS = TokenConditionerConfig(words=world.VOCABULARY, max_tokens=32, width=32, layers=1, heads=2)


def tiny_planner(seed: int = 0) -> LayoutPlanner:
    torch.manual_seed(seed)
    return LayoutPlanner(LayoutPlannerConfig(labels=tp.LABELS, width=32, layers=1, heads=2), WORDS).eval()


def test_layout_tokens_keep_label_size_and_place():
    planner = tiny_planner()
    boxes = [{"label": "red circle", "box": [0.1, 0.2, 0.4, 0.5]}, {"label": "blue triangle", "box": [0.6, 0.6, 0.8, 0.8]}]
    tokens = planner.encode_layout(boxes)
    cfg = planner.config
    assert len(tokens) == cfg.layout_length and tokens[8] == len(cfg.labels) and tokens[9:] == [-1] * 4
    assert [cfg.labels[tokens[0]], cfg.labels[tokens[4]]] == ["red circle", "blue triangle"]
    assert (tokens[1] + 0.5) / cfg.size_bins * cfg.max_size == pytest.approx(0.3, abs=cfg.max_size / cfg.size_bins)
    assert (tokens[2] + 0.5) / cfg.position_bins == pytest.approx(0.25, abs=1 / cfg.position_bins)
    with pytest.raises(ValueError, match="at most 3"):
        planner.encode_layout(boxes * 2)


def test_planning_is_a_function_of_prompt_and_seed():
    planner = tiny_planner()
    prompt = ["a large red circle at the top left and a small blue square"]
    first = planner.plan(prompt, seed=3)
    assert planner.plan(prompt, seed=3) == first
    assert any(planner.plan(prompt, seed=s) != first for s in range(4, 8))
    for layout in [first[0], *(planner.plan(prompt, seed=s)[0] for s in range(8))]:
        assert len(layout) <= planner.config.max_objects
        for item in layout:
            x0, y0, x1, y1 = item["box"]
            assert 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1 and item["label"] in tp.LABELS


def test_training_steps_lower_the_loss():
    trainer = tp.PlannerTrainer(tp.PlannerTrainConfig(planner=LayoutPlannerConfig(labels=tp.LABELS, width=32,
                                                                                  layers=1, heads=2),
                                                      batch=32, lr=3e-3, warmup=1), WORDS)
    prompts, targets = trainer.batch(np.random.default_rng(0))
    with torch.no_grad():
        before = float(trainer.model.loss(prompts, targets))
    for _ in range(40):
        trainer.train_step(prompts, targets, torch.Generator())
    with torch.no_grad():
        after = float(trainer.model.loss(prompts, targets))
    assert after < 0.8 * before


def test_training_pairs_list_the_boxes_in_the_captions_order():
    planner = tiny_planner()
    rng = np.random.default_rng(5)
    for _ in range(20):
        prompt, targets = tp.example(planner, rng, p_empty=0.0)
        text = " ".join(WORDS.words[i - 4] for i in prompt if i >= 4)
        phrases = [phrase.split() for phrase in text.split(" and ")]
        named = [" ".join(w for w in words if w in world.COLOURS or w in world.SHAPES) for words in phrases]
        assert named == [tp.LABELS[t] for t in targets[0::4] if 0 <= t < len(tp.LABELS)]


# ---------------------------------------------------------------- the shipped planner


@pytest.fixture(scope="module")
def shipped():
    return load_checkpoint(BASE, "cpu")


def test_the_shipped_base_model_plans_full_captions(shipped):
    planner = shipped.conditioner.planner
    assert planner is not None and tp.has_planner(str(BASE))
    result = tp.evaluate_planner(planner, 60)
    assert result["count_rate"] >= 0.95 and result["labels_rate"] >= 0.95 and result["sizes_rate"] >= 0.9
    assert result["positions_rate"] >= 0.8 and result["inside_rate"] == 1.0


def _run_plan(conditioner, cond, seed=0):
    from nodes.plan_layout import PLAN_LAYOUT

    return PLAN_LAYOUT.compute(None, {"conditioner": conditioner, "conditioning": cond},
                               {"seed": seed, "temperature": 1.0})


def test_plan_layout_node_conditions_on_the_prompt_and_its_boxes(shipped):
    conditioner = shipped.conditioner
    prompt = "a large red circle at the top left and a small blue square at the bottom right"
    cond = conditioner.encode([prompt])
    out = _run_plan(conditioner, cond)
    layout = out["layout"].to_json()
    assert [item["label"] for item in layout] == ["red circle", "blue square"]
    (rx0, ry0, rx1, ry1), (bx0, by0, bx1, by1) = (item["box"] for item in layout)
    assert world.position_word((rx0 + rx1) / 2, (ry0 + ry1) / 2) == "top left"
    assert world.position_word((bx0 + bx1) / 2, (by0 + by1) / 2) == "bottom right"
    assert rx1 - rx0 > bx1 - bx0  # large against small
    joined = out["conditioning"]
    assert joined.crossattn.shape[1] == 2 * cond.crossattn.shape[1]
    torch.testing.assert_close(joined.crossattn[:, : cond.crossattn.shape[1]], cond.crossattn)
    assert joined.regions is not None and joined.meta["prompt"] == [prompt] and joined.meta["layout"] == [layout]
    assert _run_plan(conditioner, cond)["layout"].to_json() == layout  # same seed, same boxes


def test_plan_layout_node_passes_through_what_it_cannot_plan(shipped):
    from engine.errors import UserInputError

    conditioner = shipped.conditioner
    empty = conditioner.encode([""])
    assert _run_plan(conditioner, empty) == {"conditioning": empty, "layout": Layout()}  # nothing to plan
    boxes = conditioner.encode_layouts([[{"label": "red circle", "box": [0.1, 0.1, 0.3, 0.3]}]])
    with pytest.raises(UserInputError, match="Text Encode"):
        _run_plan(conditioner, boxes)

    class NoPlanner:
        capabilities = ConditionerCapabilities("text")

    cond = conditioner.encode(["a red circle"])
    assert _run_plan(NoPlanner(), cond)["conditioning"] is cond  # any other checkpoint: the prompt alone


def test_export_writes_the_planner_into_a_base_checkpoint(tmp_path):
    base = tmp_path / "base.safetensors"
    shutil.copy(BASE, base)
    shutil.copy(BASE.with_suffix(".json"), tmp_path / "base.json")
    run = tmp_path / "run"
    assert tp.main(["train", "--base", str(base), "--out", str(run), "--steps", "2", "--batch", "8"]) == 0
    assert tp.main(["export", "--run", str(run), "--into", str(base), "--eval-n", "0"]) == 0
    trained = tp.trainer_from_run(run).model
    loaded = load_checkpoint(base, "cpu").conditioner.planner
    prompt = ["a small green triangle at the left and a large yellow square"]
    assert loaded.plan(prompt, 1) == trained.eval().half().float().plan(prompt, 1)
    assert (base.stat().st_mode & 0o644) == 0o644


def test_training_a_planner_for_a_file_that_is_no_kiln_model_is_a_one_line_error(tmp_path, capsys):
    assert tp.main(["train", "--base", str(tmp_path / "missing.safetensors"), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "missing.safetensors" in err and len(err.strip().splitlines()) == 1


def test_the_evaluator_measures_text_with_and_without_the_planner(capsys):
    from training import evaluate

    for flags, planned in (([], True), (["--no-plan"], False)):
        assert evaluate.main(["text-to-image", "--model", str(BASE), "--n", "1", "--steps", "2", "--json",
                              *flags]) == 0
        one_object, scene = json.loads(capsys.readouterr().out)
        assert one_object["layout_planner"] is planned and scene["layout_planner"] is planned


def test_copy_carries_the_planner_into_another_base_checkpoint(tmp_path):
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    bare = tmp_path / "retrained.safetensors"  # the shipped file without its planner, as train_ldm exports
    with safe_open(str(BASE), "pt") as f:
        metadata = dict(f.metadata())
    config = json.loads(metadata["kiln_config"])
    del config["conditioner"]["params"]["planner"]
    tensors = {k: v for k, v in load_file(str(BASE)).items() if not k.startswith(tp.PREFIX)}
    save_file(tensors, str(bare), metadata={**metadata, "kiln_config": json.dumps(config)})
    assert not tp.has_planner(str(bare)) and load_checkpoint(bare, "cpu").conditioner.planner is None
    assert tp.main(["copy", "--from", str(BASE), "--into", str(bare)]) == 0
    prompt = ["a large purple circle at the bottom and a small red square at the top right"]
    copied = load_checkpoint(bare, "cpu").conditioner.planner
    assert copied.plan(prompt, 4) == load_checkpoint(BASE, "cpu").conditioner.planner.plan(prompt, 4)


def test_plan_layout_node_uses_boxes_wired_into_its_layout_input(shipped):
    from engine.errors import UserInputError
    from nodes.plan_layout import PLAN_LAYOUT

    conditioner = shipped.conditioner
    cond = conditioner.encode(["a red circle and a blue square"])
    edited = [{"label": "red circle", "box": [0.6, 0.1, 0.9, 0.4]}, {"label": "blue square", "box": [0.1, 0.6, 0.3, 0.8]}]
    wired = Layout.from_json(edited)
    out = PLAN_LAYOUT.compute(None, {"conditioner": conditioner, "conditioning": cond, "layout": wired},
                              {"seed": 0, "temperature": 1.0})
    assert out["layout"] == wired and out["conditioning"].meta["layout"] == [edited]
    torch.testing.assert_close(out["conditioning"].regions, conditioner.encode_layouts([edited]).regions)

    class TextOnly:
        capabilities = ConditionerCapabilities("text")

    with pytest.raises(UserInputError, match="takes no layout boxes"):
        PLAN_LAYOUT.compute(None, {"conditioner": TextOnly(), "conditioning": cond, "layout": wired},
                            {"seed": 0, "temperature": 1.0})
