"""Hostile input: NUL bytes in file names, malformed model headers and configs, and files that are
huge, endless or not files at all. Each is refused with one line naming the file (and the node and
param, or the field), exit status 2 and no traceback."""
from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from toy_nodes import build_graph, make_toy_kit

from engine import executor as executor_module
from engine import pngmeta
from engine.cache import ResultCache
from engine.executor import Executor
from kiln.cli import main

REPO = Path(__file__).resolve().parents[1]
NUL_PATH = "bad\u0000name.png"


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "main.py", *args], check=False, cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)


def assert_refused(proc: subprocess.CompletedProcess, *names: str, code: int = 2) -> str:
    """Exit `code`, no traceback, the last stderr line short and naming each of `names`."""
    assert "Traceback" not in proc.stderr
    assert proc.returncode == code, proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert len(line) < 300
    for name in names:
        assert name in line, line
    return line


def image_graph(path_value: str) -> dict:
    return {"format": "kiln.graph", "version": 1, "links": [{"from": ["load", "image"], "to": ["show", "image"]}],
            "nodes": {"load": {"type": "LoadImage", "title": "", "params": {"path": path_value}, "pos": [0, 0]},
                      "show": {"type": "PreviewImage", "title": "", "params": {}, "pos": [200, 0]}},
            "backdrops": {}, "meta": {}}


# --- 1. NUL bytes in file names ----------------------------------------------------------------
def test_nul_in_a_graph_file_path_is_refused_by_validate_and_run(tmp_path):
    graph = tmp_path / "nul.json"
    graph.write_text(json.dumps(image_graph(NUL_PATH)))
    validated = cli("validate", str(graph))
    assert "Traceback" not in validated.stderr and validated.returncode == 2
    assert "node 'load', param 'path'" in validated.stdout and "NUL byte" in validated.stdout
    assert_refused(cli("run", str(graph), "--no-disk-cache"), "node 'load'", "param 'path'", "NUL byte")


def test_nul_via_set_and_via_a_png_graph_is_refused(tmp_path):
    ok = tmp_path / "ok.json"
    ok.write_text(json.dumps(image_graph("x.png")))
    assert_refused(cli("run", str(ok), "--no-disk-cache", "--set", 'load.path="a\\u0000b.png"'),
                   "node 'load'", "param 'path'", "NUL byte")
    png = tmp_path / "nul.png"
    pixels = np.zeros((8, 8, 3), dtype=np.uint8)
    pngmeta.write_png(png, pixels, image_graph(NUL_PATH), None)
    assert_refused(cli("run", str(png), "--no-disk-cache"), "node 'load'", "param 'path'", "NUL byte")


def test_nul_in_a_checkpoint_choice_is_refused_before_running(tmp_path, capsys):
    graph = tmp_path / "ckpt.json"
    graph.write_text(json.dumps({"format": "kiln.graph", "version": 1, "links": [], "backdrops": {}, "meta": {},
                                 "nodes": {"ckpt": {"type": "CheckpointLoader", "title": "", "pos": [0, 0],
                                                    "params": {"checkpoint": "m\u0000.safetensors"}}}}))
    assert main(["validate", str(graph)]) == 2
    out = capsys.readouterr().out
    assert "node 'ckpt', param 'checkpoint'" in out and "NUL byte" in out


def test_a_key_that_cannot_be_computed_fails_the_node_not_the_run(monkeypatch, tmp_path):
    kit = make_toy_kit()

    def refuse(path):
        raise OSError(36, "File name too long")

    monkeypatch.setattr(executor_module, "file_identity", refuse)
    graph = build_graph({"m": ("ModelUser", {"path": "model.bin"})})
    result = Executor(kit.registry, cache=ResultCache(disk_dir=None)).run(graph, ["m"])
    assert not result.ok and result.nodes["m"].status == "failed"
    assert str(result.error).startswith("node 'm'") and "File name too long" in str(result.error)


# --- 2. malformed model files --------------------------------------------------------------------
def _safetensors(path: Path, header) -> Path:
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * 64)
    return path


def _with_metadata(path: Path, kiln_config: str) -> Path:
    import torch
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(4)}, str(path), metadata={"kiln_config": kiln_config})
    return path


UNET = {"block_out_channels": [32, 64], "layers_per_block": 1, "cross_attention_dim": 32,
        "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"], "attention_head_dim": 8}
VAE = {"block_out_channels": [32, 64], "layers_per_block": 1, "latent_channels": 4}


