"""The command line: run (--set, --batch, --json, PNG graphs), validate, nodes, exit codes."""
from __future__ import annotations

import gc
import json
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage
from toy_nodes import build_graph, make_toy_kit

from engine import graph_file
from engine.pngmeta import read_png_graph
from kiln.cli import main

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def graph_path(tmp_path):
    graph = build_graph({"solid": ("SolidImage", {"width": 24, "height": 16, "color": "#102030"}),
                         "inv": ("ImageInvert", {}), "save": ("SaveImage", {"prefix": "pic"})},
                        ["solid.image -> inv.image", "inv.image -> save.image"], titles={"solid": "Background"})
    path = tmp_path / "graph.json"
    graph_file.save(graph, path)
    return path


def run_cli(tmp_path, *args, registry=None):
    return main(["run", *map(str, args), "--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache")],
                registry=registry)


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def pixels(path) -> np.ndarray:
    return np.asarray(PILImage.open(path).convert("RGB"))


def run_subprocess(*args, cwd=REPO):
    return subprocess.run([sys.executable, str(REPO / "main.py"), *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=120, check=False)


def test_second_process_finds_results_in_the_disk_cache_and_png_graphs_rerun(graph_path, tmp_path, capsys):
    common = ["--out", tmp_path / "out", "--cache-dir", tmp_path / "cache", "--json"]
    first = run_subprocess("run", graph_path, *common)
    assert first.returncode == 0, first.stderr
    summary = json.loads(first.stdout)
    assert set(summary) == {"outputs", "nodes", "model_evals", "seconds"}
    assert all(set(n) == {"status", "seconds"} for n in summary["nodes"].values())
    assert {n: v["status"] for n, v in summary["nodes"].items()} == {"solid": "ran", "inv": "ran", "save": "ran"}
    second = json.loads(run_subprocess("run", graph_path, *common).stdout)
    assert {n: v["status"] for n, v in second["nodes"].items()} == {"solid": "cached", "inv": "cached",
                                                                    "save": "ran"}
    assert second["model_evals"] == 0 and len(second["outputs"]) == 1
    png = Path(summary["outputs"][0])
    assert png.name == "pic_00001.png" and Path(second["outputs"][0]).name == "pic_00002.png"

    assert main(["run", str(png), "--out", str(tmp_path / "again"), "--no-disk-cache", "--json"]) == 0
    rerun_png = Path(json.loads(capsys.readouterr().out)["outputs"][0])
    assert rerun_png.parent == tmp_path / "again"
    assert np.array_equal(pixels(rerun_png), pixels(png))
    assert read_png_graph(rerun_png) == read_png_graph(png)


def test_run_without_torch_when_the_graph_does_not_need_it(tmp_path):
    path = tmp_path / "ints.json"
    graph_file.save(build_graph({"n": ("Integer", {"value": 3})}), path)
    code = (f"import sys; from kiln.cli import main; rc = main(['run', {str(path)!r}, '--no-disk-cache']);"
            "assert rc == 0, rc; assert 'torch' not in sys.modules and 'PySide6' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=60)


def test_a_run_pauses_the_garbage_collector_only_while_it_runs(graph_path, tmp_path, capsys):
    assert run_cli(tmp_path, graph_path, "--json") == 0
    assert gc.isenabled()
    gc.disable()
    try:
        assert run_cli(tmp_path, graph_path, "--json") == 0
        assert not gc.isenabled()  # the caller's choice is kept
    finally:
        gc.enable()


def test_set_by_id_and_by_title_with_json_and_text_values(graph_path, tmp_path, capsys):
    rc = run_cli(tmp_path, graph_path, "--set", "Background.width=12", "--set", "solid.color=#00ff00",
                 "--set", "Save Image.prefix=123", "--json")
    assert rc == 0
    (path,) = json.loads(capsys.readouterr().out)["outputs"]
    assert Path(path).name == "123_00001.png"  # a text param keeps "123" as text
    image = pixels(path)
    assert image.shape == (16, 12, 3) and (image == [255, 0, 255]).all()  # inverted green
    embedded = read_png_graph(path)["nodes"]
    assert embedded["solid"]["params"]["width"] == 12 and embedded["save"]["params"]["prefix"] == "123"


@pytest.mark.parametrize("item, expected", [
    ("nobody.width=3", "no node with id or title 'nobody'"),
    ("solid.depth=3", "node 'solid' (SolidImage) has no param 'depth'"),
    ("solid.width", "expected NODE.PARAM=VALUE"),
    ("solid.width=\"wide\"", "node 'solid', param 'width': expects an integer"),
])
def test_bad_set_exits_2_with_one_line_naming_node_and_param(graph_path, tmp_path, capsys, item, expected):
    assert run_cli(tmp_path, graph_path, "--set", item) == 2
    assert expected in one_line_error(capsys)
    assert not (tmp_path / "out").exists()


def test_ambiguous_title_is_refused(tmp_path, capsys):
    path = tmp_path / "two.json"
    graph_file.save(build_graph({"a": ("SolidImage", {}), "b": ("SolidImage", {})}), path)
    assert run_cli(tmp_path, path, "--set", "Solid Image.width=8") == 2
    assert "names 2 nodes (a, b)" in one_line_error(capsys)


def test_failed_node_exits_1_naming_it(graph_path, tmp_path, capsys):
    assert run_cli(tmp_path, graph_path, "--set", "solid.color=nope", "--json") == 1
    captured = capsys.readouterr()
    assert json.loads(captured.out)["nodes"]["solid"]["status"] == "failed"
    assert captured.err.strip() == "kiln: node 'solid', param 'color': 'nope' is not a colour like #ff8800"


def test_user_mistakes_exit_2_without_traceback(graph_path, tmp_path, capsys):
    assert run_cli(tmp_path, tmp_path / "missing.json") == 2
    assert "missing.json" in one_line_error(capsys)
    broken = build_graph({"inv": ("ImageInvert", {}), "save": ("SaveImage", {})}, ["inv.image -> save.image"])
    graph_file.save(broken, tmp_path / "broken.json")
    assert run_cli(tmp_path, tmp_path / "broken.json") == 2
    assert "node 'inv'" in one_line_error(capsys)
    assert main(["run", str(graph_path), "--frobnicate"]) == 2
    assert "--frobnicate" in one_line_error(capsys)
    assert main(["run", str(graph_path), "--device", "gpu"]) == 2
    assert "'gpu' is not auto, cpu, cuda, cuda:N or mps" in one_line_error(capsys)
    assert main(["run", str(graph_path), "--threads", "-2"]) == 2
    assert "'-2' is not a thread count" in one_line_error(capsys)


def test_batch_runs_once_per_line_reusing_the_cache(graph_path, tmp_path, capsys):
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text('{"solid.color": "#ff0000"}\n\n{"Background.color": "#0000ff"}\n{"solid.color": "#ff0000"}\n')
    rc = main(["run", str(graph_path), "--batch", str(jobs), "--out", str(tmp_path / "out"), "--no-disk-cache",
               "--json"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert set(summary) == {"jobs", "seconds"} and [j["index"] for j in summary["jobs"]] == [0, 1, 2]
    assert all(set(j) == {"index", "outputs", "nodes", "model_evals", "seconds"} for j in summary["jobs"])
    files = [j["outputs"][0] for j in summary["jobs"]]
    assert [tuple(pixels(f)[0, 0]) for f in files] == [(0, 255, 255), (255, 255, 0), (0, 255, 255)]
    assert summary["jobs"][2]["nodes"]["solid"]["status"] == "cached"  # same params as job 0


def test_batch_reuses_loaded_models(tmp_path, capsys):
    kit = make_toy_kit()
    (tmp_path / "m.txt").write_text("5")
    path = tmp_path / "model.json"
    graph_file.save(build_graph({"mu": ("ModelUser", {"path": str(tmp_path / "m.txt")}), "sink": ("Sink", {})},
                                ["mu.value -> sink.x"]), path)
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text("".join(f'{{"mu.k": {k}}}\n' for k in (1, 2, 3)))
    assert run_cli(tmp_path, path, "--batch", jobs, "--json", registry=kit.registry) == 0
    assert [j["nodes"]["mu"]["status"] for j in json.loads(capsys.readouterr().out)["jobs"]] == ["ran"] * 3
    assert kit.model_loads == [str(tmp_path / "m.txt")]


@pytest.mark.parametrize("line, expected", [
    ("{not json", "jobs.jsonl:2: not valid JSON"),
    ('["solid.width", 3]', "jobs.jsonl:2: expected an object"),
    ('{"ghost.width": 3}', "jobs.jsonl:2: no node with id or title 'ghost'"),
    ('{"solid.width": "big"}', "jobs.jsonl:2: node 'solid', param 'width'"),
])
def test_bad_batch_line_exits_2_with_its_line_number_before_anything_runs(graph_path, tmp_path, capsys,
                                                                           line, expected):
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text('{"solid.width": 8}\n' + line + "\n")
    assert run_cli(tmp_path, graph_path, "--batch", jobs) == 2
    assert expected in one_line_error(capsys)
    assert not (tmp_path / "out").exists()


def test_validate_and_nodes_commands(graph_path, tmp_path, capsys):
    assert main(["validate", str(graph_path)]) == 0
    assert "ok (3 nodes, 2 links)" in capsys.readouterr().out
    graph_file.save(build_graph({"save": ("SaveImage", {"prefix": 5})}), tmp_path / "bad.json")
    assert main(["validate", str(tmp_path / "bad.json")]) == 2
    captured = capsys.readouterr()
    assert "node 'save'" in captured.out and "2 problems" in captured.err
    assert main(["nodes", "--json"]) == 0
    described = {d["type"]: d for d in json.loads(capsys.readouterr().out)}
    assert {"SolidImage", "LoadImage", "SaveImage", "PreviewImage", "Seed"} <= set(described)
    assert [p["name"] for p in described["SaveImage"]["params"]] == ["prefix", "rounding"]
    assert main(["nodes"]) == 0 and "SaveImage" in capsys.readouterr().out


def test_no_command_opens_the_editor_with_the_given_options(monkeypatch, tmp_path, capsys):
    calls = []
    fake = types.ModuleType("app.main")
    fake.run_app = lambda graph, screenshot=None, run=False, size=None: calls.append((graph, screenshot, run, size))
    monkeypatch.setitem(sys.modules, "app.main", fake)
    assert main(["g.json", "--screenshot", "s.png", "--run", "--size", "800x600"]) == 0
    assert calls == [("g.json", "s.png", True, (800, 600))]
    assert main(["--size", "huge"]) == 2 and "WIDTHxHEIGHT" in one_line_error(capsys)
    assert main(["rnu"]) == 2 and "unknown command 'rnu'" in one_line_error(capsys)
    monkeypatch.setitem(sys.modules, "app.main", None)
    assert main([]) == 2 and "app.main is missing" in one_line_error(capsys)


def test_inspect_model_delegates_to_the_model_engineers_module(monkeypatch):
    calls = []
    fake = types.ModuleType("engine.models.inspect")
    fake.inspect_main = lambda path, as_json: calls.append((path, as_json)) or 0
    monkeypatch.setitem(sys.modules, "engine.models.inspect", fake)
    assert main(["inspect-model", "m.safetensors", "--json"]) == 0
    assert calls == [("m.safetensors", True)]


def test_help_exits_0(capsys):
    assert main(["--help"]) == 0 and "run, validate, nodes" in capsys.readouterr().out
    assert main(["run", "--help"]) == 0 and "--batch" in capsys.readouterr().out
