"""The paper's inpainting model (LDM inpainting_big) loads strictly, is named, and inpaints end to end.

Its `cond_stage_config: __is_first_stage__` makes the state dict hold every first-stage tensor
a second time under `cond_stage_model.` (185 keys in the real file). The checkpoints here are
random, with the real key layout at reduced width (UNet 32 channels, first stage 32).
"""
from __future__ import annotations

import base64
import io
import json
import types

import numpy as np
import pytest
import torch
from PIL import Image as PILImage
from safetensors.torch import save_file
from test_checkpoint_loading import original_state, random_modules
from test_presets import original_checkpoint
from toy_nodes import build_graph

from engine import graph_file
from engine.models.checkpoint import CheckpointError, DictSource
from engine.models.inspect import inspect_checkpoint
from engine.models.keymaps import AE_PREFIX, COND_PREFIX
from engine.models.loader import build_modules, check_shapes, load_checkpoint, plan_keys
from engine.models.presets import get_preset
from kiln.cli import main

SIZE, HOLE = 32, (8, 8, 24, 20)  # picture side; the hole's box (left, top, right, bottom)


def tiny_inpainting_config():
    """inpainting_big's structure (VQ f4 without attention, UNet in 7 / out 3, resblock up/down), narrower."""
    cfg = get_preset("inpainting_big")
    cfg.unet.model_channels = 32
    cfg.autoencoder.ch = 32
    cfg.autoencoder.n_embed = 64
    cfg.preset = "custom"
    return cfg


