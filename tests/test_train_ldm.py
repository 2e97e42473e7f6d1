from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from test_train_semantic import write_tiny_autoencoder

from engine.drawing import encode_png_b64, write_png
from engine.models.configs import UNetConfig
from engine.models.token_conditioner import EOS, LAYOUT, TokenConditionerConfig
from engine.models.unet import UNetModel
from training import shapes_world as world
from training import train_ldm as tl
from training.generators import inpaint_graph, layout_graph, text_graph
from training.loop import STATE, save_run
from training.pipeline import (
    REFINE_DENOISE,
    TEXT_ETA,
    TEXT_SAMPLER,
    TEXT_SCHEDULER,
    engine_executor,
    run_image,
)
from training.train_ldm import LdmTrainConfig, Trainer, make_batch, vocabulary
from training.trainer import training_target


def tiny_config(**kw) -> LdmTrainConfig:
    unet = UNetConfig(in_channels=9, out_channels=4, model_channels=32, num_res_blocks=1,
                      attention_resolutions=(2,), channel_mult=(1, 2), num_head_channels=8,
                      use_spatial_transformer=True, context_dim=32, use_linear_in_transformer=True,
                      legacy=False)
    cond = TokenConditionerConfig(words=vocabulary(), coord_bins=16, max_tokens=40, width=32, layers=1, heads=2)
    return LdmTrainConfig(unet=unet, conditioner=cond, **{"batch": 8, **kw})


def test_batches_mix_text_layout_and_inpainting_masks():
    cfg = tiny_config(p_inpaint=0.5)
    trainer = Trainer(cfg)
    latents = torch.randn(20, 4, 8, 8).half()
    batch = make_batch(cfg, trainer.conditioner.tokenizer, latents, list(range(20)), 1.0,
                       np.random.default_rng(1))
    masks = batch.concat[:, 4]
    masked = batch.concat[:, :4]
    assert batch.tokens.shape == (8, 40)
    for i in range(8):
        if masks[i].max() == 0:  # plain generation: all concat channels are zero
            assert masked[i].abs().max() == 0
        else:  # inpainting: the known latent outside the hole, zeros inside
            assert torch.equal(masked[i] * masks[i], torch.zeros_like(masked[i]))
            keep = masks[i] == 0
            assert torch.allclose(masked[i][:, keep], batch.latents[i][:, keep])
    assert 0 < int((masks.flatten(1).amax(1) > 0).sum()) < 8


def test_training_steps_reduce_the_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    cfg = tiny_config(lr=2e-3)
    trainer = Trainer(cfg)
    batch = make_batch(cfg, trainer.conditioner.tokenizer, torch.randn(8, 4, 8, 8).half(), list(range(8)),
                       1.0, np.random.default_rng(0))
    losses = [trainer.train_step(batch, torch.Generator().manual_seed(0)) for _ in range(8)]
    assert np.mean(losses[-3:]) < np.mean(losses[:3])
    assert trainer.step == 8


def _longest_scene() -> world.Scene:
    """Three large objects at two-word positions on the longest background name: the longest caption."""
    colour, shape = max(world.COLOUR_NAMES, key=len), max(world.SHAPES, key=len)
    background = max(world.BACKGROUND_NAMES, key=len)
    boxes = [(0.0, 0.0, 0.3, 0.3), (0.7, 0.0, 1.0, 0.3), (0.0, 0.7, 0.3, 1.0)]  # top left, top right, bottom left
    objects = tuple(world.SceneObject(colour, shape, "large", 0.3, box) for box in boxes)
    return world.Scene(background, objects, 0)


def test_default_token_budget_holds_the_longest_caption_and_layout():
    cfg = LdmTrainConfig()
    tokenizer = tl.TokenConditioner(cfg.conditioner).tokenizer
    scene = _longest_scene()
    text = world.caption(scene)
    assert len(text.split()) == 30 and cfg.conditioner.max_tokens == 32
    assert len(tokenizer.encode_text(text)) == 32  # BOS + 30 words + EOS, no padding left over
    layout = tokenizer.encode_layout(world.layout(scene))
    assert len(layout) == 32 and layout.count(0) == 32 - (2 + 3 * 6 + 1)  # 3 boxes: label words + 4 corners
    with pytest.raises(Exception, match="at most 32"):
        tokenizer.encode_text(text + " and a red circle")


