"""Relative file paths in a graph belong to the graph file's folder, so shared graph folders run anywhere."""
from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
from PIL import Image as PILImage
from toy_nodes import build_graph

from engine import graph_file, paths
from kiln.cli import main
from nodes import build_registry


def write_picture(path, value: int) -> None:
    PILImage.fromarray(np.full((8, 12, 3), value, np.uint8)).save(path)


@pytest.fixture
def shared_folder(tmp_path):
    """A graph folder as an artist sends it: graph.json and the picture it loads, side by side."""
    folder = tmp_path / "shared"
    folder.mkdir()
    write_picture(folder / "scene.png", 200)
    graph = build_graph({"image": ("LoadImage", {"path": "scene.png"}), "save": ("SaveImage", {"prefix": "out"})},
                        ["image.image -> save.image"])
    graph_file.save(graph, folder / "graph.json")
    return folder


def run_from(folder, graph_path, tmp_path, *extra) -> list:
    os.chdir(folder)
    out = tmp_path / "out"
    code = main(["run", str(graph_path), "--out", str(out), "--cache-dir", str(tmp_path / "cache"), *extra])
    return code, sorted(out.glob("*.png")) if out.exists() else []


def first_pixel(path) -> int:
    return int(np.asarray(PILImage.open(path).convert("RGB"))[0, 0, 0])


def test_a_graph_runs_from_any_folder_reading_the_picture_beside_it(shared_folder, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    write_picture(elsewhere / "scene.png", 10)  # a same-named file where the user stands is not the graph's
    code, written = run_from(elsewhere, shared_folder / "graph.json", tmp_path)
    assert code == 0 and len(written) == 1
    assert first_pixel(written[0]) == 200


def test_paths_written_relative_to_where_the_graph_ran_still_work(tmp_path, monkeypatch):
    (tmp_path / "pictures").mkdir()
    write_picture(tmp_path / "pictures" / "old.png", 90)
    (tmp_path / "graphs").mkdir()
    graph = build_graph({"image": ("LoadImage", {"path": "pictures/old.png"}), "save": ("SaveImage", {})},
                        ["image.image -> save.image"])
    graph_file.save(graph, tmp_path / "graphs" / "old.json")
    monkeypatch.chdir(tmp_path)
    code, written = run_from(tmp_path, tmp_path / "graphs" / "old.json", tmp_path)
    assert code == 0 and first_pixel(written[0]) == 90


def test_a_missing_picture_is_named_where_the_graph_expects_it(shared_folder, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (shared_folder / "scene.png").unlink()
    code, _ = run_from(tmp_path, shared_folder / "graph.json", tmp_path)
    err = capsys.readouterr().err
    assert code == 1 and "'image'" in err and "'path'" in err
    assert os.path.join(str(shared_folder), "scene.png") in err and "file not found" in err


def test_a_path_given_with_set_is_read_from_the_current_folder(shared_folder, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    here = tmp_path / "here"
    here.mkdir()
    write_picture(here / "mine.png", 33)
    code, written = run_from(here, shared_folder / "graph.json", tmp_path, "--set", "image.path=mine.png")
    assert code == 0 and first_pixel(written[0]) == 33


def test_changing_the_picture_beside_the_graph_reruns_its_loader(shared_folder, tmp_path, monkeypatch):
    from engine.executor import Executor
    from engine.spec import EngineSettings

    monkeypatch.chdir(tmp_path)
    executor = Executor(build_registry(), EngineSettings(output_dir=str(tmp_path / "o"),
                                                         cache_dir=str(tmp_path / "c")))
    graph = graph_file.load(shared_folder / "graph.json")
    assert executor.run(graph, ["image"]).ok
    assert executor.run(graph, ["image"]).nodes["image"].status == "cached"
    write_picture(shared_folder / "scene.png", 120)
    stat = (shared_folder / "scene.png").stat()
    os.utime(shared_folder / "scene.png", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    again = executor.run(graph, ["image"])
    assert again.nodes["image"].status == "ran"
    assert round(float(again.outputs["image"]["image"].pixels[0, 0, 0, 0]) * 255) == 120


def test_moving_a_graph_to_another_folder_keeps_its_files(shared_folder, tmp_path):
    registry = build_registry()
    graph = graph_file.load(shared_folder / "graph.json")
    moved_to = tmp_path / "projects" / "deep"
    moved_to.mkdir(parents=True)
    changed = paths.rebase(graph, registry, str(moved_to))
    assert changed == [("image", "path")]
    assert graph.nodes["image"].params["path"] == os.path.join("..", "..", "shared", "scene.png")
    graph_file.save(graph, moved_to / "graph.json")
    reopened = graph_file.load(moved_to / "graph.json")
    assert os.path.samefile(paths.resolve(reopened.nodes["image"].params["path"], reopened.base_dir),
                            shared_folder / "scene.png")


def test_copying_the_whole_folder_keeps_the_copy_self_contained(shared_folder, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(shared_folder, copy)
    write_picture(copy / "scene.png", 55)
    graph = graph_file.load(copy / "graph.json")
    assert paths.resolve(graph.nodes["image"].params["path"], graph.base_dir) == str(copy / "scene.png")


def test_resolve_leaves_absolute_paths_and_unsaved_graphs_alone(tmp_path):
    absolute = str(tmp_path / "x.png")
    assert paths.resolve(absolute, "/somewhere") == absolute
    assert paths.resolve("x.png", None) == "x.png"
    assert paths.resolve("", str(tmp_path)) == ""


def test_a_picture_made_with_absolute_paths_reruns_from_anywhere(shared_folder, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # absolute paths are the user's choice; private relative ones are the default
    code, written = run_from(tmp_path, shared_folder / "graph.json", tmp_path, "--absolute-paths")
    assert code == 0
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    again, rerun = run_from(elsewhere, written[0], tmp_path)
    assert again == 0 and len(rerun) == 2 and first_pixel(rerun[-1]) == 200
    embedded = graph_file.load(written[0]).nodes["image"].params["path"]
    assert os.path.samefile(embedded, shared_folder / "scene.png")


def test_saving_makes_paths_to_files_inside_the_graph_folder_relative(shared_folder, tmp_path):
    registry = build_registry()
    outside = tmp_path / "outside.png"
    write_picture(outside, 1)
    graph = build_graph({"inside": ("LoadImage", {"path": str(shared_folder / "sub" / "deep.png")}),
                         "outside": ("LoadImage", {"path": str(outside)})})
    assert paths.rebase(graph, registry, str(shared_folder)) == [("inside", "path")]
    assert graph.nodes["inside"].params["path"] == os.path.join("sub", "deep.png")
    assert graph.nodes["outside"].params["path"] == str(outside)  # absolute elsewhere: kept as the user chose
    assert graph.base_dir == str(shared_folder)
