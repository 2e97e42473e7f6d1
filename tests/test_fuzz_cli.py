"""The outside world, through the real command-line process: mutated example graphs (validated, and run
at one step), and malformed model files (inspected, and loaded by a graph). Whatever comes in, the
answer is a clean exit code and short lines that name the file, node or param: never a traceback,
never an internal error.

KILN_FUZZ_CASES sets how many mutated graphs are validated (default 40) and KILN_FUZZ_SEED the session.
"""
from __future__ import annotations

import copy
import json
import os
import random
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).parents[1]
GRAPHS = sorted((ROOT / "resources" / "graphs").glob("*.json"))
CASES = int(os.environ.get("KILN_FUZZ_CASES", "40"))
SEED = int(os.environ.get("KILN_FUZZ_SEED", "11"))
CLEAN_EXITS = {0: "ok", 1: "a node failed", 2: "a user mistake"}
HOSTILE_VALUES: tuple[Any, ...] = (
    None, True, -1, 0, 2**70, -(2**70), 1e308, -1e-308, float("nan"), float("inf"), "", "x" * 5000,
    "a\x00b", "../../../../etc/passwd", "/dev/zero", "ünïcödé ✓", [], {}, [1, 2, 3], {"a": {"b": [None]}},
    "1; rm -rf /", "%s%s%s", "\n\r\t",
)