def test_default_unet_is_affordable():
    cfg = LdmTrainConfig()
    with torch.device("meta"):
        unet = UNetModel(cfg.unet)
    params = sum(p.numel() for p in unet.parameters())
    assert 8e6 < params <= 15e6
    assert cfg.unet.context_dim == cfg.conditioner.width == 128


# ---------------------------------------------------------------- export, through the engine


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    """A tiny trained run exported under a name without 'kiln' (the inpainting layout must come from its config)."""
    folder = tmp_path_factory.mktemp("ldm")
    ae_file = write_tiny_autoencoder(folder / "tiny-ae.safetensors")
    cfg = tiny_config(lr=1e-3)
    cfg.unet.context_dim = 32
    trainer = Trainer(cfg)
    gen, rng = torch.Generator().manual_seed(0), np.random.default_rng(0)
    latents = torch.randn(8, 4, 16, 16).half()
    for _ in range(2):
        trainer.train_step(make_batch(cfg, trainer.conditioner.tokenizer, latents, list(range(8)), 1.0, rng), gen)
    run = folder / "run"
    run.mkdir()
    save_run(trainer, rng, gen, {"config": cfg.to_dict(), "ae": str(ae_file), "scale": 0.75}, run / STATE)
    tl.export(str(run), str(folder / "tiny-base"), dtype="float32")
    return folder / "tiny-base.safetensors"


def test_export_writes_the_original_layout_and_the_explicit_inpainting_convention(exported):
    from safetensors import safe_open

    from engine.models.loader import load_checkpoint

    with safe_open(str(exported), "pt") as f:
        keys = list(f.keys())
    for prefix in ("model.diffusion_model.", "cond_stage_model.", "first_stage_model."):
        assert any(k.startswith(prefix) for k in keys), prefix
    card = json.loads(exported.with_suffix(".json").read_text())
    cond = card["checkpoint_config"]["conditioner"]
    assert cond["kind"] == "tokens" and cond["params"]["inpaint_convention"] == "kiln"
    loaded = load_checkpoint(exported, device="cpu")
    assert loaded.config.diffusion.conditioning_key == "hybrid"
    assert loaded.config.diffusion.scale_factor == pytest.approx(0.75)
    assert loaded.first_stage.inpaint_convention == "kiln"
    assert loaded.config.diffusion.prediction == "v"  # the samplers read the model's output as v


def test_v_target_gives_back_the_clean_latent_and_the_noise():
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(3, 4, 8, 8, generator=g), torch.randn(3, 4, 8, 8, generator=g)
    a = torch.tensor([0.999, 0.3, 1e-4]).view(-1, 1, 1, 1)
    x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise
    v = training_target("v", x0, noise, a)
    torch.testing.assert_close(a.sqrt() * x_t - (1 - a).sqrt() * v, x0)
    torch.testing.assert_close((1 - a).sqrt() * x_t + a.sqrt() * v, noise)
    assert training_target("eps", x0, noise, a) is noise


def test_text_and_layout_graphs_run_through_the_real_nodes(exported):
    executor = engine_executor()
    image = run_image(executor, text_graph(str(exported), "a red circle on a white background", 3, steps=2))
    assert image.shape == (128, 128, 3) and image.dtype == np.uint8
    boxes = [{"label": "blue square", "box": [0.1, 0.1, 0.5, 0.5]}]
    image = run_image(executor, layout_graph(str(exported), boxes, 3, steps=2))
    assert image.shape == (128, 128, 3)


@pytest.mark.parametrize("refine", [0.0, 0.5])
def test_inpainting_graph_keeps_every_pixel_outside_the_mask(exported, tmp_path, refine):
    picture = world.render(world.make_scene(5), 128)
    path = tmp_path / "scene.png"
    write_png(str(path), picture)
    mask = np.zeros((128, 128), dtype=np.uint8)
    mask[30:70, 40:90] = 255
    executor = engine_executor()
    graph, target = inpaint_graph(str(exported), str(path), encode_png_b64(mask), 1, steps=2, feather=4, cfg=2.0,
                                     refine=refine, refine_steps=2)
    assert target == ("paste" if refine else "draft")
    result = executor.run(graph, targets=[target, "inpaint"])
    assert result.ok, result.error
    assert result.outputs["inpaint"]["conditioning"].meta["inpaint"] == "kiln"
    pasted = run_image(executor, graph, target=target)
    assert pasted.shape == (128, 128, 3)
    outside = mask == 0
    assert np.array_equal(pasted[outside], picture[outside])
    assert not np.array_equal(pasted[~outside], picture[~outside])  # the hole was regenerated
    if refine:
        draft = run_image(executor, graph, target="draft")
        assert np.array_equal(draft[outside], picture[outside])
        assert not np.array_equal(draft[~outside], pasted[~outside])  # the second pass reworked the hole


