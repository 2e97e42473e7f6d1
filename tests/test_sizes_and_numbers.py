"""Sizes the UNet cannot take, file prefixes no file system takes, NaN/Infinity params and
allocations that cannot fit: each refused before the graph runs (or as a node failure with
numbers), in one line naming the node and param, never with Python's or torch's text."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from toy_nodes import build_graph

from engine import graph_file, memory
from engine.errors import UserInputError
from engine.executor import Executor
from engine.spec import EngineSettings, NodeRegistry, NodeSpec, Output, Param, ParamType, SocketType
from nodes.latent_nodes import EMPTY_LATENT

REPO = Path(__file__).resolve().parents[1]
GRAPHS = REPO / "resources" / "graphs"


def cli(tmp_path, *args):
    done = subprocess.run([sys.executable, str(REPO / "main.py"), *map(str, args)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120, check=False)
    cli.stdout = done.stdout  # validate lists the problems on stdout
    return done.returncode, done.stderr.strip().splitlines()


def graph_with(tmp_path, name, changes):
    data = json.loads((GRAPHS / name).read_text())
    for (node, param), value in changes.items():
        data["nodes"][node]["params"][param] = value
    path = tmp_path / name
    path.write_text(json.dumps(data))  # json.dumps writes NaN and Infinity as such
    return path


def run_args(tmp_path):
    return ["--out", tmp_path / "out", "--cache-dir", tmp_path / "cache"]


# --- 4: sizes the UNet cannot take ----------------------------------------------------------

def test_validate_and_run_refuse_a_width_the_unet_cannot_halve(tmp_path):
    path = graph_with(tmp_path, "text_to_image.json", {("latent", "width"): 136})
    code, err = cli(tmp_path, "validate", path)
    assert code == 2
    assert "node 'latent', param 'width': width 136 is not a multiple of 32" in cli.stdout
    assert "128 or 160" in cli.stdout
    code, err = cli(tmp_path, "run", path, *run_args(tmp_path))
    assert code == 2 and len(err) == 1 and "multiple of 32" in err[0]
    assert not (tmp_path / "out").exists()  # refused before anything ran


def test_empty_latent_with_its_model_refuses_with_the_unet_multiple():
    model = SimpleNamespace(name="tiny", capabilities=SimpleNamespace(unet_multiple=4, latent_channels=4,
                                                                       latent_factor=8))
    with pytest.raises(UserInputError, match=r"width 136 is not a multiple of 32, which model 'tiny' "
                                             r"needs: use 128 or 160") as caught:
        EMPTY_LATENT.compute(None, {"model": model}, {"width": 136, "height": 128, "batch_size": 1})
    assert caught.value.param == "width"


def test_an_encoded_picture_of_an_unusable_size_is_refused_before_sampling(tmp_path):
    from PIL import Image

    Image.new("RGB", (136, 128), (120, 120, 120)).save(tmp_path / "p136.png")
    code, err = cli(tmp_path, "run", GRAPHS / "image_to_image.json", "--set", f"image.path={tmp_path / 'p136.png'}",
                    "--set", "sampler.steps=1", *run_args(tmp_path))
    assert code == 1
    assert "0 model evals" in err[0]
    assert "width 136" in err[1] and "multiple of 32" in err[1] and "128 or 160" in err[1]


# --- 5: save prefixes --------------------------------------------------------------------

@pytest.mark.parametrize("prefix, expected", [
    ("a" * 250, "over the file system's limit of 255"),
    ("ok/" + "b" * 256 + "/c", "a folder name would be 256 bytes"),
    ("bad\u0000name", "holds a NUL character"),
    ("../outside", "must be a name inside the output folder"),
])
def test_unusable_save_prefixes_are_refused_before_the_graph_runs(tmp_path, prefix, expected):
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text(json.dumps({"save.prefix": prefix}) + "\n")
    code, err = cli(tmp_path, "run", GRAPHS / "text_to_image.json", "--batch", jobs, *run_args(tmp_path))
    assert code == 2 and len(err) == 1
    assert "node 'save', param 'prefix'" in err[0] and expected in err[0]
    assert len(err[0]) < 300
    assert not (tmp_path / "out").exists()


# --- 6: NaN and Infinity ---------------------------------------------------------------------

@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_graph_file_with_a_non_finite_param_names_node_and_param(tmp_path, value):
    path = graph_with(tmp_path, "text_to_image.json", {("sampler", "cfg"): value})
    code, err = cli(tmp_path, "validate", path)
    assert code == 2 and len(err) == 1
    assert f"{path}: node 'sampler', param 'cfg' holds" in err[0] and "not a finite number" in err[0]


def test_set_and_batch_refuse_nan_and_infinity_naming_the_param(tmp_path):
    code, err = cli(tmp_path, "run", GRAPHS / "layout_to_image.json",
                    "--set", 'layout.boxes=[{"label": "x", "box": [NaN, 0, 1, 1]}]', *run_args(tmp_path))
    assert code == 2 and "node 'layout', param 'boxes'" in err[0] and "NaN" in err[0]
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text('{"seed.value": 1}\n{"sampler.cfg": Infinity}\n')
    code, err = cli(tmp_path, "run", GRAPHS / "text_to_image.json", "--batch", jobs, *run_args(tmp_path))
    assert code == 2 and len(err) == 1
    assert f"{jobs}:2: sampler.cfg" in err[0] and "not finite" in err[0]
    assert not (tmp_path / "out").exists()


def test_json_params_refuse_non_finite_numbers_anywhere_inside():
    boxes = Param("boxes", ParamType.JSON, [])
    assert "NaN or Infinity" in boxes.check([{"label": "a", "box": [0, 0, math.inf, 1]}])
    assert boxes.check([{"label": "a", "box": [0, 0, 0.5, 1]}]) is None


# --- 7: allocations that cannot fit ----------------------------------------------------------

def test_a_solid_image_too_large_for_memory_is_refused_with_the_numbers(tmp_path):
    available = memory.available_bytes()
    if available is not None and available > 100 * 2**30:  # the 48 GB picture would fit and really run
        pytest.skip("this machine has room for 48 GB, so the refusal cannot be shown here")
    graph = build_graph({"solid": ("SolidImage", {"width": 8192, "height": 8192, "batch_size": 64})})
    path = tmp_path / "big.json"
    graph_file.save(graph, path)
    code, err = cli(tmp_path, "run", path, *run_args(tmp_path))
    assert code == 1
    assert "node 'solid', param 'width': a picture of 8192x8192, batch 64 (3 channels) would need 48.0 GB" in err[1]
    assert "of memory is available" in err[1]


def test_check_fits_uses_the_available_memory_it_is_given():
    memory.check_fits("a picture", 64, 64, 1, 3, available=10**9)
    with pytest.raises(UserInputError, match=r"would need 768\.0 KB, but only 976\.6 KB"):
        memory.check_fits("a picture", 256, 256, 1, 3, available=10**6)


def test_an_allocation_failure_inside_a_node_becomes_a_message_with_its_size():
    registry = NodeRegistry()

    def alloc(ctx, inputs, params):
        raise RuntimeError("DefaultCPUAllocator: not enough memory: you tried to allocate 12345678 bytes.")

    registry.register(NodeSpec(type="Big", title="Big", category="toy", help="", compute=alloc,
                               outputs=(Output("value", SocketType.INT),), output_node=True,
                               params=(Param("width", ParamType.INT, 4096), Param("batch_size", ParamType.INT, 8))))
    graph = build_graph({"big": ("Big", {})})
    result = Executor(registry, EngineSettings()).run(graph)
    assert not result.ok
    message = str(result.error)
    assert message.startswith("node 'big': ran out of memory (width 4096, batch_size 8)")
    assert "available now" in message and "DefaultCPUAllocator" not in message