def _cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    return subprocess.run([sys.executable, "main.py", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout, check=False)


def _assert_clean(done: subprocess.CompletedProcess, what: str) -> None:
    out = done.stdout + done.stderr
    assert done.returncode in CLEAN_EXITS, f"{what}: exit {done.returncode} (internal error?)\n{out[-1500:]}"
    assert "Traceback" not in out, f"{what}: a traceback reached the user\n{out[-2000:]}"
    for line in done.stderr.splitlines():
        assert len(line) < 300, f"{what}: a message line of {len(line)} characters: {line[:200]}…"


# --- mutations of real graph files -------------------------------------------------------------------
def _nudge(value: Any, rng: random.Random) -> Any:
    """A plain value of the same type near the old one: what a person types."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return max(0, value + rng.choice([-8, -1, 1, 2, 8]))
    if isinstance(value, float):
        return round(value * rng.choice([0.0, 0.5, 1.5, 2.0]), 3)
    if isinstance(value, str) and " " in value:
        return rng.choice(["a red circle", "a small green square on a white background", "", "a cat"])
    return value


def _mutate(doc: dict, rng: random.Random, mild: bool = False) -> dict:
    """One random change; `mild` changes one param to a plain value, so that most such graphs still run."""
    doc = copy.deepcopy(doc)
    if mild:
        params = [(node["params"], name) for node in doc["nodes"].values() for name in node.get("params", {})]
        target, name = rng.choice(params)
        target[name] = _nudge(target[name], rng)
        return doc
    nodes = doc["nodes"] if isinstance(doc.get("nodes"), dict) else {}
    kind = rng.choice(["param", "param", "param", "type", "link", "drop_node", "drop_key", "field", "top"])
    whole = sorted(n for n, node in nodes.items() if isinstance(node, dict))
    node_id = rng.choice(whole) if whole else None
    if kind == "param" and node_id and isinstance(nodes[node_id].get("params"), dict) \
            and nodes[node_id]["params"]:
        name = rng.choice(sorted(nodes[node_id]["params"]))
        nodes[node_id]["params"][name] = rng.choice(HOSTILE_VALUES)
    elif kind == "type" and node_id:
        nodes[node_id]["type"] = rng.choice(["", "NoSuchNode", "x" * 3000, 5, None])
    elif kind == "link" and isinstance(doc.get("links"), list) and doc["links"] \
            and all(isinstance(link, dict) and link for link in doc["links"]):
        link = rng.choice(doc["links"])
        key = rng.choice(sorted(link))
        link[key] = rng.choice(["nowhere", "", None, 7, "x" * 400, node_id])
    elif kind == "drop_node" and node_id:
        del nodes[node_id]
    elif kind == "drop_key" and node_id:
        nodes[node_id].pop(rng.choice(sorted(nodes[node_id])), None)
    elif kind == "field" and node_id:
        nodes[node_id][rng.choice(["pos", "collapsed", "param_inputs", "title", "color"])] = \
            rng.choice(HOSTILE_VALUES)
    else:
        doc[rng.choice(["format", "version", "nodes", "links", "backdrops", "meta"])] = rng.choice(HOSTILE_VALUES)
    return doc


def _mutated_files(tmp_path: Path, count: int, seed: int, mild: bool = False) -> list[Path]:
    rng = random.Random(seed)
    files = []
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / "sample_scene.png").write_bytes((ROOT / "resources/graphs/sample_scene.png").read_bytes())
    for i in range(count):
        source = rng.choice(GRAPHS)
        doc = json.loads(source.read_text())
        for _ in range(1 if mild else rng.randint(1, 3)):
            doc = _mutate(doc, rng, mild)
        path = tmp_path / f"mutant_{i}_{source.stem}.json"
        text = json.dumps(doc, indent=1)  # NaN and Infinity written as Python writes them
        if rng.random() < 0.1 and not mild:
            text = text[: rng.randint(1, len(text))]  # a file cut short
        path.write_text(text)
        files.append(path)
    return files


def test_mutated_example_graphs_are_validated_cleanly(tmp_path):
    for path in _mutated_files(tmp_path, CASES, SEED):
        _assert_clean(_cli("validate", str(path), timeout=60), f"validate {path.name}")


def test_mutated_example_graphs_run_cleanly_at_one_step(tmp_path):
    rng = random.Random(SEED + 1)
    ran = 0
    files = _mutated_files(tmp_path / "mild", 4, SEED + 1, mild=True) + _mutated_files(tmp_path, 2, SEED + 2)
    for path in files:
        doc = json.loads(path.read_text()) if _parses(path) else None
        steps = [f"{n}.steps=1" for n, node in (doc or {}).get("nodes", {}).items()
                 if isinstance(node, dict) and isinstance(node.get("params"), dict) and "steps" in node["params"]]
        sets = [arg for s in steps for arg in ("--set", s)]
        done = _cli("run", str(path), *sets, "--out", str(tmp_path / f"out_{rng.randint(0, 9999)}"), timeout=300)
        _assert_clean(done, f"run {path.name}")
        ran += done.returncode == 0
    assert ran, "no mutated graph ran at all: the test exercises only refusals"


def _parses(path: Path) -> bool:
    try:
        return isinstance(json.loads(path.read_text()), dict)
    except (ValueError, RecursionError):
        return False


# --- malformed model files -----------------------------------------------------------------------------
def _safetensors(header: Any, body: bytes = b"") -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + body


MODEL_FILES: dict[str, bytes] = {
    "header_is_a_list.safetensors": _safetensors([1, 2, 3]),
    "header_is_a_number.safetensors": _safetensors(7),
    "string_offsets.safetensors": _safetensors({"w": {"dtype": "F32", "shape": [2], "data_offsets": ["0", "8"]}},
                                               b"\0" * 8),
    "config_not_json.safetensors": _safetensors({"__metadata__": {"kiln_config": "{not json"}}),
    "config_not_object.safetensors": _safetensors({"__metadata__": {"kiln_config": "[1, 2]"}}),
    "huge_header_length.safetensors": struct.pack("<Q", 2**62) + b"{}",
    "empty.safetensors": b"",
    "random.ckpt": bytes(random.Random(3).randrange(256) for _ in range(4096)),
}


@pytest.mark.parametrize("name", sorted(MODEL_FILES))
def test_malformed_model_files_are_inspected_cleanly(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(MODEL_FILES[name])
    done = _cli("inspect-model", str(path), timeout=120)
    _assert_clean(done, f"inspect-model {name}")
    assert done.returncode == 2 and name in done.stderr, done.stderr[-500:]


def test_a_malformed_model_file_in_a_graph_fails_at_its_node_naming_the_file(tmp_path):
    path = tmp_path / "header_is_a_list.safetensors"
    path.write_bytes(MODEL_FILES["header_is_a_list.safetensors"])
    done = _cli("run", str(ROOT / "resources/graphs/text_to_image.json"), "--set", f"ckpt.checkpoint={path}",
                "--set", "sampler.steps=1", "--out", str(tmp_path / "out"), timeout=300)
    _assert_clean(done, "run with a malformed checkpoint")
    assert done.returncode in (1, 2) and path.name in done.stderr, done.stderr[-500:]


@pytest.mark.parametrize("config", [{}, {"block_out_channels": [0]}, {"block_out_channels": "wide"},
                                    {"in_channels": "four", "block_out_channels": [32, 64]}])
def test_malformed_diffusers_folders_are_inspected_cleanly(tmp_path, config):
    folder = tmp_path / "model"
    for part in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        (folder / part).mkdir(parents=True)
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    (folder / "unet" / "config.json").write_text(json.dumps(config))
    (folder / "vae" / "config.json").write_text(json.dumps({"block_out_channels": []}))
    done = _cli("inspect-model", str(folder), timeout=120)
    _assert_clean(done, f"inspect-model diffusers folder with unet config {config}")
    assert done.returncode == 2, done.stdout[-500:] + done.stderr[-500:]
