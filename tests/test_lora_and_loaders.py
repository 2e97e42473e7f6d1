"""LoRA files (kohya and diffusers/PEFT layouts, LoCon convolutions) against diffusers' own key
conversion and models, LoRA stacks and strengths, the separate autoencoder loader, and Kiln's own
CLIP text transformer against transformers'."""
from __future__ import annotations

import logging
import types

import pytest
import torch
from safetensors.torch import save_file
from zoo_support import write_zoo_checkpoint

from engine.errors import UserInputError
from engine.models.keymaps import AE_PREFIX, COND_PREFIX
from engine.models.loader import load_checkpoint
from engine.spec import EngineSettings

RANK = 4
# diffusers module names of the tiny SD 1.5 UNet that the LoRA patches: attention, the 1x1 conv proj_in,
# feed-forward, and 3x3 resnet convolutions (LoCon)
UNET_LAYERS = ("down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q",
               "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k",
               "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_out.0",
               "down_blocks.0.attentions.0.proj_in", "mid_block.attentions.0.transformer_blocks.0.ff.net.0.proj",
               "up_blocks.1.attentions.2.transformer_blocks.0.attn2.to_v", "down_blocks.0.resnets.0.conv1",
               "up_blocks.0.resnets.1.conv2", "mid_block.resnets.0.conv1")
TEXT_LAYERS = ("encoder.layers.0.self_attn.q_proj", "encoder.layers.1.self_attn.out_proj", "encoder.layers.1.mlp.fc1")


def _yaml(cfg) -> dict:
    params = {k: v for k, v in cfg.unet.to_dict().items() if v is not None and v != -1}
    first = {"params": {"embed_dim": cfg.autoencoder.embed_dim, "ddconfig": cfg.autoencoder.to_dict()}}
    return {"model": {"params": {"unet_config": {"params": params}, "first_stage_config": first}}}


@pytest.fixture(scope="module")
def sd(tmp_path_factory):
    """A tiny SD 1.5 file, Kiln's load of it, and diffusers' / transformers' models with the same weights."""
    import warnings

    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.loaders import single_file_utils as sfu
    from safetensors.torch import load_file
    from transformers import CLIPTextModel

    from engine.models.conditioners import clip_text_config

    folder = tmp_path_factory.mktemp("lora")
    path, cfg = write_zoo_checkpoint("sd15", folder)
    ckpt = {k: v.float() for k, v in load_file(str(path)).items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ucfg = sfu.create_unet_diffusers_config_from_ldm(_yaml(cfg), ckpt)
        vcfg = sfu.create_vae_diffusers_config_from_ldm(_yaml(cfg), ckpt, image_size=64)
        unet = UNet2DConditionModel(**ucfg)
        unet.load_state_dict(sfu.convert_ldm_unet_checkpoint(ckpt, ucfg), strict=True)
        vae_sd = sfu.convert_ldm_vae_checkpoint(ckpt, vcfg)
        text = CLIPTextModel(clip_text_config(cfg.conditioner.params))
    prefix = COND_PREFIX + "transformer.text_model."
    text.load_state_dict({k[len(prefix):]: v for k, v in ckpt.items() if k.startswith(prefix)
                          and not k.endswith("position_ids")}, strict=True)
    vae = AutoencoderKL(**vcfg)
    vae.load_state_dict(vae_sd, strict=True)
    loaded = load_checkpoint(path, "cpu")
    return types.SimpleNamespace(path=path, cfg=cfg, ckpt=ckpt, loaded=loaded, unet=unet.eval(), text=text.eval(),
                                 vae_sd=vae_sd, folder=folder)


def _random_lora(seed: int, unet, text) -> dict[str, torch.Tensor]:
    """A kohya-layout LoRA for the diffusers-named layers (LoCon kernels for 3x3 convolutions)."""
    g = torch.Generator().manual_seed(seed)
    out: dict[str, torch.Tensor] = {}
    layers = [("lora_unet_", name, unet.get_submodule(name).weight) for name in UNET_LAYERS]
    layers += [("lora_te_", "text_model." + name, text.get_submodule(name).weight) for name in TEXT_LAYERS]
    for prefix, name, weight in layers:
        key = prefix + name.replace(".", "_")
        down_shape = (RANK, *weight.shape[1:]) if weight.dim() == 4 else (RANK, weight.shape[1])
        up_shape = (weight.shape[0], RANK, 1, 1) if weight.dim() == 4 else (weight.shape[0], RANK)
        out[key + ".lora_down.weight"] = torch.randn(down_shape, generator=g) * 0.1
        out[key + ".lora_up.weight"] = torch.randn(up_shape, generator=g) * 0.1
        out[key + ".alpha"] = torch.tensor(float(seed % 3 + 1))
    return out


def _reference_patch(unet, text, lora: dict[str, torch.Tensor], strength_model: float, strength_clip: float):
    """diffusers' conversion of the kohya keys, applied to diffusers/transformers copies by the LoRA formula."""
    import copy

    from diffusers.loaders.lora_conversion_utils import _convert_non_diffusers_lora_to_diffusers

    converted, alphas = _convert_non_diffusers_lora_to_diffusers(dict(lora))
    unet, text = copy.deepcopy(unet), copy.deepcopy(text)
    for key, down in converted.items():
        if not key.endswith("down.weight"):
            continue
        up = converted[key.replace("down.weight", "up.weight")]
        owner, name = key.split(".", 1)
        for ending in (".lora.down.weight", "_lora.down.weight", ".lora_linear_layer.down.weight"):
            name = name.removesuffix(ending)
        alpha = alphas.get(f"{owner}.{name}.alpha", alphas.get(key + ".alpha"))
        model, strength = (unet, strength_model) if owner == "unet" else (text, strength_clip)
        name = name.replace(".processor.", ".")
        name = name + ".0" if owner == "unet" and name.endswith(".to_out") else name
        if owner != "unet":
            name = name.removeprefix("text_model.").replace("to_q", "q_proj").replace("to_k", "k_proj")
            name = name.replace("to_v", "v_proj").replace("to_out", "out_proj")
        weight = model.get_submodule(name).weight
        delta = (up.flatten(1) @ down.flatten(1)).reshape(weight.shape) * (alpha / down.shape[0])
        with torch.no_grad():
            weight.add_(strength * delta)
    return unet, text


def _write(tmp_path, name: str, tensors: dict[str, torch.Tensor]) -> str:
    path = tmp_path / name
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))
    return str(path)


