"""ComfyUI workflows (UI format, API format, PNG chunks) open as Kiln graphs (engine.comfy)."""
from __future__ import annotations

import copy
import json

import pytest
from comfy_support import FIXTURES, REGISTRY, imported, load_json, need_types, run_main
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image as PILImage
from PIL.PngImagePlugin import PngInfo

from engine import graph_file
from engine.comfy.importer import ComfyReport
from engine.errors import GraphFileError
from engine.graph import Link
from engine.validate import validate
from kiln.cli import main, parse_set

CLASSICS = ["txt2img_api.json", "img2img_api.json", "inpaint_api.json", "outpaint_api.json", "hires_fix_api.json",
            "latent_upscale_different_prompt_api.json", "area_composition_api.json", "embeddings_api.json",
            "lora_api.json", "lora_multiple_api.json", "gligen_api.json", "txt2img_ui.json", "all_nodes_ui.json",
            "structure_ui.json"]


def test_every_mapped_type_keeps_its_id_params_and_links():
    graph, report = imported("all_nodes_ui.json")
    types = {nid: n.type for nid, n in graph.nodes.items()}
    assert types["4"] == "CheckpointLoader" and types["32"] == "SamplerAdvanced" and types["40"] == "AutoencoderLoader"
    assert len(graph.nodes) == 40 and report.kind == "workflow"
    p = {nid: n.params for nid, n in graph.nodes.items()}
    assert p["3"] == {"seed": 42, "steps": 20, "cfg": 7.5, "sampler": "euler_ancestral", "scheduler": "karras",
                      "denoise": 1.0, "convention": "comfyui"}
    assert p["31"]["seed"] == 43 and p["31"]["steps"] == 12 and p["31"]["denoise"] == 0.55  # no control value
    assert p["32"] == {"add_noise": True, "seed": 44, "steps": 25, "cfg": 8.0, "sampler": "euler", "scheduler": "normal",
                       "start_at_step": 0, "end_at_step": 10, "return_with_leftover_noise": True, "convention": "comfyui"}
    assert p["5"] == {"width": 512, "height": 384, "batch_size": 2}
    assert p["15"] == {"method": "nearest-exact", "width": 640, "height": 480, "crop": "disabled"}
    assert p["16"] == {"method": "area", "factor": 1.5}
    assert p["13"] == {"tile_size": 256, "overlap": 32} and p["14"] == {"tile_size": 384}
    assert p["37"] == {"width": 0.5, "height": 0.5, "x": 0.25, "y": 0.25, "strength": 0.9}  # of 512x384
    assert p["41"] == {"lora_name": "lora_a.safetensors", "strength_model": 0.8, "strength_clip": 0.6}
    assert p["28"] == {"path": "mask.png", "channel": "alpha"} and p["11"] == {"path": "example.png"}
    assert p["27"] == {"left": 0, "top": 64, "right": 32, "bottom": 128, "feathering": 40}
    assert p["9"] == {"prefix": "kiln_test"} and p["39"] == {"stop_at_clip_layer": -2}
    links = set(graph.links)
    for link in [Link("4", "conditioner", "39", "conditioner"), Link("41", "conditioner", "6", "conditioner"),
                 Link("36", "conditioning", "3", "positive"), Link("37", "conditioning", "36", "conditioning_2"),
                 Link("27", "mask", "26", "mask"), Link("22", "latent", "23", "destination"),
                 Link("4", "autoencoder", "5", "autoencoder"), Link("40", "autoencoder", "8", "autoencoder")]:
        assert link in links


def test_looks_flags_and_groups_carry_over():
    graph, report = imported("all_nodes_ui.json")
    loader = graph.nodes["4"]
    assert (loader.title, loader.color, loader.pos) == ("My model", "#353", (26.0, 474.0))
    assert graph.nodes["7"].collapsed and graph.nodes["6"].title == ""
    assert graph.nodes["10"].disabled  # bypassed
    assert graph.nodes["17"].disabled and any("17 (ImageInvert): is muted" in n for n in report.notes)
    assert graph.backdrops["group_1"].title == "Prompts" and graph.backdrops["group_1"].rect == (0, 0, 800, 400)


def test_reroutes_primitives_and_notes_are_dissolved():
    graph, _ = imported("structure_ui.json")
    assert set(graph.nodes) == {"3", "4", "5", "6", "7", "8", "9"}
    assert Link("4", "conditioner", "6", "conditioner") in graph.links  # through two reroutes
    assert graph.nodes["3"].params["seed"] == 777 and graph.nodes["6"].params["text"] == "a green triangle"
    assert graph.nodes["5"].params["width"] == graph.nodes["5"].params["height"] == 128
    assert graph.nodes["3"].disabled and graph.nodes["9"].disabled
    notes = {b.title: b for b in graph.backdrops.values()}
    assert notes["Remember: the seed is shared"].color == "#653" and "## Hello\nmarkdown" in notes
    assert {"group_1", "group_2"} <= set(graph.backdrops)