def with_first_stage_copy(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The state dict as LDM saves it: the first stage again under cond_stage_model. (cloned for safetensors)."""
    copies = {COND_PREFIX + k[len(AE_PREFIX):]: v.clone() for k, v in sd.items() if k.startswith(AE_PREFIX)}
    return {**sd, **copies}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("inpainting_big")
    cfg = tiny_inpainting_config()
    sd = with_first_stage_copy(original_state(*random_modules(cfg)))
    path = folder / "inpainting_big-tiny.safetensors"
    save_file(sd, str(path))
    bad = dict(sd)
    bad[COND_PREFIX + "decoder.conv_out.bias"] = sd[AE_PREFIX + "decoder.conv_out.bias"] + 1
    bad_path = folder / "mismatch.safetensors"
    save_file(bad, str(bad_path))
    return types.SimpleNamespace(path=path, bad_path=bad_path, sd=sd, folder=folder)


def full_size_shapes() -> dict[str, tuple[int, ...]]:
    shapes = original_checkpoint(get_preset("inpainting_big"))
    shapes.update({COND_PREFIX + k[len(AE_PREFIX):]: v for k, v in shapes.items() if k.startswith(AE_PREFIX)})
    return shapes


# ---------------------------------------------------------------- layout, detection, loading


def test_full_size_layout_is_detected_as_inpainting_big_and_plans_strictly_on_meta():
    from engine.models.detect import detect_config

    shapes = full_size_shapes()
    assert sum(k.startswith(COND_PREFIX) for k in shapes) == 185
    detected = detect_config(shapes, "last.ckpt")
    assert detected.config.preset == "inpainting_big" and detected.candidates == ["inpainting_big"]
    with torch.device("meta"):
        unet, ae, cond = build_modules(detected.config)
    plans, report = plan_keys(unet, ae, cond, shapes, use_ema=False)
    assert report["strict"] and report["first_stage_copies"] == 185, report["unexpected"][:3]
    check_shapes(plans, shapes, "last.ckpt")


def test_inspect_names_the_full_size_file_inpainting_big(tmp_path, monkeypatch):
    source = DictSource({k: torch.empty(v, device="meta") for k, v in full_size_shapes().items()})
    monkeypatch.setattr("engine.models.loader.open_source", lambda path: source)
    path = tmp_path / "last.ckpt"
    path.write_bytes(b"\x02\x00\x00\x00\x00\x00\x00\x00{}")
    info = inspect_checkpoint(str(path))
    assert info["strict"] is True and info["preset"] == "inpainting_big"
    assert info["autoencoder"]["kind"] == "vq" and info["autoencoder"]["downsampling_factor"] == 4
    assert info["unet"]["input_channels"] == 7 and info["unet"]["output_channels"] == 3
    assert info["conditioning"] == {"mode": "concat", "conditioner": "masked_image"}
    assert info["first_stage_copies"] == 185 and info["unexpected_keys"] == []


def test_inspect_model_command_reports_the_tiny_file_strict(tiny, capsys):
    assert main(["inspect-model", str(tiny.path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["strict"] is True and info["unexpected_keys"] == []
    assert info["autoencoder"]["kind"] == "vq" and info["unet"]["input_channels"] == 7
    assert info["conditioning"] == {"mode": "concat", "conditioner": "masked_image"}


def test_tiny_file_loads_strictly_with_the_copies_checked(tiny):
    loaded = load_checkpoint(tiny.path, device="cpu")
    assert loaded.report["strict"] and loaded.report["first_stage_copies"] == 185
    assert "checked equal" in loaded.report["notes"][0]
    assert loaded.model.capabilities.inpaint_convention == "ldm"
    weight = loaded.first_stage.model.state_dict()["decoder.conv_out.weight"]
    assert torch.equal(weight, tiny.sd[AE_PREFIX + "decoder.conv_out.weight"])


def test_a_copy_that_differs_from_the_first_stage_is_named(tiny):
    with pytest.raises(CheckpointError, match=r"cond_stage_model\.decoder\.conv_out\.bias"):
        load_checkpoint(tiny.bad_path, device="cpu")


# ---------------------------------------------------------------- the paper's inpaint.py, as a graph


def _picture(path) -> np.ndarray:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    PILImage.fromarray(pixels).save(path)
    return pixels


def _mask_png() -> str:
    mask = PILImage.new("L", (SIZE, SIZE), 0)
    mask.paste(255, HOLE)
    buffer = io.BytesIO()
    mask.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def inpainting_graph(picture: str):
    """Load Image, Mask Painter, Inpaint Conditioning (no prompt), Sampler, Decode, Paste, Save."""
    nodes = {"ckpt": ("CheckpointLoader", {"checkpoint": "set-on-the-command-line"}),
             "image": ("LoadImage", {"path": picture}), "mask": ("MaskPainter", {"mask": _mask_png()}),
             "inpaint": ("InpaintConditioning", {"convention": "auto"}),
             "latent": ("EmptyLatentLike", {"scale": 1}),
             "sampler": ("Sampler", {"steps": 2, "cfg": 1.0, "sampler": "ddim", "seed": 0}),
             "decode": ("AutoencoderDecode", {}), "paste": ("CompositeMasked", {"feather": 2}),
             "save": ("SaveImage", {"prefix": "inpainted"})}
    links = ["ckpt.autoencoder -> inpaint.autoencoder", "ckpt.autoencoder -> latent.autoencoder",
             "ckpt.autoencoder -> decode.autoencoder", "ckpt.model -> sampler.model", "image.image -> mask.image",
             "image.image -> inpaint.image", "mask.mask -> inpaint.mask", "image.image -> latent.image",
             "inpaint.conditioning -> sampler.positive", "latent.latent -> sampler.latent",
             "sampler.latent -> decode.latent",
             "image.image -> paste.destination", "decode.image -> paste.source", "mask.mask -> paste.mask",
             "paste.image -> save.image"]
    return build_graph(nodes, links)


def test_graph_inpaints_the_hole_and_keeps_every_pixel_outside_it(tiny, tmp_path):
    original = _picture(tmp_path / "scene.png")
    graph_file.save(inpainting_graph(str(tmp_path / "scene.png")), tmp_path / "inpaint.json")
    assert main(["run", str(tmp_path / "inpaint.json"), "--set", f"ckpt.checkpoint={tiny.path}",
                 "--out", str(tmp_path / "out"), "--no-disk-cache", "--device", "cpu"]) == 0
    (written,) = sorted((tmp_path / "out").glob("*.png"))
    result = np.asarray(PILImage.open(written).convert("RGB"))
    left, top, right, bottom = HOLE
    outside = np.ones((SIZE, SIZE), bool)
    outside[top:bottom, left:right] = False
    assert result.shape == original.shape
    assert np.array_equal(result[outside], original[outside])
    assert not np.array_equal(result[~outside], original[~outside])  # the hole was filled by the model


def test_concat_channels_follow_the_paper_s_inpaint_script(tiny):
    """scripts/inpaint.py: c = cat(encode((1 - mask) * image in [-1, 1]), resize(mask * 2 - 1) to the latent)."""
    import torch.nn.functional as F

    from nodes.latent_nodes import inpaint_concat

    loaded = load_checkpoint(tiny.path, device="cpu")
    image = torch.rand(1, 3, SIZE, SIZE)
    mask = torch.zeros(1, 1, SIZE, SIZE)
    left, top, right, bottom = HOLE
    mask[..., top:bottom, left:right] = 1
    ours = inpaint_concat(loaded.first_stage, image, mask, loaded.model.capabilities.inpaint_convention)
    with torch.no_grad():
        latent = loaded.first_stage.model.encode((1 - mask) * image * 2 - 1)  # (1, 3, 8, 8)
    paper = torch.cat([latent, F.interpolate(mask * 2 - 1, size=latent.shape[-2:])], dim=1)
    assert ours.shape == (1, 4, SIZE // 4, SIZE // 4)
    assert torch.allclose(ours, paper, atol=1e-5)