def _outputs(kiln_model, kiln_cond, unet, text) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(5)
    x, ctx = torch.randn(2, 4, 16, 16, generator=g), torch.randn(2, 7, 64, generator=g)
    t = torch.tensor([10.0, 700.0])
    ids = torch.randint(0, 40, (2, 77), generator=g)
    with torch.no_grad():
        return (kiln_model.unet(x, t, ctx), unet(x, t, encoder_hidden_states=ctx).sample,
                kiln_cond.encode_ids(ids), text(input_ids=ids).last_hidden_state)


def test_kohya_lora_matches_diffusers_conversion(sd, tmp_path):
    from nodes.lora_loader import apply_lora

    lora = _random_lora(1, sd.unet, sd.text)
    model, cond = apply_lora(_write(tmp_path, "a.safetensors", lora), sd.loaded.model, sd.loaded.conditioner, 0.8, 1.3)
    unet, text = _reference_patch(sd.unet, sd.text, lora, 0.8, 1.3)
    ours_u, theirs_u, ours_t, theirs_t = _outputs(model, cond, unet, text)
    base_u, _, base_t, _ = _outputs(sd.loaded.model, sd.loaded.conditioner, sd.unet, sd.text)
    for ours, theirs, base in ((ours_u, theirs_u, base_u), (ours_t, theirs_t, base_t)):
        assert (ours - theirs).abs().max() < 1e-5 < 1e-2 * (ours - base).abs().max()  # same, and the LoRA acted


def test_peft_layout_patches_like_kohya_and_base_stays(sd, tmp_path):
    from nodes.lora_loader import apply_lora

    lora = _random_lora(2, sd.unet, sd.text)
    peft = {}
    for key in [k for k in lora if k.endswith(".lora_down.weight")]:
        stem = key.removesuffix(".lora_down.weight")
        scale = float(lora[stem + ".alpha"]) / RANK
        kind, name = ("unet", stem.removeprefix("lora_unet_")) if stem.startswith("lora_unet_") else \
            ("text_encoder", stem.removeprefix("lora_te_"))
        dotted = next(n for n in (*UNET_LAYERS, *("text_model." + t for t in TEXT_LAYERS)) if n.replace(".", "_") == name)
        peft[f"{kind}.{dotted}.lora_A.weight"] = lora[key]
        peft[f"{kind}.{dotted}.lora_B.weight"] = lora[stem + ".lora_up.weight"] * scale
    before = {k: v.clone() for k, v in sd.loaded.model.unet.state_dict().items()}
    a = apply_lora(_write(tmp_path, "k.safetensors", lora), sd.loaded.model, sd.loaded.conditioner, 1.0, 1.0)
    b = apply_lora(_write(tmp_path, "p.safetensors", peft), sd.loaded.model, sd.loaded.conditioner, 1.0, 1.0)
    for x, y in zip((a[0].unet, a[1]), (b[0].unet, b[1]), strict=True):
        for (key, u), (_, v) in zip(x.state_dict().items(), y.state_dict().items(), strict=True):
            assert torch.allclose(u, v, atol=1e-6), key
    after = sd.loaded.model.unet.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # the cached base model is untouched
    shared = sum(p is q for p, q in zip(a[0].unet.parameters(), sd.loaded.model.unet.parameters(), strict=True))
    assert shared == len(list(sd.loaded.model.unet.parameters())) - len(UNET_LAYERS)  # only patched ones are new