def test_unplaceable_values_are_reported():
    data = load_json("txt2img_ui.json")
    data["nodes"][0]["widgets_values"] = ["nowhere.safetensors", "extra"]
    data["nodes"].append({"id": 20, "type": "ConditioningSetMask", "widgets_values": [0.5, "mask bounds"]})
    data["nodes"].append({"id": 21, "type": "KSamplerAdvanced", "widgets_values": ["maybe", 1, 2]})
    graph, report = imported(data)
    assert graph.nodes["20"].params == {"strength": 0.5} and "add_noise" not in graph.nodes["21"].params
    text = "\n".join(report.notes)
    assert "node 20 (ConditioningSetMask): set_cond_area 'mask bounds' has no Kiln counterpart; ignored" in text
    assert "node 21 (KSamplerAdvanced): add_noise cannot be placed ('maybe' is neither" in text
    assert "node 4 (CheckpointLoaderSimple): 1 value(s) after its known widgets ignored: ['extra']" in text
    assert [(i.node_id, i.param) for i in report.issues] == [("4", "checkpoint")]
    assert "'nowhere.safetensors'" in str(report.issues[0])


@pytest.mark.parametrize("name", CLASSICS)
def test_classic_workflows_convert_and_validate(name):
    graph, report = imported(name)
    assert not report.issues, report.issues
    need_types(graph)
    assert validate(graph, REGISTRY) == []


def test_the_classics_say_what_comfyui_says():
    area, _ = imported("area_composition_api.json")
    assert area.nodes["16"].params == {"width": round(384 / 704, 6), "height": 1.0, "x": round(320 / 704, 6),
                                       "y": 0.0, "strength": 0.8}
    emb, _ = imported("embeddings_api.json")
    assert emb.nodes["7"].params["text"].startswith("embedding:EasyNegative")
    lora, _ = imported("lora_multiple_api.json")
    assert [lora.nodes[i].type for i in ("10", "11", "12")] == ["LoraLoader", "LoraLoader", "LoraLoaderModelOnly"]
    assert Link("12", "model", "3", "model") in lora.links and Link("11", "conditioner", "6", "conditioner") in lora.links


def test_gligen_text_boxes_become_a_layout_and_regional_prompts():
    graph, report = imported("gligen_api.json")
    assert "10" not in graph.nodes and any("GLIGENLoader" in n and "dropped" in n for n in report.notes)
    regional = graph.nodes["12"]
    assert regional.type == "RegionalPrompts" and regional.params == {"strength": 1.0} and "11" not in graph.nodes
    layout = graph.nodes["12_layout"]
    assert layout.params["labels"] == "free text"
    assert layout.params["boxes"] == [
        {"label": "purple galaxy bottle", "box": [round(176 / 768, 6), round(272 / 768, 6), round(368 / 768, 6),
                                                  round(576 / 768, 6)]},
        {"label": "sun", "box": [round(416 / 768, 6), round(16 / 768, 6), round(560 / 768, 6), round(160 / 768, 6)]}]
    assert {Link("12_layout", "layout", "12", "layout"), Link("6", "conditioning", "12", "conditioning"),
            Link("4", "conditioner", "12", "conditioner"), Link("12", "conditioning", "3", "positive")} <= set(graph.links)


def test_missing_types_are_refused_naming_each_with_its_nodes(tmp_path):
    with pytest.raises(GraphFileError) as caught:
        graph_file.load(FIXTURES / "controlnet_api.json")
    assert str(caught.value).endswith("uses node types Kiln lacks: ControlNetLoader (node 12), ControlNetApply (node 14)")
    with pytest.raises(GraphFileError, match=r"ControlNetLoader \(node 12\), ControlNetApplyAdvanced \(nodes 14, 15\)"):
        graph_file.load(FIXTURES / "missing_types_ui.json")


def test_the_editor_opens_what_it_can_and_marks_the_rest():
    report = ComfyReport()
    graph = graph_file.load(FIXTURES / "missing_types_ui.json", comfy=report, lenient=True)
    assert report.missing == {"ControlNetLoader": ["12"], "ControlNetApplyAdvanced": ["14", "15"]}
    marker = graph.nodes["14"]
    assert marker.type == "comfyui:ControlNetApplyAdvanced" and marker.disabled and marker.title.startswith("Missing")
    assert not [lk for lk in graph.links if "14" in (lk.src, lk.dst) or "12" in (lk.src, lk.dst)]
    assert graph.nodes["3"].type == "Sampler"
    assert [i.kind for i in validate(graph, REGISTRY)] == ["unknown_type"] * 3


def _png(path, chunks):
    info = PngInfo()
    for key, text in chunks.items():
        info.add_text(key, text)
    PILImage.new("RGB", (4, 4)).save(path, pnginfo=info)


