"""The example graphs shipped in resources/graphs: they load, validate and reference only what Kiln ships."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engine import graph_file, validate
from engine.spec import ParamType
from nodes import build_registry

ROOT = Path(__file__).resolve().parents[1]
GRAPHS = ROOT / "resources" / "graphs"
EXAMPLES = ("text_to_image", "layout_to_image", "image_to_image", "inpainting", "unconditional",
            "semantic_to_image", "super_resolution", "default", "regional_prompts")
BUILT_IN_MODELS = {"kiln-shapes-base.safetensors", "kiln-shapes-sr.safetensors", "kiln-shapes-semantic.safetensors"}
REGISTRY = build_registry()


def load(name: str):
    return graph_file.load(GRAPHS / f"{name}.json")


def test_the_example_set_is_complete():
    assert {p.stem for p in GRAPHS.glob("*.json")} == set(EXAMPLES)


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_loads_and_validates_against_the_real_registry(name):
    graph = load(name)
    validate.check(graph, REGISTRY)
    assert graph.meta.get("description")
    assert any(node.type == "SaveImage" for node in graph)


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_nodes_do_not_overlap_and_flow_left_to_right(name):
    graph = load(name)
    places = {(node.pos[0], node.pos[1]) for node in graph}
    assert len(places) == len(graph.nodes)
    for link in graph.links:  # a link goes to a column further right, or wraps down to a later row
        src, dst = graph.nodes[link.src].pos, graph.nodes[link.dst].pos
        assert src[0] <= dst[0] or dst[1] >= src[1] + 400, link


def test_examples_reference_only_shipped_files_and_the_three_built_in_models():
    models, files = set(), set()
    for name in EXAMPLES:
        for node in load(name):
            spec = REGISTRY.get(node.type)
            for param in spec.params:
                value = node.params.get(param.name)
                if node.type == "CheckpointLoader" and param.name == "checkpoint":
                    models.add(value)
                elif param.type is ParamType.PATH and value:
                    files.add(value)
    assert models == BUILT_IN_MODELS
    assert files == {"sample_scene.png"}  # relative to the graph files' folder, so they run from anywhere
    for path in files:
        assert not Path(path).is_absolute() and (ROOT / "resources" / "graphs" / path).is_file()


def test_graph_ids_users_and_issues_rely_on():
    expected = {"text_to_image": {"prompt", "plan", "negative", "latent", "sampler", "save"},
                "layout_to_image": {"layout", "negative", "latent", "sampler", "save"},
                "image_to_image": {"image", "prompt", "negative", "sampler", "save"},
                "inpainting": {"image", "mask", "prompt", "negative", "sampler", "save"},
                "unconditional": {"prompt", "latent", "sampler", "save"},
                "semantic_to_image": {"semantic", "latent", "sampler", "save"},
                "super_resolution": {"image", "sampler", "save"},
                "default": {"prompt", "plan", "negative", "latent", "sampler", "save"}}
    kinds = {"prompt": "TextEncode", "negative": "TextEncode", "layout": "LayoutEditor", "image": "LoadImage",
             "mask": "MaskPainter", "semantic": "SemanticPainter", "sampler": "Sampler", "latent": "EmptyLatent",
             "save": "SaveImage", "plan": "PlanLayout"}
    for name, ids in expected.items():
        graph = load(name)
        assert ids <= set(graph.nodes), name
        for nid in ids:
            assert graph.nodes[nid].type == kinds[nid], (name, nid)
    assert load("text_to_image").nodes["prompt"].params["text"]
    assert load("default").nodes["save"].params["prefix"]


def test_drawn_inputs_are_already_in_place(monkeypatch):
    """Layout boxes, the painted mask and the painted semantic map compute without any model."""
    from engine.cache import ResultCache
    from engine.executor import Executor
    from engine.spec import EngineSettings

    monkeypatch.chdir(ROOT)  # graph paths are relative to the repository
    settings = EngineSettings(device="cpu", precision="fp32")
    executor = Executor(REGISTRY, settings, cache=ResultCache.from_settings(settings, disk=False))
    result = executor.run(load("inpainting"), targets=["mask", "image"])
    assert result.ok, result.error
    image, mask = result.outputs["image"]["image"], result.outputs["mask"]["mask"].numpy()
    assert image.size == (128, 128) and mask.shape[-2:] == (128, 128)
    assert 0.03 < float((mask > 0.5).mean()) < 0.5
    result = executor.run(load("layout_to_image"), targets=["layout"])
    assert result.ok and len(result.outputs["layout"]["layout"]) == 3
    result = executor.run(load("semantic_to_image"), targets=["semantic"])
    assert result.ok, result.error
    labels = result.outputs["semantic"]["semantic"].labels.numpy()
    assert labels.shape[-2:] == (128, 128) and len(np.unique(labels)) == 4  # background + 3 objects


@pytest.mark.parametrize("name, sampler", [("super_resolution", "sampler"), ("default", "sr_sampler")])
def test_super_resolution_graphs_run_the_pipeline_the_evaluator_measures(name, sampler):
    from training.pipeline import SR_MATCH, SR_SAMPLER, SR_SCHEDULER, SR_STEPS

    graph = graph_file.load(GRAPHS / f"{name}.json")
    params = graph.nodes[sampler].params
    assert (params["sampler"], params["scheduler"], params["steps"]) == (SR_SAMPLER, SR_SCHEDULER, SR_STEPS)
    assert graph.nodes["sr_match"].params["iterations"] == SR_MATCH
    assert graph.incoming("save")["image"].src == "sr_match"


def test_the_evaluator_measures_the_example_graphs_themselves():
    """training.evaluate builds its graphs from the example files, changing only parameters."""
    from training import generators as g

    built = {"text_to_image": g.text_graph("m.safetensors", "a red circle", 3),
             "layout_to_image": g.layout_graph("m.safetensors", [{"label": "red circle", "box": [0, 0, 0.2, 0.2]}], 3),
             "inpainting": g.inpaint_graph("m.safetensors", "x.png", "", 3, 15, "a red circle", refine=0.5)[0],
             "semantic_to_image": g.semantic_graph("m.safetensors", "", 3, 25, 2.0, "euler", "karras"),
             "super_resolution": g.sr_graph("m.safetensors", "x.png", 3, 4, "euler", "karras",
                                            match_iterations=3)[0]}
    for name, graph in built.items():
        example = load(name)
        assert {n: node.type for n, node in graph.nodes.items()} == {n: node.type for n, node in example.nodes.items()}
        assert set(graph.links) == set(example.links), name
        checkpoint = "sr_ckpt" if name == "super_resolution" else "ckpt"
        assert graph.nodes[checkpoint].params["checkpoint"] == "m.safetensors"


def test_inpainting_example_runs_the_two_passes_the_evaluator_measures():
    from training.pipeline import REFINE_DENOISE, inpaint_steps

    graph = load("inpainting")
    first, refine = inpaint_steps(25)
    assert graph.nodes["sampler"].params["steps"] == first
    assert graph.nodes["refine"].params["steps"] == refine
    assert graph.nodes["refine"].params["denoise"] == REFINE_DENOISE
    feeds = {(link.src, link.dst) for link in graph.links}
    assert {("draft", "refine_latent"), ("draft", "refine_inpaint"), ("refine_decode", "paste"),
            ("paste", "save")} <= feeds  # the second pass starts from the first pass's pasted result


@pytest.mark.parametrize("name", ["text_to_image", "default"])
def test_text_graphs_plan_a_layout_from_the_prompt_before_sampling(name):
    graph = load(name)
    assert graph.incoming("plan")["conditioning"].src == "prompt"
    assert graph.incoming("plan")["conditioner"].src == "ckpt"
    assert graph.incoming("sampler")["positive"].src == "plan"
    assert graph.incoming("sampler")["negative"].src == "negative"  # the negative is not planned


@pytest.mark.parametrize("name", ["text_to_image", "default"])
def test_text_graphs_run_the_sampler_the_evaluator_measures(name):
    from training.evaluate import _parser
    from training.pipeline import TEXT_ETA, TEXT_SAMPLER, TEXT_SCHEDULER

    params = load(name).nodes["sampler"].params
    assert (params["sampler"], params["scheduler"], params["eta"]) == (TEXT_SAMPLER, TEXT_SCHEDULER, TEXT_ETA)
    assert (params["steps"], params["cfg"]) == (25, 3.0)
    measured = _parser().parse_args(["text-to-image", "--model", "m.safetensors"])
    assert (measured.sampler, measured.scheduler, measured.eta, measured.cfg) == (
        TEXT_SAMPLER, TEXT_SCHEDULER, TEXT_ETA, params["cfg"])


def test_the_evaluator_s_settings_go_through_the_command_line_s_checks():
    from engine.errors import KilnError
    from training.pipeline import example_graph

    first = example_graph("text_to_image", "m.safetensors", {"prompt.text": "a red circle"})
    assert load("text_to_image").nodes["prompt"].params["text"] != "a red circle"  # the file is untouched
    assert example_graph("text_to_image", "m.safetensors", {}).nodes["prompt"].params["text"] != "a red circle"
    assert first.nodes["prompt"].params["text"] == "a red circle"
    with pytest.raises(KilnError, match="no param 'etaa'"):
        example_graph("text_to_image", "m.safetensors", {"sampler.etaa": 0.5})
