"""Every preset of the model zoo runs end to end: a tiny random checkpoint in the released file's key
layout (tests/zoo_support.py) goes through the real nodes and executor to a picture.

One graph per conditioning kind, built here (the example graphs in resources/graphs are made for the
built-in models). The full-size key layout of every preset is checked on the meta device by
tests/test_presets.py (test_preset_loads_the_real_layout_strictly_on_meta), not again here.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from toy_nodes import build_graph
from zoo_support import latent_levels, original_shapes, write_zoo_checkpoint

from engine.models.detect import architecture_signature, detect_config
from engine.models.inspect import inspect_checkpoint
from engine.models.presets import PRESET_NAMES, get_preset
from nodes import build_registry

# preset -> the graph that runs it (the name of a builder below)
GRAPH_OF = {
    "sd15": "text", "sd2-512": "text", "sd2-768-v": "text", "txt2img-f8-large": "text",
    "sd15-inpainting": "text_inpainting", "inpainting_big": "inpainting",
    "cin256-v2": "class", "celebahq256": "unconditional", "ffhq256": "unconditional",
    "lsun_beds256": "unconditional", "lsun_churches256": "unconditional",
    "layout2img-openimages256": "layout", "semantic_synthesis256": "semantic", "bsr_sr": "super_resolution",
}
STEPS = 2


def test_every_preset_has_a_graph():
    assert set(GRAPH_OF) == set(PRESET_NAMES) and set(GRAPH_OF.values()) == set(GRAPH_BUILDERS)


def test_an_empty_prompt_is_no_conditioning_for_models_without_text():
    """Unconditional and LDM-inpainting models need a positive for the sampler but have no text model."""
    from engine.errors import UserInputError
    from engine.models.conditioners import build_conditioner
    from engine.models.configs import ConditionerConfig
    from nodes.conditioning_nodes import TEXT_ENCODE

    for kind, key in (("none", None), ("masked_image", "concat")):
        conditioner = build_conditioner(ConditionerConfig(kind), key)
        empty = TEXT_ENCODE.compute(None, {"conditioner": conditioner}, {"text": " "})["conditioning"]
        assert empty.crossattn is None and empty.concat is None
        with pytest.raises(UserInputError, match="not text|takes no text"):
            TEXT_ENCODE.compute(None, {"conditioner": conditioner}, {"text": "a cat"})


@pytest.fixture(scope="module")
def executor(tmp_path_factory):
    from engine.cache import ResultCache
    from engine.executor import Executor
    from engine.spec import EngineSettings

    settings = EngineSettings(device="cpu", precision="fp32", output_dir=str(tmp_path_factory.mktemp("out")))
    return Executor(build_registry(), settings, cache=ResultCache.from_settings(settings, disk=False))


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    """name -> (path, reduced config) of the preset's tiny checkpoint, written once for the module."""
    written: dict = {}

    def checkpoint(name: str):
        if name not in written:
            written[name] = write_zoo_checkpoint(name, tmp_path_factory.mktemp(name))
        return written[name]

    return checkpoint


def _sampler(cfg: float = 1.0) -> tuple[str, dict]:
    return "Sampler", {"steps": STEPS, "cfg": cfg, "sampler": "euler", "scheduler": "karras", "seed": 3}


_DECODE = ["ckpt.model -> sampler.model", "ckpt.autoencoder -> decode.autoencoder", "sampler.latent -> decode.latent"]


def _empty_latent_graph(ckpt: str, side: int, positive: dict, links: list[str], cfg: float = 1.0):
    nodes = {"ckpt": ("CheckpointLoader", {"checkpoint": ckpt}), **positive, "sampler": _sampler(cfg),
             "latent": ("EmptyLatent", {"width": side, "height": side}), "decode": ("AutoencoderDecode", {})}
    return build_graph(nodes, [*links, *_DECODE, "ckpt.autoencoder -> latent.autoencoder",
                               "latent.latent -> sampler.latent"])


def text_graph(ckpt: str, side: int):
    encoders = {"prompt": ("TextEncode", {"text": "a red circle"}), "negative": ("TextEncode", {"text": ""})}
    return _empty_latent_graph(ckpt, side, encoders, [
        "ckpt.conditioner -> prompt.conditioner", "ckpt.conditioner -> negative.conditioner",
        "prompt.conditioning -> sampler.positive", "negative.conditioning -> sampler.negative"], cfg=2.0)


def class_graph(ckpt: str, side: int):
    encoders = {"label": ("ClassEncode", {"class_id": 7}), "null": ("ClassEncode", {"unconditional": True})}
    return _empty_latent_graph(ckpt, side, encoders, [
        "ckpt.conditioner -> label.conditioner", "ckpt.conditioner -> null.conditioner",
        "label.conditioning -> sampler.positive", "null.conditioning -> sampler.negative"], cfg=2.0)


def unconditional_graph(ckpt: str, side: int):
    return _empty_latent_graph(ckpt, side, {"prompt": ("TextEncode", {"text": ""})}, [
        "ckpt.conditioner -> prompt.conditioner", "prompt.conditioning -> sampler.positive"])


def layout_graph(ckpt: str, side: int):
    boxes = [{"label": "3", "box": [0.1, 0.1, 0.6, 0.5]}, {"label": "12", "box": [0.4, 0.5, 0.9, 0.9]}]
    return _empty_latent_graph(ckpt, side, {"boxes": ("LayoutEncode", {"boxes": boxes})}, [
        "ckpt.conditioner -> boxes.conditioner", "boxes.conditioning -> sampler.positive"])