def test_pngs_carrying_a_workflow_or_a_prompt(tmp_path):
    workflow, prompt = load_json("txt2img_ui.json"), load_json("txt2img_api.json")
    _png(tmp_path / "both.png", {"workflow": json.dumps(workflow), "prompt": json.dumps(prompt)})
    _png(tmp_path / "prompt.png", {"prompt": json.dumps(prompt)})
    _png(tmp_path / "broken.png", {"workflow": "{not json", "prompt": json.dumps(prompt)})
    report = ComfyReport()
    assert graph_file.load(tmp_path / "both.png", comfy=report).nodes["3"].params["steps"] == 4
    assert report.kind == "workflow"
    for name in ("prompt.png", "broken.png"):
        graph_file.load(tmp_path / name, comfy=report)
        assert report.kind == "prompt"
    _png(tmp_path / "junk.png", {"workflow": "[1]"})
    with pytest.raises(GraphFileError, match="ComfyUI image whose graph cannot be read"):
        graph_file.load(tmp_path / "junk.png")


def test_set_addresses_comfyui_ids():
    graph, _ = imported("txt2img_api.json")
    override = parse_set("6.text=a blue square", graph, REGISTRY)
    assert (override.node_id, override.param, override.value) == ("6", "text", "a blue square")


def test_the_cli_converts_and_validates_in_a_real_process(tmp_path):
    out = tmp_path / "graph.json"
    done = run_main("convert", FIXTURES / "txt2img_ui.json", out)
    assert done.returncode == 0, done.stderr
    assert "converted from a ComfyUI workflow (7 nodes, 10 links)" in done.stderr
    assert graph_file.load(out).nodes["6"].params["text"] == "a red circle"
    checked = run_main("validate", FIXTURES / "txt2img_api.json")
    assert checked.returncode == 0 and "ok (7 nodes, 10 links)" in checked.stdout, checked.stderr
    refused = run_main("convert", FIXTURES / "controlnet_api.json", tmp_path / "x.json")
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1
    assert "ControlNetLoader (node 12), ControlNetApply (node 14)" in refused.stderr and not (tmp_path / "x.json").exists()


def test_validate_names_a_checkpoint_kiln_lacks(capsys):
    path = FIXTURES.parent / "comfyui_workflow.json"
    assert main(["validate", str(path)], registry=REGISTRY) == 2
    out = capsys.readouterr().out
    assert "node '1', param 'checkpoint': 'v1-5-pruned-emaonly.safetensors'" in out


# --- fuzz ------------------------------------------------------------------------------

_VALUES = st.one_of(st.none(), st.booleans(), st.integers(-3, 10**6), st.floats(allow_nan=False, allow_infinity=False),
                    st.text(max_size=8), st.lists(st.integers(-2, 60), max_size=6),
                    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3))


def _mutate(data, choices):
    """Replace or delete a value somewhere in the document, as chosen by `choices`."""
    target, path = data, []
    for pick in choices[:-1]:
        children = list(target.items()) if isinstance(target, dict) else list(enumerate(target)) \
            if isinstance(target, list) else []
        if not children:
            break
        key, child = children[pick % len(children)]
        path.append((target, key))
        target = child
    if path:
        parent, key = path[-1]
        if choices[-1] is None and isinstance(parent, dict):
            del parent[key]
        else:
            parent[key] = choices[-1]
    return data


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(["all_nodes_ui.json", "structure_ui.json", "gligen_api.json", "area_composition_api.json"]),
       picks=st.lists(st.integers(0, 500), min_size=1, max_size=6), value=_VALUES, lenient=st.booleans())
def test_fuzzed_workflows_give_one_clear_line(name, picks, value, lenient):
    data = _mutate(copy.deepcopy(_FUZZ_BASE[name]), [*picks, value])
    try:
        graph_file.graph_from_dict(data, "fuzz.json", ComfyReport(), lenient)
    except GraphFileError as exc:
        assert str(exc).startswith("fuzz.json: ") and "\n" not in str(exc)


_FUZZ_BASE = {name: load_json(name) for name in ["all_nodes_ui.json", "structure_ui.json", "gligen_api.json",
                                                 "area_composition_api.json"]}


def test_a_converted_text_to_image_workflow_runs_on_the_built_in_model_and_draws_its_prompt(tmp_path):
    """ComfyUI's own text-to-image example, its node ids addressed with --set, through a real process."""
    import numpy as np

    from training.analyser import analyse

    done = run_main("run", FIXTURES / "txt2img_api.json", "--set", "6.text=a large red circle", "--set", "7.text=",
                    "--set", "5.width=128", "--set", "5.height=128", "--set", "3.cfg=3", "--set", "3.seed=3",
                    "--out", tmp_path)
    assert done.returncode == 0, done.stderr
    assert "converted from a ComfyUI" in done.stderr
    (picture,) = tmp_path.glob("ComfyUI_*.png")
    labels = [o.label for o in analyse(np.asarray(PILImage.open(picture).convert("RGB"))).objects]
    assert labels == ["red circle"], labels