def test_two_loaders_stack_and_strength_zero_changes_nothing(sd, tmp_path):
    from nodes.lora_loader import LORA_LOADER

    first = _write(tmp_path, "one.safetensors", _random_lora(3, sd.unet, sd.text))
    second = _write(tmp_path, "two.safetensors", _random_lora(4, sd.unet, sd.text))
    ctx = types.SimpleNamespace(settings=EngineSettings(model_dirs=(str(tmp_path),)))
    base = {"model": sd.loaded.model, "conditioner": sd.loaded.conditioner}
    params = {"strength_model": 0.7, "strength_clip": 0.5}
    one = LORA_LOADER.compute(ctx, base, {"lora_name": "one.safetensors", **params})
    both = LORA_LOADER.compute(ctx, one, {"lora_name": second, **params})
    two = LORA_LOADER.compute(ctx, base, {"lora_name": second, **params})
    name = "input_blocks.1.0.in_layers.2.weight"  # LoCon 3x3 kernel
    w0, w1, w2, w12 = (m["model"].unet.state_dict()[name] for m in (base, one, two, both))
    assert torch.allclose(w12 - w0, (w1 - w0) + (w2 - w0), atol=1e-5)
    zero = LORA_LOADER.compute(ctx, base, {"lora_name": first, "strength_model": 0.0, "strength_clip": 0.0})
    assert zero["model"] is sd.loaded.model and zero["conditioner"] is sd.loaded.conditioner


def test_unmatched_keys_warn_and_a_foreign_lora_is_an_error(sd, tmp_path, caplog):
    from nodes.lora_loader import LORA_LOADER_MODEL_ONLY, apply_lora

    lora = _random_lora(5, sd.unet, sd.text)
    lora["lora_unet_no_such_block.lora_down.weight"] = torch.zeros(RANK, 8)
    lora["lora_unet_no_such_block.lora_up.weight"] = torch.zeros(8, RANK)
    with caplog.at_level(logging.WARNING):
        apply_lora(_write(tmp_path, "extra.safetensors", lora), sd.loaded.model, sd.loaded.conditioner, 1.0, 1.0)
    assert "2 of" in caplog.text and "were not used" in caplog.text
    foreign = _write(tmp_path, "foreign.safetensors", {"lora_unet_nothing_here.lora_down.weight": torch.zeros(2, 3),
                                                         "lora_unet_nothing_here.lora_up.weight": torch.zeros(3, 2)})
    with pytest.raises(UserInputError, match="foreign.safetensors: none of the LoRA's 2 keys"):
        apply_lora(foreign, sd.loaded.model, sd.loaded.conditioner, 1.0, 1.0)
    ctx = types.SimpleNamespace(settings=EngineSettings())
    only = LORA_LOADER_MODEL_ONLY.compute(ctx, {"model": sd.loaded.model}, {"lora_name": str(tmp_path / "extra.safetensors"),
                                                                          "strength_model": 1.0})
    assert only["model"] is not sd.loaded.model
    pickled = tmp_path / "old.pt"
    torch.save(lora, pickled)
    with pytest.raises(UserInputError, match="safetensors only"):
        apply_lora(str(pickled), sd.loaded.model, None, 1.0, 0.0)


def _ae_files(sd, tmp_path) -> dict[str, str]:
    first = {k: v for k, v in sd.ckpt.items() if k.startswith(AE_PREFIX)}
    return {"prefixed": _write(tmp_path, "ae_prefixed.safetensors", first),
            "plain": _write(tmp_path, "ae_plain.safetensors", {k[len(AE_PREFIX):]: v for k, v in first.items()}),
            "diffusers": _write(tmp_path, "ae_diffusers.safetensors", sd.vae_sd)}


def test_autoencoder_file_decodes_like_the_checkpoints_own(sd, tmp_path):
    from engine.model_store import ModelStore
    from nodes.autoencoder_loader import AUTOENCODER_FILES, AUTOENCODER_LOADER

    z = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    expected = sd.loaded.first_stage.decode_latents(z)
    ctx = types.SimpleNamespace(settings=EngineSettings(device="cpu", model_dirs=(str(tmp_path),)), models=ModelStore())
    files = _ae_files(sd, tmp_path)
    listed = AUTOENCODER_FILES.list(ctx.settings)
    assert {"ae_prefixed.safetensors", "ae_plain.safetensors", "ae_diffusers.safetensors"} <= set(listed)
    for layout, path in files.items():
        ae = AUTOENCODER_LOADER.compute(ctx, {}, {"vae_name": path})["autoencoder"]
        assert ae.scale_factor == pytest.approx(0.18215)
        assert torch.equal(ae.decode_latents(z), expected), layout
    assert ctx.models.loads == 3


def test_clip_text_transformer_matches_transformers(sd):
    ids = torch.randint(0, 40, (3, 77), generator=torch.Generator().manual_seed(9))
    ours = sd.loaded.conditioner.text_model
    with torch.no_grad():
        a, b = ours(input_ids=ids, output_hidden_states=True), sd.text(input_ids=ids, output_hidden_states=True)
    assert (a.last_hidden_state - b.last_hidden_state).abs().max() < 1e-5
    assert (a.hidden_states[-2] - b.hidden_states[-2]).abs().max() < 1e-5
