"""Model folder kinds (checkpoints, vae, loras, embeddings) in ComfyUI's models/ layout, and
`main.py run --models DIR`."""
from __future__ import annotations

import pytest

from engine.choices import (
    BUILTIN_MODELS_DIR,
    CHECKPOINTS,
    EMBEDDINGS,
    FOLDER_KINDS,
    LORAS,
    VAE,
    find_model_file,
    model_folders,
)
from engine.spec import EngineSettings


@pytest.fixture
def comfy_models(tmp_path):
    """A ComfyUI-style models/ folder: one file in each kind's subfolder."""
    root = tmp_path / "models"
    for kind, name in ((CHECKPOINTS, "sd.ckpt"), (VAE, "ae.safetensors"), (LORAS, "style.safetensors"),
                       (EMBEDDINGS, "tok.pt")):
        (root / kind).mkdir(parents=True)
        (root / kind / name).write_bytes(b"x")
    return root


def test_each_kind_searches_the_folders_and_their_subfolder_of_that_name(comfy_models, tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    settings = EngineSettings(model_dirs=(str(comfy_models), str(flat)))
    assert FOLDER_KINDS == ("checkpoints", "vae", "loras", "embeddings")
    for kind in FOLDER_KINDS:
        assert model_folders(settings, kind) == [BUILTIN_MODELS_DIR, comfy_models, comfy_models / kind, flat]
    assert model_folders(settings) == model_folders(settings, CHECKPOINTS)
    assert find_model_file("style.safetensors", settings, LORAS) == str(comfy_models / LORAS / "style.safetensors")
    assert find_model_file("style.safetensors", settings, VAE) is None  # each kind in its own subfolder
    assert find_model_file("ae.safetensors", settings, VAE) == str(comfy_models / VAE / "ae.safetensors")
    assert find_model_file("tok.pt", settings, EMBEDDINGS) == str(comfy_models / EMBEDDINGS / "tok.pt")
    with pytest.raises(ValueError, match="unknown model folder kind 'upscalers'"):
        model_folders(settings, "upscalers")


def test_the_checkpoint_list_reads_comfyuis_checkpoints_folder(comfy_models):
    from nodes import build_registry

    registry = build_registry()
    settings = EngineSettings(model_dirs=(str(comfy_models),))
    assert "sd.ckpt" in registry.choices.list(CHECKPOINTS, settings)
    assert registry.choices.resolve(CHECKPOINTS, "sd.ckpt", settings) == str(comfy_models / CHECKPOINTS / "sd.ckpt")


def test_run_models_option_sets_the_model_folders(comfy_models, tmp_path):
    from kiln import cli
    from nodes import build_registry

    args = cli._run_parser().parse_args(["graph.json", "--models", str(comfy_models), "--models", str(tmp_path),
                                         "--no-disk-cache"])
    assert args.models == [str(comfy_models), str(tmp_path)]
    executor = cli._make_executor(args, build_registry())
    assert executor.settings.model_dirs == (str(comfy_models), str(tmp_path))
    assert cli._run_parser().parse_args(["graph.json"]).models == []