def test_evaluator_commands_measure_the_base_model(exported, capsys):
    from training import evaluate

    assert evaluate.main(["inpainting", "--model", str(exported), "--n", "1", "--steps", "2", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["metric"] == "inpainting" and result["psnr_known"] == 100.0  # outside the hole: exact
    assert (result["steps"], result["refine"], result["refine_steps"]) == (1, REFINE_DENOISE, 1)  # as inpainting.json: 2 passes
    assert evaluate.main(["layout-to-image", "--model", str(exported), "--n", "1", "--steps", "2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["metric"] == "layout_to_image"
    assert evaluate.main(["text-to-image", "--model", str(exported), "--n", "1", "--steps", "2", "--json"]) == 0
    one_object, scene = json.loads(capsys.readouterr().out)
    assert (one_object["metric"], scene["metric"]) == ("one_object_text_to_image", "text_to_image")
    for result in (one_object, scene):  # as text_to_image.json samples; this model has no layout planner
        assert (result["sampler"], result["eta"]) == (f"{TEXT_SAMPLER} {TEXT_SCHEDULER}", TEXT_ETA)
        assert result["layout_planner"] is False


def test_export_of_a_missing_run_is_a_one_line_error(tmp_path, capsys):
    assert tl.main(["export", "--run", str(tmp_path / "nothing"), "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "no training state" in err and len(err.strip().splitlines()) == 1


# ---------------------------------------------------------------- going on from a shipped model (e.g. on a GPU)


def test_a_new_run_can_start_from_an_exported_model_and_train_on(exported, tmp_path):
    from safetensors.torch import load_file

    card = json.loads(exported.with_suffix(".json").read_text())
    ae_file = exported.parent / "tiny-ae.safetensors"
    run = tmp_path / "more"
    tl.main(["train", "--out", str(run), "--init-from", str(exported), "--ae", str(ae_file), "--scenes", "16", "--batch", "4",
             "--lr", "1e-4", "--steps", str(card["training"]["steps"] + 2), "--threads", "1"])
    state = torch.load(run / STATE, map_location="cpu", weights_only=True)
    assert state["step"] == card["training"]["steps"] + 2  # the step count goes on from the model's
    saved = json.loads((run / "config.json").read_text())
    assert saved["unet"] == card["training"]["config"]["unet"] and saved["batch"] == 4 and saved["lr"] == 1e-4
    shipped = load_file(str(exported))
    key = next(k for k in shipped if k.endswith("out.2.weight"))
    moved = (state["weights"][key] - shipped[key].float()).abs().max()
    assert 0 < moved < 0.05  # trained on from those weights, not from a fresh initialisation
    assert (run / "loss.csv").read_text().startswith("time,step,loss")
    # the card counts the images the model saw before at its own batch size, then 2 steps of 4
    card_after = tl.export(str(run), str(tmp_path / "more-model"), dtype="float32")
    assert card_after["training"]["images_seen"] == card["training"]["images_seen"] + 2 * 4


def test_a_run_from_an_exported_model_can_add_position_features(exported, tmp_path, capsys):
    card = json.loads(exported.with_suffix(".json").read_text())
    ae_file = exported.parent / "tiny-ae.safetensors"
    common = ["--ae", str(ae_file), "--scenes", "16", "--batch", "4", "--threads", "1", "--lr", "1e-4",
              "--steps", str(card["training"]["steps"] + 3)]
    run = tmp_path / "placed"
    tl.main(["train", "--out", str(run), "--init-from", str(exported), "--unet", '{"position_features": 2}',
             "--position-lr-scale", "10", *common])
    state = torch.load(run / STATE, map_location="cpu", weights_only=True)
    added = [k for k in state["weights"] if k.endswith("pos_proj.weight")]
    assert added and all(state["weights"][k].abs().max() > 0 for k in added)  # learnt from zero
    saved = json.loads((run / "config.json").read_text())
    assert saved["unet"]["position_features"] == 2 and saved["position_lr_scale"] == 10
    assert [group["lr"] for group in state["opt"]["param_groups"]] == [1e-4, 1e-3]
    # the other way round, the file's extra tensors are refused by name
    placed = tmp_path / "placed-model"
    tl.export(str(run), str(placed), dtype="float32")
    capsys.readouterr()
    assert tl.main(["train", "--out", str(tmp_path / "back"), "--init-from", str(placed) + ".safetensors",
                    "--unet", '{"position_features": 0}', *common]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pos_proj" in err[0]


def test_training_state_is_kept_on_the_cpu_so_a_run_can_move_between_machines():
    from training.trainer import to_device

    trainer = Trainer(tiny_config())
    state = trainer.state()
    tensors = [*state["weights"].values(), *state["ema"].values()]
    assert all(t.device.type == "cpu" for t in tensors)
    batch = tl.Batch(torch.zeros(2, 4, 8, 8), torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 5, 8, 8))
    moved = to_device((batch, {"x": [torch.ones(1)]}, 3), torch.device("meta"))
    assert moved[0].latents.device.type == "meta" and moved[0].tokens.dtype == torch.long
    assert moved[1]["x"][0].device.type == "meta" and moved[2] == 3


def test_init_from_a_file_that_is_not_a_base_model_is_one_clear_line(tmp_path, capsys):
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"nope")
    assert tl.main(["train", "--out", str(tmp_path / "r"), "--init-from", str(junk), "--steps", "1",
                    "--threads", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--init-from" in err[0] and "junk.safetensors" in err[0]


def test_batches_from_scenes_made_once_equal_batches_that_remake_them():
    cfg = tiny_config(p_inpaint=0.5)
    tokenizer = Trainer(cfg).conditioner.tokenizer
    latents, seeds = torch.randn(12, 4, 8, 8).half(), list(range(100, 112))
    fresh = make_batch(cfg, tokenizer, latents, seeds, 1.0, np.random.default_rng(3))
    cached = make_batch(cfg, tokenizer, latents, seeds, 1.0, np.random.default_rng(3),
                        [world.make_scene(s) for s in seeds])
    assert torch.equal(fresh.tokens, cached.tokens) and torch.equal(fresh.concat, cached.concat)


def test_a_model_gaining_layout_regions_draws_the_same_until_they_learn(exported, tmp_path):
    from safetensors.torch import load_file

    from engine.models.loader import load_checkpoint

    card = json.loads(exported.with_suffix(".json").read_text())
    ae_file = exported.parent / "tiny-ae.safetensors"
    run = tmp_path / "regions"
    steps = card["training"]["steps"]
    tl.main(["train", "--out", str(run), "--init-from", str(exported), "--ae", str(ae_file), "--scenes", "16",
             "--batch", "4", "--threads", "1", "--regions", "--steps", str(steps)])
    saved = json.loads((run / "config.json").read_text())
    k = 1 + len(world.COLOURS) + len(world.SHAPES)
    assert saved["region_words"] == [*world.COLOURS, *world.SHAPES]
    assert saved["unet"]["in_channels"] == 9 + k and saved["diffusion"]["region_channels"] == k
    grown = tmp_path / "grown"
    tl.export(str(run), str(grown), dtype="float32")
    key = "model.diffusion_model.input_blocks.0.0.weight"
    before, after = load_file(str(exported))[key], load_file(str(grown) + ".safetensors")[key]
    assert torch.equal(after[:, :9], before) and after[:, 9:].abs().max() == 0
    # through the engine: the layout's regions reach the grown model, which still draws what it drew
    layout = [{"label": "red circle", "box": [0.1, 0.1, 0.5, 0.5]}]
    old, new = load_checkpoint(exported, device="cpu"), load_checkpoint(str(grown) + ".safetensors", device="cpu")
    cond_old, cond_new = old.conditioner.encode_layouts([layout]), new.conditioner.encode_layouts([layout])
    assert cond_old.regions is None and cond_new.regions.shape == (1, 1, 4 + k)
    x, t = torch.randn(1, 4, 16, 16), torch.tensor([500])
    assert torch.allclose(old.model.apply(x, t, cond_old), new.model.apply(x, t, cond_new), atol=1e-5)


def test_batches_paint_the_layouts_boxes_only_for_layout_conditioned_items():
    cfg = tiny_config().with_regions(tl.region_vocabulary())
    trainer = Trainer(cfg)
    tokenizer = trainer.conditioner.tokenizer
    batch = make_batch(cfg, tokenizer, torch.randn(20, 4, 16, 16).half(), list(range(20)), 1.0,
                       np.random.default_rng(3))
    regions = batch.concat[:, 5:]
    assert regions.shape[1] == cfg.region_channels == 10
    box_id = tokenizer.config.vocab_size - tokenizer.config.coord_bins  # coordinate tokens mean a layout
    for i in range(cfg.batch):
        is_layout = bool((batch.tokens[i] >= box_id).any())
        assert bool(regions[i].abs().max() > 0) == is_layout
        if is_layout:  # every painted cell lights one colour and one shape channel with the box
            lit = regions[i, 0] > 0
            assert torch.allclose(regions[i, 1:7].sum(0)[lit], regions[i, 0][lit])
            assert torch.allclose(regions[i, 7:].sum(0)[lit], regions[i, 0][lit])


def _two_object_scene() -> world.Scene:
    big = world.SceneObject("red", "square", "large", 0.5, (0.1, 0.25, 0.6, 0.75))
    small = world.SceneObject("blue", "circle", "small", 0.2, (0.7, 0.05, 0.9, 0.25))
    return world.Scene("white", (big, small), 0)


def test_inpainting_batches_can_ask_for_the_hidden_object_and_hide_half_of_it():
    cfg = tiny_config(p_inpaint=1.0, p_ask_object=1.0, p_half_object=1.0, batch=48)
    tokenizer = Trainer(cfg).conditioner.tokenizer
    scene = _two_object_scene()
    batch = make_batch(cfg, tokenizer, torch.randn(1, 4, 16, 16).half(), [0], 1.0, np.random.default_rng(5), [scene])
    asked = 0
    for obj in scene.objects:  # the large one spans 8 latent cells, more than a grown half of it covers
        phrases = {world.object_phrase(obj, size, place) for size in (True, False) for place in (True, False)}
        variants = [tokenizer.batch([tokenizer.encode_text(p)])[0] for p in phrases]
        x0, y0, x1, y1 = (round(v * 16) for v in obj.box)
        for i in range(cfg.batch):
            if not any(torch.equal(batch.tokens[i], v) for v in variants):
                continue
            asked += 1
            hole = batch.concat[i, 4] > 0
            assert hole[y0:y1, x0:x1].any()
            if obj.size == "large":  # only half of it is hidden
                assert not hole[y0:y1, x0:x1].all()
    assert asked >= 0.4 * cfg.batch  # 60 % of inpainting masks hide an object, each one asked for here


def test_the_inpainting_prompt_shares_are_checked_on_the_command_line(tmp_path, capsys):
    assert tl.main(["train", "--out", str(tmp_path / "run"), "--ask-object", "1.5", "--steps", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--ask-object" in err[0]
    assert tl.main(["train", "--out", str(tmp_path / "run"), "--text-share", "0.7", "--layout-share", "0.4",
                    "--steps", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--text-share 0.7 and --layout-share 0.4 add up to more than 1" in err[0]


def test_a_new_run_can_give_more_of_its_batches_to_captions():
    """Layout was past its goal while captions were not: a GPU session can shift the batch towards text."""
    args = tl._parser().parse_args(["train", "--text-share", "0.6", "--layout-share", "0.25"])
    cfg = tl._with_share_flags(tiny_config(batch=400), args)
    assert (cfg.p_text, cfg.p_layout) == (0.6, 0.25)
    tokenizer = Trainer(cfg).conditioner.tokenizer
    batch = make_batch(cfg, tokenizer, torch.randn(20, 4, 8, 8).half(), list(range(20)), 1.0,
                       np.random.default_rng(2))
    second = batch.tokens[:, 1]  # after BOS: LAYOUT for a layout, EOS for the empty prompt, else a word
    assert 0.18 < float((second == LAYOUT).float().mean()) < 0.32
    assert 0.52 < float(((second != LAYOUT) & (second != EOS)).float().mean()) < 0.68
    unchanged = tl._with_share_flags(tiny_config(), tl._parser().parse_args(["train"]))
    assert (unchanged.p_text, unchanged.p_layout) == (LdmTrainConfig.p_text, LdmTrainConfig.p_layout)
