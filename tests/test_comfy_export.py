"""Kiln graphs written in ComfyUI's formats (engine.comfy.exporter), and read back unchanged."""
from __future__ import annotations

import json

import pytest
from comfy_support import REGISTRY, REPO, imported, run_main, with_defaults

from engine import graph_file
from engine.comfy.exporter import ExportRefused, export
from engine.graph import Backdrop, Graph, Link, Node


def _kiln_graph() -> Graph:
    graph = Graph()
    nodes = [Node("loader", "CheckpointLoader", params={"checkpoint": "kiln-shapes-base.safetensors"}, pos=(0, 0)),
             Node("prompt", "TextEncode", "Prompt", {"text": "a red circle"}, (300, 0), color="#335533"),
             Node("negative", "TextEncode", params={"text": ""}, pos=(300, 200), collapsed=True),
             Node("latent", "EmptyLatent", params={"width": 128, "height": 128}, pos=(300, 400)),
             Node("sampler", "Sampler", params={"seed": 3, "steps": 4, "convention": "comfyui"}, pos=(600, 0)),
             Node("decode", "AutoencoderDecode", pos=(900, 0)),
             Node("scale", "ImageScale", params={"factor": 1.5}, pos=(1100, 0), disabled=True),
             Node("save", "SaveImage", params={"prefix": "out"}, pos=(1300, 0))]
    for node in nodes:
        graph.add_node(node)
    graph.links = sorted([Link("loader", "conditioner", "prompt", "conditioner"),
                          Link("loader", "conditioner", "negative", "conditioner"),
                          Link("loader", "autoencoder", "latent", "autoencoder"),
                          Link("loader", "model", "sampler", "model"), Link("prompt", "conditioning", "sampler", "positive"),
                          Link("negative", "conditioning", "sampler", "negative"),
                          Link("latent", "latent", "sampler", "latent"), Link("sampler", "latent", "decode", "latent"),
                          Link("loader", "autoencoder", "decode", "autoencoder"), Link("decode", "image", "scale", "image"),
                          Link("scale", "image", "save", "image")])
    graph.backdrops["group_1"] = Backdrop("group_1", "Prompts", (280.0, -20.0, 400.0, 300.0), "#3f789e")
    graph.meta = {"author": "test"}
    return graph


def _again(document: dict) -> Graph:
    graph, _ = imported(json.loads(json.dumps(document)))
    return graph


def test_a_kiln_graph_round_trips_through_the_workflow_format():
    graph = _kiln_graph()
    document, notes = export(graph, REGISTRY, "comfyui-workflow")
    assert document["version"] == 0.4 and notes == []
    sampler = next(n for n in document["nodes"] if n["type"] == "KSampler")
    assert sampler["widgets_values"] == [3, "fixed", 4, 5.0, "dpmpp_2m", "karras", 1.0]
    assert sampler["properties"]["kiln_id"] == "sampler"
    assert next(n for n in document["nodes"] if n["type"] == "ImageScaleBy")["mode"] == 4
    assert with_defaults(_again(document)) == with_defaults(graph)


def test_the_api_format_round_trips_and_leaves_bypassed_nodes_out():
    graph, _ = imported("txt2img_api.json")
    document, _ = export(graph, REGISTRY, "comfyui")
    assert document["3"]["inputs"]["latent_image"] == ["5", 0] and document["3"]["class_type"] == "KSampler"
    assert with_defaults(_again(document)) == with_defaults(graph)
    kiln, _ = imported(export(_kiln_graph(), REGISTRY, "comfyui")[0])
    assert "scale" not in kiln.nodes and Link("decode", "image", "save", "image") in kiln.links


@pytest.mark.parametrize("name", ["all_nodes_ui.json", "structure_ui.json", "txt2img_ui.json", "hires_fix_api.json"])
def test_imported_workflows_export_and_import_to_the_same_graph(name):
    graph, _ = imported(name)
    graph.backdrops = {k: b for k, b in graph.backdrops.items() if k.startswith("group_")}  # notes come back as groups
    document, _ = export(graph, REGISTRY, "comfyui-workflow")
    assert with_defaults(_again(document)) == with_defaults(graph)


def test_kiln_values_feeding_params_are_written_into_the_widgets():
    graph = _kiln_graph()
    graph.add_node(Node("seed", "Seed", params={"value": 99}))
    graph.nodes["sampler"].param_inputs = ["seed"]
    graph.links.append(Link("seed", "seed", "sampler", "seed"))
    graph.nodes["sampler"].params["eta"] = 0.5
    document, notes = export(graph, REGISTRY, "comfyui")
    assert document["sampler"]["inputs"]["seed"] == 99 and "seed" not in document
    assert notes == ["node 'sampler' (Sampler): eta 0.5 has no ComfyUI counterpart; left out",
                     ("node 'scale' (ImageScale): is disabled: the API format has no bypass, so it is left out "
                      "and the nodes after it take its input")]


def test_nodes_without_a_counterpart_are_refused_by_name(tmp_path):
    graph = graph_file.load(REPO / "resources" / "graphs" / "text_to_image.json")
    with pytest.raises(ExportRefused, match="no ComfyUI counterpart: .*PlanLayout"):
        export(graph, REGISTRY, "comfyui")
    done = run_main("convert", REPO / "resources" / "graphs" / "text_to_image.json", tmp_path / "x.json",
                    "--to", "comfyui")
    assert done.returncode == 2 and "PlanLayout" in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_the_cli_writes_both_formats(tmp_path):
    source = tmp_path / "graph.json"
    graph_file.save(_kiln_graph(), source)
    for fmt in ("comfyui", "comfyui-workflow"):
        out = tmp_path / f"{fmt}.json"
        done = run_main("convert", source, out, "--to", fmt)
        assert done.returncode == 0, done.stderr
        back = run_main("validate", out)
        assert back.returncode == 0 and "converted from a ComfyUI" in back.stderr, back.stdout + back.stderr
