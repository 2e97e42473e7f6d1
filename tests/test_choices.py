"""The model-file choice list: one provider, held by the registry, gives the menu its names and names
the one file that the loader opens and the cache hashes."""
from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import pytest

from engine import executor as executor_module
from engine.cache import file_identity
from engine.choices import CHECKPOINTS
from engine.executor import Executor
from engine.graph import Graph, Node
from engine.spec import EngineSettings, NodeSpec, Output, Param, ParamType, SocketType
from nodes import build_registry
from nodes.checkpoint_loader import resolve_checkpoint_path


def _unet_file(path: Path, payload: bytes = b"\x00" * 8) -> None:
    """A safetensors file whose header names a UNet weight: what the list counts as a checkpoint."""
    header = json.dumps({"model.diffusion_model.out.weight": {"dtype": "F32", "shape": [2],
                                                               "data_offsets": [0, len(payload)]}}).encode()
    path.write_bytes(struct.pack("<Q", len(header)) + header + payload)


@pytest.fixture
def models(tmp_path) -> Path:
    folder = tmp_path / "models"
    folder.mkdir()
    return folder


def test_a_checkpoint_added_to_a_model_folder_is_listed_and_names_the_file_the_loader_opens(models, tmp_path):
    registry = build_registry()
    settings = EngineSettings(model_dirs=(str(models),))
    assert "mine.safetensors" not in registry.choices.list(CHECKPOINTS, settings)
    _unet_file(models / "mine.safetensors")
    (models / "notes.txt").write_text("not a model")
    names = registry.choices.list(CHECKPOINTS, settings)
    assert names[0] == "kiln-shapes-base.safetensors"  # the built-in models first
    assert "mine.safetensors" in names and "notes.txt" not in names
    found = registry.choices.resolve(CHECKPOINTS, "mine.safetensors", settings)
    assert found == str(models / "mine.safetensors")
    assert resolve_checkpoint_path("mine.safetensors", settings) == found
    assert registry.choices.resolve(CHECKPOINTS, "gone.safetensors", settings) is None


def test_the_cache_hashes_the_file_the_list_names(models, tmp_path, monkeypatch):
    registry = build_registry()
    registry.register(NodeSpec(
        type="UsesCheckpoint", title="Uses Checkpoint", category="test", help="Names a checkpoint.",
        compute=lambda ctx, inputs, params: {"name": params["checkpoint"]}, output_node=True,
        outputs=(Output("name", SocketType.STRING),),
        params=(Param("checkpoint", ParamType.CHOICE, "", choices_from=CHECKPOINTS),)))
    settings = EngineSettings(cache_dir=str(tmp_path / "cache"), model_dirs=(str(models),))
    _unet_file(models / "mine.safetensors")
    hashed: list[str] = []
    monkeypatch.setattr(executor_module, "file_identity", lambda path: hashed.append(path) or file_identity(path))
    graph = Graph()
    graph.add_node(Node("use", "UsesCheckpoint", params={"checkpoint": "mine.safetensors"}))
    executor = Executor(registry, settings)
    assert executor.run(graph).nodes["use"].status == "ran"
    assert hashed == [registry.choices.resolve(CHECKPOINTS, "mine.safetensors", settings)]
    assert executor.run(graph).nodes["use"].status == "cached"
    _unet_file(models / "mine.safetensors", b"\x01" * 16)  # replaced by another model of the same name
    os.utime(models / "mine.safetensors", ns=(0, 10**18))
    assert executor.run(graph).nodes["use"].status == "ran"