def _diffusers(path: Path, unet: dict, vae: dict) -> Path:
    for part, config in (("unet", unet), ("vae", vae)):
        (path / part).mkdir(parents=True)
        (path / part / "config.json").write_text(json.dumps(config))
    return path


MALFORMED = {
    "header_list": (lambda p: _safetensors(p / "m.safetensors", [1, 2]), "m.safetensors", "not a JSON object"),
    "header_number": (lambda p: _safetensors(p / "m.safetensors", 7), "m.safetensors", "not a JSON object"),
    "string_offsets": (lambda p: _safetensors(p / "m.safetensors", {"w": {"dtype": "F32", "shape": [4],
                                                                           "data_offsets": ["0", "16"]}}),
                       "m.safetensors", "data_offsets"),
    "config_not_json": (lambda p: _with_metadata(p / "m.safetensors", "{not json"), "m.safetensors", "kiln_config"),
    "config_not_object": (lambda p: _with_metadata(p / "m.safetensors", "[1]"), "m.safetensors", "kiln_config"),
    "unet_empty": (lambda p: _diffusers(p / "d", {}, VAE), "unet/config.json", "'block_out_channels'"),
    "unet_zero": (lambda p: _diffusers(p / "d", {**UNET, "block_out_channels": [0]}, VAE),
                  "unet/config.json", "'block_out_channels'"),
    "unet_strings": (lambda p: _diffusers(p / "d", {**UNET, "in_channels": "4"}, VAE),
                     "unet/config.json", "'in_channels'"),
    "vae_empty": (lambda p: _diffusers(p / "d", UNET, {**VAE, "block_out_channels": []}),
                  "vae/config.json", "'block_out_channels'"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_inspect_model_refuses_malformed_files_naming_file_and_field(case, tmp_path, capsys):
    make, file_part, field = MALFORMED[case]
    target = make(tmp_path)
    assert main(["inspect-model", str(target)]) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1 and len(err) < 300
    assert file_part in err and field in err, err


def test_malformed_models_through_the_real_cli_and_a_graph(tmp_path):
    bad = _safetensors(tmp_path / "m.safetensors", [1, 2])
    assert_refused(cli("inspect-model", str(bad)), str(bad), "not a JSON object")
    folder = _diffusers(tmp_path / "d", {}, VAE)
    graph = tmp_path / "g.json"
    graph.write_text(json.dumps({"format": "kiln.graph", "version": 1, "links": [], "backdrops": {}, "meta": {},
                                 "nodes": {"ckpt": {"type": "CheckpointLoader", "title": "", "pos": [0, 0],
                                                    "params": {"checkpoint": str(folder)}}}}))
    proc = cli("run", str(graph), "--no-disk-cache")
    assert proc.returncode in (1, 2) and "Traceback" not in proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert "node 'ckpt'" in line and "unet/config.json" in line and "'block_out_channels'" in line


# --- 3. files read whole before their kind is known -------------------------------------------------
def test_dev_zero_a_fifo_and_a_folder_are_refused_at_once(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    for path, words in (("/dev/zero", "not a regular file"), (str(fifo), "not a regular file"),
                        (str(tmp_path), "is a folder")):
        assert_refused(cli("validate", path, timeout=20), path, words)


def test_huge_sparse_files_are_refused_without_reading_them(tmp_path):
    sparse = tmp_path / "huge.json"
    with open(sparse, "wb") as f:
        f.write(b'{"format": "kiln.graph"')
        f.truncate(3 * 1024**3)
    ckpt = tmp_path / "model.ckpt"
    with open(ckpt, "wb") as f:
        f.write(b"PK\x03\x04")
        f.truncate(3 * 1024**3)
    for path, words in ((sparse, "binary data"), (ckpt, "zip archive")):
        t0 = time.perf_counter()
        assert main(["validate", str(path)]) == 2
        assert time.perf_counter() - t0 < 0.5
    assert_refused(cli("validate", str(ckpt), timeout=20), str(ckpt), "zip archive")


def test_a_text_graph_over_the_cap_is_refused_by_size(tmp_path, capsys):
    big = tmp_path / "big.json"
    with open(big, "wb") as f:
        f.write(b"{" + b" " * (17 * 1024 * 1024) + b"}")
    assert main(["validate", str(big)]) == 2
    err = capsys.readouterr().err
    assert str(big) in err and "too large for a graph file" in err