def semantic_graph(ckpt: str, side: int):
    nodes = {"painter": ("SemanticPainter", {"width": side, "height": side, "num_classes": 182}),
             "semantic": ("SemanticEncode", {})}
    return _empty_latent_graph(ckpt, side, nodes, [
        "ckpt.conditioner -> semantic.conditioner", "painter.semantic -> semantic.semantic",
        "latent.latent -> semantic.latent", "semantic.conditioning -> sampler.positive"])


def _image_graph(ckpt: str, side: int, scale: int, extra: dict, links: list[str]):
    nodes = {"ckpt": ("CheckpointLoader", {"checkpoint": ckpt}), **extra, "sampler": _sampler(),
             "image": ("SolidImage", {"width": side // scale, "height": side // scale, "color": "#6080a0"}),
             "latent": ("EmptyLatentLike", {"scale": scale}), "decode": ("AutoencoderDecode", {})}
    return build_graph(nodes, [*links, *_DECODE, "image.image -> latent.image",
                               "ckpt.autoencoder -> latent.autoencoder", "latent.latent -> sampler.latent"])


def super_resolution_graph(ckpt: str, side: int):
    return _image_graph(ckpt, side, 4, {"low_res": ("SuperResolutionConditioning", {})}, [
        "ckpt.conditioner -> low_res.conditioner", "image.image -> low_res.image", "latent.latent -> low_res.latent",
        "low_res.conditioning -> sampler.positive"])


def _inpainting(ckpt: str, side: int, text: str):
    extra = {"prompt": ("TextEncode", {"text": text}), "mask": ("MaskPainter", {"invert": True}),
             "inpaint": ("InpaintConditioning", {})}
    return _image_graph(ckpt, side, 1, extra, [
        "ckpt.conditioner -> prompt.conditioner", "image.image -> mask.image",
        "prompt.conditioning -> inpaint.conditioning", "ckpt.autoencoder -> inpaint.autoencoder",
        "image.image -> inpaint.image",
        "mask.mask -> inpaint.mask", "inpaint.conditioning -> sampler.positive"])


def inpainting_graph(ckpt: str, side: int):
    return _inpainting(ckpt, side, "")


def text_inpainting_graph(ckpt: str, side: int):
    return _inpainting(ckpt, side, "a blue square")


GRAPH_BUILDERS = {"text": text_graph, "text_inpainting": text_inpainting_graph, "inpainting": inpainting_graph,
                  "class": class_graph, "unconditional": unconditional_graph, "layout": layout_graph,
                  "semantic": semantic_graph, "super_resolution": super_resolution_graph}


def picture_side(name: str) -> int:
    """The smallest side every UNet level and the first stage can halve, at least 32 pixels."""
    cfg = get_preset(name)
    return max(32, cfg.autoencoder.downsample_factor * 2 ** latent_levels(cfg.unet))


def run_to_picture(executor, graph) -> np.ndarray:
    from nodes.image_io import to_uint8_hwc

    result = executor.run(graph, targets=["decode"])
    assert result.ok, result.error
    pixels = result.outputs["decode"]["image"].pixels
    assert bool(pixels.isfinite().all())
    return np.stack(to_uint8_hwc(pixels))


@pytest.mark.parametrize("name", PRESET_NAMES)
def test_preset_runs_through_the_nodes_to_a_picture(name, executor, zoo):
    path, _ = zoo(name)
    side = picture_side(name)
    image = run_to_picture(executor, GRAPH_BUILDERS[GRAPH_OF[name]](os.fspath(path), side))
    assert image.shape == (1, side, side, 3)
    assert image.std() > 0.5, "a constant picture"


@pytest.mark.parametrize("name", PRESET_NAMES)
def test_inspect_and_shape_detection_name_the_architecture(name, zoo):
    path, cfg = zoo(name)
    info = inspect_checkpoint(os.fspath(path))
    assert info["strict"] and info["preset"] == name and info["config_source"] == "metadata"
    assert info["conditioning"] == {"mode": cfg.diffusion.conditioning_key or "unconditional",
                                    "conditioner": cfg.conditioner.kind}
    found = detect_config(original_shapes(cfg)).config  # the reduced widths match no preset: read by shape
    assert found.preset == "custom"
    assert (found.conditioner.kind, found.diffusion.conditioning_key) == \
        (cfg.conditioner.kind, cfg.diffusion.conditioning_key)
    assert architecture_signature(found) == architecture_signature(cfg)  # all that shapes determine


def test_the_shipped_unconditional_graph_runs_a_zoo_model_through_the_cli(zoo, tmp_path):
    """`main.py run resources/graphs/unconditional.json --set ckpt.checkpoint=...` with the FFHQ model."""
    from PIL import Image as PILImage

    from kiln.cli import main

    path, _ = zoo("ffhq256")
    graph = Path(__file__).resolve().parents[1] / "resources" / "graphs" / "unconditional.json"
    sets = [f"ckpt.checkpoint={path}", "latent.width=32", "latent.height=32", "latent.batch_size=1",
            "sampler.steps=2"]
    argv = ["run", str(graph), "--out", str(tmp_path / "out"), "--device", "cpu", "--no-disk-cache",
            "--threads", "1"]
    assert main([*argv, *[arg for item in sets for arg in ("--set", item)]]) == 0
    (png,) = (tmp_path / "out").glob("*.png")
    picture = np.asarray(PILImage.open(png).convert("RGB"))
    assert picture.shape == (32, 32, 3) and picture.std() > 0.5
