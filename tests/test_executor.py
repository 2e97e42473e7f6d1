"""Executor: order, caching by key, cancel, failures, disabled nodes, models, model-free nodes."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image as PILImage
from toy_nodes import build_graph, make_toy_kit

from engine import events as E
from engine.errors import ValidationError
from engine.executor import Executor
from engine.graph import Link
from engine.model_store import ModelStore
from engine.spec import EngineSettings
from engine.values import Image
from nodes import build_registry

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def kit():
    return make_toy_kit()


@pytest.fixture
def settings(tmp_path):
    return EngineSettings(output_dir=str(tmp_path / "out"), cache_dir=str(tmp_path / "cache"))


@pytest.fixture
def ex(kit, settings):
    os.makedirs(settings.output_dir)
    return Executor(kit.registry, settings)


def statuses(result):
    return {nid: r.status for nid, r in result.nodes.items()}


def two_branch_graph(k2=3):
    return build_graph(
        {"c1": ("Const", {"value": 2}), "m1": ("Mul", {"k": 5}), "c2": ("Const", {"value": 7}),
         "m2": ("Mul", {"k": k2}), "add": ("Add", {}), "sink": ("Sink", {})},
        ["c1.value -> m1.x", "c2.value -> m2.x", "m1.value -> add.a", "m2.value -> add.b", "add.value -> sink.x"])


def test_nodes_run_in_topological_order_with_events_in_sequence(ex, kit):
    events = []
    result = ex.run(two_branch_graph(), on_event=events.append)
    assert result.ok and result.outputs["sink"]["value"] == 2 * 5 + 7 * 3
    pos = {nid: kit.calls.index(nid) for nid in kit.calls}
    for src, dst in [("c1", "m1"), ("c2", "m2"), ("m1", "add"), ("m2", "add"), ("add", "sink")]:
        assert pos[src] < pos[dst]
    kinds = [e.kind for e in events]
    assert kinds[0] == "run_started" and kinds[-1] == "run_finished"
    assert kinds.count("queued") == 6 and kinds.index("started") > max(i for i, k in enumerate(kinds) if k == "queued")
    for nid in kit.calls:
        started = next(i for i, e in enumerate(events) if isinstance(e, E.Started) and e.node_id == nid)
        finished = next(i for i, e in enumerate(events) if isinstance(e, E.Finished) and e.node_id == nid)
        assert started < finished
    assert events[-1] == E.RunFinished(True, False, result.seconds)


def test_param_edit_reruns_exactly_the_downstream_nodes(ex, kit):
    ex.run(two_branch_graph(k2=3))
    kit.calls.clear()
    result = ex.run(two_branch_graph(k2=4))
    assert sorted(kit.calls) == ["add", "m2", "sink"]
    assert statuses(result) == {"c1": "cached", "c2": "cached", "m1": "cached", "m2": "ran",
                                "add": "ran", "sink": "ran"}
    assert result.outputs["sink"]["value"] == 10 + 28
    kit.calls.clear()
    again = ex.run(two_branch_graph(k2=4))
    assert kit.calls == [] and set(statuses(again).values()) == {"cached"}
    assert again.outputs["sink"]["value"] == 38


def test_identical_subgraphs_share_results_across_ids(ex, kit):
    graph = build_graph(
        {"a1": ("Const", {"value": 3}), "a2": ("Mul", {"k": 2}), "b1": ("Const", {"value": 3}),
         "b2": ("Mul", {"k": 2}), "add": ("Add", {}), "sink": ("Sink", {})},
        ["a1.value -> a2.x", "b1.value -> b2.x", "a2.value -> add.a", "b2.value -> add.b", "add.value -> sink.x"])
    result = ex.run(graph)
    assert result.outputs["sink"]["value"] == 12
    assert sorted(kit.calls) == ["a1", "a2", "add", "sink"]
    assert statuses(result)["b1"] == "cached" and statuses(result)["b2"] == "cached"
    kit.calls.clear()
    renamed = build_graph({"x": ("Const", {"value": 3}), "y": ("Mul", {"k": 2}), "z": ("Sink", {})},
                          ["x.value -> y.x", "y.value -> z.x"])
    assert ex.run(renamed).outputs["z"]["value"] == 6
    assert kit.calls == ["z"]  # Const and Mul came from the cache although their ids differ


def test_edits_made_while_a_run_is_going_do_not_reach_it(ex):
    graph = two_branch_graph(k2=3)

    def edit(event):
        if isinstance(event, E.RunStarted):
            graph.nodes["m2"].params["k"] = 100  # as the GUI thread might
            graph.links.pop()
    assert ex.run(graph, on_event=edit).outputs["sink"]["value"] == 31
    graph.connect(Link("add", "value", "sink", "x"))
    assert ex.run(graph).outputs["sink"]["value"] == 710  # the edit counts from the next run


def test_only_what_the_targets_need_runs(ex, kit):
    result = ex.run(two_branch_graph(), targets=["m1"])
    assert sorted(kit.calls) == ["c1", "m1"] and set(result.nodes) == {"c1", "m1"}
    assert result.outputs == {"m1": {"value": 10}}
    with pytest.raises(ValidationError, match="nope"):
        ex.run(two_branch_graph(), targets=["nope"])


def test_default_targets_are_output_nodes_else_sinks(ex, kit):
    graph = build_graph({"c": ("Const", {}), "m": ("Mul", {}), "other": ("Const", {"value": 9})}, ["c.value -> m.x"])
    result = ex.run(graph)
    assert set(result.outputs) == {"m", "other"}  # no output node: every sink
    graph = two_branch_graph()
    graph.add_node(build_graph({"lone": ("Const", {"value": 4})}).nodes["lone"])
    assert set(ex.run(graph).outputs) == {"sink"}


def test_validation_error_is_raised_before_anything_runs(ex, kit):
    graph = build_graph({"c": ("Const", {}), "add": ("Add", {}), "sink": ("Sink", {})}, ["add.value -> sink.x"])
    with pytest.raises(ValidationError, match="add"):
        ex.run(graph)
    assert kit.calls == []


def test_cancel_from_another_thread_stops_within_one_step(ex, kit):
    graph = build_graph({"c": ("Const", {}), "loop": ("Loop", {"steps": 200, "delay": 0.005}),
                         "sink": ("Sink", {})}, ["c.value -> loop.x", "loop.value -> sink.x"])
    progress, cancelled_at = [], []

    def canceller():
        kit.loop_started.wait(10)
        time.sleep(0.03)
        cancelled_at.append(len(progress))
        ex.cancel()

    thread = threading.Thread(target=canceller)
    thread.start()
    result = ex.run(graph, on_event=lambda e: progress.append(e.step) if isinstance(e, E.Progress) else None)
    thread.join()
    assert result.cancelled and not result.ok and result.error is None
    assert len(progress) - cancelled_at[0] <= 1 and len(progress) < 200
    assert statuses(result) == {"c": "ran", "loop": "skipped", "sink": "skipped"}
    kit.calls.clear()
    rerun = ex.run(graph)  # the cancel does not stick and nothing half-done was cached
    assert rerun.ok and rerun.outputs["sink"]["value"] == 201 and kit.calls == ["loop", "sink"]


def test_cancel_between_nodes_keeps_finished_results(ex, kit):
    graph = two_branch_graph()
    result = ex.run(graph, on_event=lambda e: ex.cancel() if isinstance(e, E.Finished) else None)
    assert result.cancelled and list(statuses(result).values()).count("ran") == 1
    first = kit.calls[0]
    kit.calls.clear()
    rerun = ex.run(graph)
    assert rerun.ok and first not in kit.calls and statuses(rerun)[first] == "cached"


def test_unexpected_exception_fails_cleanly_and_the_next_run_is_correct(ex, kit):
    graph = build_graph({"c": ("Const", {"value": 6}), "f": ("Fail", {"mode": "runtime"}), "sink": ("Sink", {})},
                        ["c.value -> f.x", "f.value -> sink.x"])
    events = []
    result = ex.run(graph, on_event=events.append)
    assert not result.ok and statuses(result) == {"c": "ran", "f": "failed", "sink": "skipped"}
    assert result.error.node_id == "f" and result.error.message == "RuntimeError: boom"
    assert "Traceback" in result.error.details and isinstance(result.error.__cause__, RuntimeError)
    assert E.Failed("f", "RuntimeError: boom") in events
    again = ex.run(graph)  # a failure is never served from the cache
    assert not again.ok and statuses(again)["c"] == "cached"
    graph.nodes["f"].params["mode"] = "ok"
    kit.calls.clear()
    fixed = ex.run(graph)
    assert fixed.ok and fixed.outputs["sink"]["value"] == 6 and kit.calls == ["f", "sink"]


def test_user_input_error_names_node_and_param(ex):
    graph = build_graph({"c": ("Const", {}), "f": ("Fail", {"mode": "user"})}, ["c.value -> f.x"])
    error = ex.run(graph).error
    assert (error.node_id, error.param, error.message) == ("f", "mode", "mode 'user' is not allowed here")
    assert str(error) == "node 'f', param 'mode': mode 'user' is not allowed here"
    graph.nodes["f"].params["mode"] = "bad_return"
    assert "returned no 'value' output" in ex.run(graph).error.message


def test_disabled_node_passes_its_first_matching_input_through(ex, kit):
    graph = build_graph({"c": ("Const", {"value": 5}), "m": ("Mul", {"k": 3}), "sink": ("Sink", {})},
                        ["c.value -> m.x", "m.value -> sink.x"], disabled=("m",))
    result = ex.run(graph)
    assert result.ok and result.outputs["sink"]["value"] == 5
    assert statuses(result)["m"] == "skipped" and "m" not in kit.calls
    graph.nodes["m"].disabled = False
    assert ex.run(graph).outputs["sink"]["value"] == 15


def test_disabled_node_without_matching_input_fails_downstream_clearly(ex, kit):
    graph = build_graph({"t": ("Label", {}), "len": ("Length", {}), "m": ("Mul", {}), "sink": ("Sink", {})},
                        ["t.text -> len.s", "len.value -> m.x", "m.value -> sink.x"], disabled=("len",))
    result = ex.run(graph)
    assert not result.ok and result.error.node_id == "m"
    assert result.error.message == "node 'len' is disabled and has no input of type INT to pass through"
    assert kit.calls == []


def test_models_stay_loaded_and_reload_when_the_file_changes(ex, kit, tmp_path):
    model = tmp_path / "model.txt"
    model.write_text("7")
    graph = build_graph({"mu": ("ModelUser", {"path": str(model), "k": 2}), "sink": ("Sink", {})},
                        ["mu.value -> sink.x"])
    assert ex.run(graph).outputs["sink"]["value"] == 14
    graph.nodes["mu"].params["k"] = 3
    assert ex.run(graph).outputs["sink"]["value"] == 21
    assert kit.model_loads == [str(model)]
    model.write_text("10")
    st = model.stat()
    os.utime(model, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert ex.run(graph).outputs["sink"]["value"] == 30  # the PATH identity changed the key too
    assert len(kit.model_loads) == 2


def test_a_model_file_named_in_a_model_folder_is_part_of_the_key(kit, tmp_path):
    (tmp_path / "models").mkdir()
    model = tmp_path / "models" / "net.safetensors"
    model.write_bytes(b"v1")
    ex = Executor(kit.registry, EngineSettings(cache_dir=str(tmp_path / "c"), model_dirs=(str(model.parent),)))
    graph = build_graph({"pick": ("Pick", {"name": "net.safetensors"})})
    assert [statuses(ex.run(graph)), statuses(ex.run(graph))] == [{"pick": "ran"}, {"pick": "cached"}]
    model.write_bytes(b"v2 replaced")
    assert statuses(ex.run(graph)) == {"pick": "ran"}


def test_model_store_loads_once_under_concurrent_requests(tmp_path):
    path = tmp_path / "m.bin"
    path.write_bytes(b"x")
    store, loads = ModelStore(), []

    def loader():
        loads.append(1)
        time.sleep(0.05)
        return object()

    results = []
    threads = [threading.Thread(target=lambda: results.append(store.get("k", str(path), loader))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(loads) == 1 and len({id(r) for r in results}) == 1
    assert store.get("k", str(path), loader, extra=("cuda",)) is not results[0]
    store.clear()
    assert len(store) == 0


def test_side_effect_nodes_always_run_and_report_files(ex, kit):
    graph = build_graph({"c": ("Const", {"value": 4}), "rec": ("Record", {})}, ["c.value -> rec.x"])
    first, second = ex.run(graph), ex.run(graph)
    assert statuses(second) == {"c": "cached", "rec": "ran"}
    assert len(first.files) == 1 and len(second.files) == 1 and first.files != second.files
    assert Path(second.files[0]).read_text() == "4"


def test_model_evals_and_progress_are_reported(ex):
    graph = build_graph({"loop": ("Loop", {"steps": 4}), "sink": ("Sink", {})}, ["loop.value -> sink.x"])
    events = []
    result = ex.run(graph, on_event=events.append)
    assert result.model_evals == 4
    assert [(e.step, e.total) for e in events if isinstance(e, E.Progress)] == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert ex.run(graph).model_evals == 0


def test_engine_modules_do_not_import_torch_or_qt():
    code = ("import sys, engine.executor, kiln.cli, engine.cache, engine.model_store, engine.events, nodes;"
            "nodes.build_registry();"
            "bad = [m for m in ('torch', 'PySide6', 'transformers') if m in sys.modules];"
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=60)


# --- model-free nodes -------------------------------------------------------------
@pytest.fixture
def real(settings):
    os.makedirs(settings.output_dir)
    return Executor(build_registry(), settings)


def test_solid_invert_blend_scale_produce_the_expected_pixels(real):
    graph = build_graph(
        {"red": ("SolidImage", {"width": 16, "height": 8, "color": "#ff0000"}), "inv": ("ImageInvert", {}),
         "blend": ("ImageBlend", {"factor": 0.25}), "scale": ("ImageScale", {"factor": 0.5, "method": "area"}),
         "view": ("PreviewImage", {})},
        ["red.image -> inv.image", "red.image -> blend.a", "inv.image -> blend.b",
         "blend.image -> scale.image", "scale.image -> view.image"])
    image = real.run(graph).outputs["view"]["image"]
    assert isinstance(image, Image) and image.pixels.shape == (1, 3, 4, 8)
    expected = torch.tensor([0.75, 0.25, 0.25]).view(1, 3, 1, 1).expand(1, 3, 4, 8)
    assert torch.allclose(image.pixels, expected)


def test_bad_colour_names_node_and_param(real):
    graph = build_graph({"s": ("SolidImage", {"color": "teal"}), "view": ("PreviewImage", {})}, ["s.image -> view.image"])
    error = real.run(graph).error
    assert (error.node_id, error.param) == ("s", "color") and "teal" in error.message


def test_load_image_mask_is_one_where_transparent_and_file_changes_rerun(real, tmp_path):
    rgba = np.zeros((4, 6, 4), np.uint8)
    rgba[..., 1] = 200
    rgba[..., 3] = 255
    rgba[:, :3, 3] = 0  # left half transparent
    path = tmp_path / "in.png"
    PILImage.fromarray(rgba).save(path)
    graph = build_graph({"load": ("LoadImage", {"path": str(path)})})
    first = real.run(graph)
    mask = first.outputs["load"]["mask"]
    assert mask.shape == (1, 1, 4, 6) and mask[..., :3].eq(1).all() and mask[..., 3:].eq(0).all()
    assert torch.allclose(first.outputs["load"]["image"].pixels[0, 1], torch.full((4, 6), 200 / 255))
    assert statuses(real.run(graph)) == {"load": "cached"}
    rgba[..., 1] = 10
    PILImage.fromarray(rgba).save(path)
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    changed = real.run(graph)
    assert statuses(changed) == {"load": "ran"}
    assert torch.allclose(changed.outputs["load"]["image"].pixels[0, 1], torch.full((4, 6), 10 / 255))


def test_load_image_reports_missing_and_foreign_files(real, tmp_path):
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not an image")
    for path, text in [(tmp_path / "absent.png", "file not found"), (junk, "not an image")]:
        error = real.run(build_graph({"load": ("LoadImage", {"path": str(path)})})).error
        assert (error.node_id, error.param) == ("load", "path") and text in error.message


def test_save_image_numbers_files_without_overwriting_and_embeds_seed(real, settings):
    from engine.pngmeta import read_png_graph, read_png_info

    out = Path(settings.output_dir)
    (out / "shot_00003.png").write_bytes(b"keep me")
    graph = build_graph({"s": ("SolidImage", {"width": 8, "height": 8, "batch_size": 2}),
                         "save": ("SaveImage", {"prefix": "shot"})}, ["s.image -> save.image"])
    result = real.run(graph)
    assert [Path(p).name for p in result.files] == ["shot_00004.png", "shot_00005.png"]
    assert (out / "shot_00003.png").read_bytes() == b"keep me"
    assert read_png_graph(result.files[0])["nodes"]["save"]["params"]["prefix"] == "shot"
    assert read_png_info(result.files[1])["batch_index"] == 1 and "seed" not in read_png_info(result.files[1])
    assert [Path(p).name for p in real.run(graph).files] == ["shot_00006.png", "shot_00007.png"]


def test_save_image_records_each_items_seed(settings, tmp_path):
    from engine.pngmeta import read_png_info
    from engine.spec import NodeRegistry, NodeSpec, Output, SocketType
    from nodes import image_io

    registry = NodeRegistry()
    registry.register(NodeSpec("Seeded", "Seeded", "toy", "", lambda c, i, p: {
        "image": Image(torch.zeros(2, 3, 4, 4), seeds=(41, 42))}, outputs=(Output("image", SocketType.IMAGE),)))
    registry.register_all(image_io.SPECS)
    graph = build_graph({"s": ("Seeded", {}), "save": ("SaveImage", {"prefix": "sub/seeded"})},
                        ["s.image -> save.image"])
    result = Executor(registry, settings).run(graph)
    assert [read_png_info(p)["seed"] for p in result.files] == [41, 42]
    assert all(Path(p).parent.name == "sub" for p in result.files)
    graph.nodes["save"].params["prefix"] = "../escape"  # refused by validation, before anything runs
    with pytest.raises(ValidationError, match="param 'prefix': the prefix '../escape' is not usable"):
        Executor(registry, settings).run(graph)


# --- with the real model nodes ------------------------------------------------------
def write_tiny_class_checkpoint(path: Path) -> None:
    """A tiny class-conditional model (random weights, config embedded) for pipeline tests."""
    import json

    from safetensors.torch import save_file

    from engine.models import configs as C
    from engine.models.keymaps import AE_PREFIX, COND_PREFIX, UNET_PREFIX
    from engine.models.loader import build_modules

    cfg = C.CheckpointConfig(
        C.UNetConfig(model_channels=32, channel_mult=(1, 2), attention_resolutions=(2,), num_res_blocks=1,
                     num_heads=2, use_spatial_transformer=True, context_dim=8, legacy=False),
        C.AutoencoderConfig(ch=32, ch_mult=(1, 2), num_res_blocks=1), C.DiffusionConfig(),
        C.ConditionerConfig("class", {"n_classes": 4, "embed_dim": 8, "null_class": 3}))
    torch.manual_seed(0)
    unet, ae, cond = build_modules(cfg)
    sd = {p + k: v.contiguous() for p, m in ((UNET_PREFIX, unet), (AE_PREFIX, ae)) for k, v in m.state_dict().items()}
    sd.update({COND_PREFIX + cond.source_key(k)[0]: v.contiguous() for k, v in cond.state_dict().items()})
    save_file(sd, str(path), metadata={"kiln_config": json.dumps(cfg.to_dict())})


def class_pipeline(checkpoint: Path):
    return build_graph(
        {"ckpt": ("CheckpointLoader", {"checkpoint": str(checkpoint)}), "pos": ("ClassEncode", {"class_id": 1}),
         "neg": ("ClassEncode", {"unconditional": True}), "latent": ("EmptyLatent", {"width": 16, "height": 16}),
         "sampler": ("Sampler", {"steps": 3, "cfg": 2.0, "sampler": "euler", "seed": 5}),
         "decode": ("AutoencoderDecode", {}), "save": ("SaveImage", {"prefix": "pipe"})},
        ["ckpt.conditioner -> pos.conditioner", "ckpt.conditioner -> neg.conditioner", "ckpt.model -> sampler.model",
         "pos.conditioning -> sampler.positive", "neg.conditioning -> sampler.negative",
         "ckpt.autoencoder -> latent.autoencoder", "latent.latent -> sampler.latent",
         "ckpt.autoencoder -> decode.autoencoder", "sampler.latent -> decode.latent", "decode.image -> save.image"])


def test_model_pipeline_reruns_only_what_changed_and_never_reloads(settings, tmp_path):
    from engine.pngmeta import read_png_info

    checkpoint = tmp_path / "tiny.safetensors"
    write_tiny_class_checkpoint(checkpoint)
    os.makedirs(settings.output_dir)
    ex = Executor(build_registry(), settings)
    graph = class_pipeline(checkpoint)
    cold = ex.run(graph)
    assert cold.ok and cold.model_evals == 3 and set(statuses(cold).values()) == {"ran"}
    warm = ex.run(graph)
    assert warm.model_evals == 0 and [n for n, s in statuses(warm).items() if s == "ran"] == ["save"]
    graph.nodes["sampler"].params["seed"] = 6
    reseeded = ex.run(graph)
    assert reseeded.model_evals == 3 and ex.models.loads == 1
    assert sorted(n for n, s in statuses(reseeded).items() if s == "ran") == ["decode", "sampler", "save"]
    assert read_png_info(reseeded.files[0])["seed"] == 6
    assert not np.array_equal(np.asarray(PILImage.open(cold.files[0])), np.asarray(PILImage.open(reseeded.files[0])))
    fresh = Executor(build_registry(), settings)  # a new session: images and latents come from disk
    again = fresh.run(graph)
    assert again.model_evals == 0 and fresh.models.loads == 0 and statuses(again)["sampler"] == "cached"
