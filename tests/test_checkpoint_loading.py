"""Loading checkpoints: formats, refusal of unsafe pickles, damaged files, EMA, YAML and
embedded configs, diffusers folders, devices and dtypes, inspect-model, the loader node."""
from __future__ import annotations

import json
import os
import sys
import types
from dataclasses import replace

import pytest
import torch
from safetensors.torch import save_file

from engine.errors import KilnError, UserInputError
from engine.models.checkpoint import CheckpointError
from engine.models.configs import (
    AutoencoderConfig,
    CheckpointConfig,
    ConditionerConfig,
    DiffusionConfig,
    UNetConfig,
)
from engine.models.inspect import inspect_checkpoint, inspect_main
from engine.models.keymaps import AE_PREFIX, COND_PREFIX, UNET_PREFIX, ema_key
from engine.models.loader import build_modules, load_checkpoint, resolve_device, resolve_dtype
from engine.values import Conditioning

# ---------------------------------------------------------------- tiny models in the original layout

WORDS = ("a", "red", "green", "blue", "circle", "square", "triangle", "on", "white", "background", "the", "at", "top")


def write_clip_tokenizer(folder) -> None:
    """A tiny CLIP BPE tokenizer (vocab.json + merges.txt) whose words are whole tokens."""
    folder.mkdir(parents=True, exist_ok=True)
    letters = "abcdefghijklmnopqrstuvwxyz"
    vocab = {c: i for i, c in enumerate(letters)}
    vocab.update({c + "</w>": len(letters) + i for i, c in enumerate(letters)})
    merges = []
    for word in WORDS:
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        current = pieces[0]
        for piece in pieces[1:]:
            if f"{current} {piece}" not in merges:
                merges.append(f"{current} {piece}")
            current += piece
            vocab.setdefault(current, len(vocab))
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")


def clip_vocab_size() -> int:
    letters = 26
    pieces = set()
    for word in WORDS:
        for end in range(2, len(word) + 1):
            pieces.add(word[:end] + ("</w>" if end == len(word) else ""))
    return 2 * letters + len(pieces - {c + "</w>" for c in "abcdefghijklmnopqrstuvwxyz"}) + 2


def tiny_clip(kind: str = "clip", layer: str = "last") -> ConditionerConfig:
    # width 128 with 2 heads of 64: the head count detection infers for CLIP-like text models
    return ConditionerConfig(kind, {"width": 128, "layers": 2, "heads": 2, "intermediate": 256,
                                    "vocab": clip_vocab_size(), "max_length": 77,
                                    "act": "quick_gelu" if kind == "clip" else "gelu", "layer": layer,
                                    "pad": "eos" if kind == "clip" else 0})


def tiny_config(conditioner: ConditionerConfig | None = None) -> CheckpointConfig:
    unet = UNetConfig(model_channels=32, channel_mult=(1, 2), attention_resolutions=(2,), num_res_blocks=1,
                      num_heads=8, use_spatial_transformer=True, context_dim=128, legacy=False)
    ae = AutoencoderConfig(ch=32, ch_mult=(1, 2), num_res_blocks=1)
    return CheckpointConfig(unet, ae, DiffusionConfig(), conditioner or tiny_clip())


def random_modules(cfg: CheckpointConfig, seed: int = 0):
    """Modules with random (not default-initialised, not zero) weights."""
    torch.manual_seed(seed)
    unet, ae, cond = build_modules(cfg)
    with torch.no_grad():
        for module in (unet, ae, cond):
            for p in module.parameters():
                p.add_(torch.randn_like(p) * 0.02)  # also wakes up the zero-initialised output convs
    return unet, ae, cond


def original_state(unet, ae, cond) -> dict[str, torch.Tensor]:
    sd = {}
    for prefix, module in ((UNET_PREFIX, unet), (AE_PREFIX, ae)):
        sd.update({prefix + k: v.clone().contiguous() for k, v in module.state_dict().items()})
    for k, v in cond.state_dict().items():
        src, _ = cond.source_key(k)
        sd[COND_PREFIX + src] = v.clone().contiguous()
    return sd


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny SD-like checkpoint as .safetensors (with a tokenizer folder beside it) and the modules it came from."""
    folder = tmp_path_factory.mktemp("tiny")
    cfg = tiny_config()
    modules = random_modules(cfg)
    sd = original_state(*modules)
    sd[COND_PREFIX + "transformer.text_model.embeddings.position_ids"] = torch.arange(77)[None]
    path = folder / "tiny.safetensors"
    save_file(sd, str(path))
    write_clip_tokenizer(folder / "tokenizer")
    return types.SimpleNamespace(path=path, sd=sd, modules=modules, cfg=cfg, folder=folder)


def unet_output(model, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 4, 8, 8, generator=g)
    ctx = torch.randn(2, 7, 128, generator=g)
    return model.apply(x, torch.tensor([10, 500]), Conditioning(crossattn=ctx))


def reference_output(unet, seed: int = 1) -> torch.Tensor:
    from engine.models.diffusion import LatentDiffusionModel

    return unet_output(LatentDiffusionModel(unet, DiffusionConfig()), seed)


# ---------------------------------------------------------------- formats


def test_safetensors_loads_strictly_and_reproduces_the_model(tiny):
    loaded = load_checkpoint(tiny.path, "cpu")
    assert loaded.report["strict"] and loaded.report["missing"] == [] and loaded.report["unexpected"] == []
    assert loaded.report["format"] == "safetensors" and loaded.report["config_source"] == "detected"
    torch.testing.assert_close(unet_output(loaded.model), reference_output(tiny.modules[0]), rtol=0, atol=1e-6)
    pixels = torch.rand(1, 3, 16, 16)
    expected = tiny.modules[1].decode(tiny.modules[1].encode(pixels * 2 - 1).mode())
    got = loaded.first_stage.model.decode(loaded.first_stage.model.encode(pixels * 2 - 1).mode())
    torch.testing.assert_close(got, expected, rtol=0, atol=2e-5)  # channels-last convs on the CPU sum in another order
    ae_weights = loaded.first_stage.model.state_dict()
    assert all(torch.equal(ae_weights[k], v) for k, v in tiny.modules[1].state_dict().items())
    assert all(p.device.type == "cpu" and p.dtype == torch.float32 for p in loaded.model.parameters())
    assert not any(p.requires_grad for p in loaded.model.parameters())


def test_ckpt_and_legacy_torch_files_load_the_same_weights(tiny, tmp_path):
    zipped, legacy = tmp_path / "tiny.ckpt", tmp_path / "tiny_legacy.pt"
    torch.save({"state_dict": tiny.sd, "global_step": 7, "epoch": 1}, zipped)
    torch.save(tiny.sd, legacy, _use_new_zipfile_serialization=False)
    expected = reference_output(tiny.modules[0])
    for path in (zipped, legacy):
        loaded = load_checkpoint(path, "cpu")
        assert loaded.report["format"] == "torch"
        torch.testing.assert_close(unet_output(loaded.model), expected, rtol=0, atol=1e-6)


class _Payload:
    """Pickles as a call to os.system: what a malicious .ckpt does."""

    def __init__(self, target: str):
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


def test_pickle_that_runs_code_is_refused_and_runs_nothing(tiny, tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": tiny.sd, "callback": _Payload(str(marker))}, path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path, "cpu")
    message = str(info.value)
    assert "evil.ckpt: refused to load" in message and "system" in message
    assert not marker.exists()
    legacy = tmp_path / "evil_legacy.pt"
    torch.save({"x": _Payload(str(marker))}, legacy, _use_new_zipfile_serialization=False)
    with pytest.raises(CheckpointError, match="evil_legacy.pt: refused to load"):
        load_checkpoint(legacy, "cpu")
    assert not marker.exists()


def test_lightning_bookkeeping_in_a_ckpt_is_ignored_without_running_it(tiny, tmp_path, monkeypatch):
    """Real SD .ckpt files carry Lightning callback objects beside the weights."""
    module = types.ModuleType("pytorch_lightning.callbacks.model_checkpoint")
    calls = []

    class ModelCheckpoint:
        def __setstate__(self, state):
            calls.append(state)

    ModelCheckpoint.__module__ = module.__name__
    ModelCheckpoint.__qualname__ = "ModelCheckpoint"
    module.ModelCheckpoint = ModelCheckpoint
    for name in ("pytorch_lightning", "pytorch_lightning.callbacks"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setitem(sys.modules, module.__name__, module)
    callback = ModelCheckpoint()
    callback.best = 0.5
    path = tmp_path / "lightning.ckpt"
    torch.save({"state_dict": tiny.sd, "callbacks": {"ModelCheckpoint": callback}}, path)
    loaded = load_checkpoint(path, "cpu")
    assert loaded.report["strict"] and calls == []


def test_format_is_sniffed_from_content_not_extension(tmp_path):
    from engine.models.checkpoint import sniff_format

    header = json.dumps({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode().ljust(0x180)
    odd = tmp_path / "weights.bin"  # header length 0x180: its first byte is 0x80, like a pickle's
    odd.write_bytes(len(header).to_bytes(8, "little") + header + bytes(8))
    assert sniff_format(odd) == "safetensors"
    pickled = tmp_path / "weights.safetensors"
    torch.save({"w": torch.zeros(2)}, pickled, _use_new_zipfile_serialization=False)
    assert sniff_format(pickled) == "torch"


# ---------------------------------------------------------------- damaged and mismatched files


def test_truncated_files_name_the_file(tiny, tmp_path):
    data = tiny.path.read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"cut.safetensors: truncated file: tensor '.+' runs past the end"):
        load_checkpoint(cut, "cpu")
    ckpt = tmp_path / "cut.ckpt"
    torch.save(tiny.sd, ckpt)
    ckpt.write_bytes(ckpt.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match=r"cut.ckpt: cannot read torch checkpoint"):
        load_checkpoint(ckpt, "cpu")
    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty.safetensors: the file is empty"):
        load_checkpoint(empty, "cpu")
    with pytest.raises(CheckpointError, match="nothing.safetensors: no such file"):
        load_checkpoint(tmp_path / "nothing.safetensors", "cpu")


def test_missing_and_unexpected_keys_are_named(tiny, tmp_path):
    key = UNET_PREFIX + "output_blocks.0.0.in_layers.2.weight"
    missing = {k: v for k, v in tiny.sd.items() if k != key}
    save_file(missing, str(tmp_path / "missing.safetensors"))
    with pytest.raises(CheckpointError, match=rf"missing.safetensors: missing key '{key}'"):
        load_checkpoint(tmp_path / "missing.safetensors", "cpu")
    extra = dict(tiny.sd)
    extra[AE_PREFIX + "encoder.extra.weight"] = torch.zeros(3)
    save_file(extra, str(tmp_path / "extra.safetensors"))
    with pytest.raises(CheckpointError, match=r"extra.safetensors: unexpected key 'first_stage_model.encoder.extra.weight'"):
        load_checkpoint(tmp_path / "extra.safetensors", "cpu")


def test_shape_mismatch_against_an_embedded_config_is_named(tiny, tmp_path):
    cfg = tiny_config()
    cfg.unet.context_dim = 48  # the file's cross-attention keys are 128 wide
    path = tmp_path / "mismatch.safetensors"
    save_file(tiny.sd, str(path), metadata={"kiln_config": json.dumps(cfg.to_dict())})
    with pytest.raises(CheckpointError, match=r"mismatch.safetensors: shape mismatch for 'model.diffusion_model\..*attn2.to_k.weight': "
                                              r"the file has \[64, 128\], the architecture needs \[64, 48\]"):
        load_checkpoint(path, "cpu")


def test_embedded_config_is_used_over_detection(tiny, tmp_path):
    cfg = tiny_config()
    cfg.diffusion = replace(cfg.diffusion, linear_start=0.001, linear_end=0.02, prediction="v", scale_factor=0.5)
    path = tmp_path / "embedded.safetensors"
    save_file(tiny.sd, str(path), metadata={"kiln_config": json.dumps(cfg.to_dict())})
    loaded = load_checkpoint(path, "cpu")
    assert loaded.report["config_source"] == "metadata"
    assert loaded.model.prediction == "v" and loaded.first_stage.scale_factor == 0.5
    assert float(loaded.model.alphas_cumprod[0]) == pytest.approx(1 - 0.001)


def test_card_beside_the_file_gives_config_and_preview_factors(tiny, tmp_path):
    path = tmp_path / "carded.safetensors"
    save_file(tiny.sd, str(path))
    cfg = tiny_config()
    cfg.diffusion.scale_factor = 0.25
    factors = [[0.1, 0.2, 0.3]] * 4
    (tmp_path / "carded.json").write_text(json.dumps({"checkpoint_config": cfg.to_dict(),
                                                      "latent_rgb_factors": factors}))
    loaded = load_checkpoint(path, "cpu")
    assert loaded.report["config_source"] == "card" and loaded.first_stage.scale_factor == 0.25
    assert loaded.first_stage.latent_rgb == tuple(tuple(r) for r in factors)


# ---------------------------------------------------------------- EMA, YAML, stored schedule


def test_ema_weights_are_used_only_when_asked(tiny, tmp_path):
    sd = dict(tiny.sd)
    for k, v in tiny.sd.items():
        if k.startswith(UNET_PREFIX):
            sd[ema_key(k)] = v + 0.01
    sd["model_ema.decay"] = torch.tensor(0.9999)
    sd["model_ema.num_updates"] = torch.tensor(100)
    path = tmp_path / "ema.safetensors"
    save_file(sd, str(path))
    plain = load_checkpoint(path, "cpu")
    ema = load_checkpoint(path, "cpu", use_ema=True)
    key = "input_blocks.0.0.weight"
    assert plain.report["ema"] == "not asked" and ema.report["ema"] == "used" and ema.report["strict"]
    torch.testing.assert_close(plain.model.unet.state_dict()[key], tiny.sd[UNET_PREFIX + key])
    torch.testing.assert_close(ema.model.unet.state_dict()[key], tiny.sd[UNET_PREFIX + key] + 0.01)
    assert load_checkpoint(tiny.path, "cpu", use_ema=True).report["ema"] == "not in the file"


YAML_V = """
model:
  target: ldm.models.diffusion.ddpm.LatentDiffusion
  params:
    parameterization: "v"
    linear_start: 0.00085
    linear_end: 0.0120
    timesteps: 1000
    conditioning_key: crossattn
    scale_factor: 0.18215
    unet_config:
      target: ldm.modules.diffusionmodules.openaimodel.UNetModel
      params:
        use_checkpoint: True
        image_size: 32
        in_channels: 4
        out_channels: 4
        model_channels: 32
        attention_resolutions: [ 2 ]
        num_res_blocks: 1
        channel_mult: [ 1, 2 ]
        num_heads: 8
        use_spatial_transformer: True
        transformer_depth: 1
        context_dim: 128
        legacy: False
    first_stage_config:
      target: ldm.models.autoencoder.AutoencoderKL
      params:
        embed_dim: 4
        ddconfig:
          double_z: true
          z_channels: 4
          resolution: 256
          in_channels: 3
          out_ch: 3
          ch: 32
          ch_mult: [1, 2]
          num_res_blocks: 1
          attn_resolutions: []
          dropout: 0.0
        lossconfig:
          target: torch.nn.Identity
    cond_stage_config:
      target: ldm.modules.encoders.modules.FrozenCLIPEmbedder
"""


def test_yaml_beside_the_checkpoint_sets_v_prediction(tiny, tmp_path, monkeypatch):
    path = tmp_path / "v-model.safetensors"
    save_file(tiny.sd, str(path))
    (tmp_path / "v-model.yaml").write_text(YAML_V)
    # the YAML names FrozenCLIPEmbedder (ViT-L); this test's file holds a tiny CLIP instead
    monkeypatch.setattr("engine.models.presets.clip_vit_l", lambda: tiny_clip())
    loaded = load_checkpoint(path, "cpu")
    assert loaded.report["config_source"] == "yaml"
    assert loaded.model.prediction == "v" and loaded.config.diffusion.conditioning_key == "crossattn"
    assert load_checkpoint(path, "cpu", prediction="eps").model.prediction == "eps"


def test_unknown_yaml_targets_are_refused_by_name(tiny, tmp_path):
    path = tmp_path / "odd.safetensors"
    save_file(tiny.sd, str(path))
    (tmp_path / "odd.yaml").write_text(YAML_V.replace("ldm.modules.encoders.modules.FrozenCLIPEmbedder",
                                                      "os.system"))
    with pytest.raises(CheckpointError, match="odd.yaml: unsupported model config: conditioner target 'os.system'"):
        load_checkpoint(path, "cpu")


def test_stored_scale_factor_and_betas_are_read(tiny, tmp_path):
    sd = dict(tiny.sd)
    sd["scale_factor"] = torch.tensor(0.3)
    sd["betas"] = torch.linspace(0.0015 ** 0.5, 0.0155 ** 0.5, 1000, dtype=torch.float64) ** 2
    path = tmp_path / "stored.safetensors"
    save_file(sd, str(path))
    loaded = load_checkpoint(path, "cpu")
    assert loaded.first_stage.scale_factor == pytest.approx(0.3)
    assert (loaded.config.diffusion.linear_start, loaded.config.diffusion.linear_end) == (0.0015, 0.0155)


# ---------------------------------------------------------------- devices and dtypes


def test_device_and_dtype_resolution():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert resolve_dtype("auto", torch.device("cuda")) == torch.float16
    if not torch.cuda.is_available():
        assert resolve_device("auto").type in ("cpu", "mps")
        with pytest.raises(KilnError, match="CUDA is not available"):
            resolve_device("cuda")
    with pytest.raises(KilnError, match="unknown precision 'fp8'"):
        resolve_dtype("fp8", torch.device("cpu"))


def test_half_precision_keeps_the_autoencoder_in_fp32(tiny):
    half = load_checkpoint(tiny.path, "cpu", torch.float16)
    assert half.model.dtype == torch.float16 and half.conditioner.dtype == torch.float16
    assert half.first_stage.dtype == torch.float32
    bf16 = load_checkpoint(tiny.path, "cpu", "bf16")
    assert bf16.model.dtype == torch.bfloat16 and bf16.first_stage.dtype == torch.bfloat16
    expected = tiny.sd[UNET_PREFIX + "input_blocks.0.0.weight"].to(torch.bfloat16)
    assert torch.equal(bf16.model.unet.state_dict()["input_blocks.0.0.weight"], expected)
    diff = (unet_output(bf16.model) - reference_output(tiny.modules[0])).abs().max()
    assert diff < 0.05  # bf16 keeps about 3 significant digits


# ---------------------------------------------------------------- diffusers folders


def test_diffusers_folder_loads_onto_the_same_modules(tiny, tmp_path):
    from diffusers import AutoencoderKL as DiffusersVAE
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel

    from engine.models.conditioners import clip_text_config

    torch.manual_seed(3)
    unet = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
                                block_out_channels=(32, 64), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=128,
                                attention_head_dim=2, norm_num_groups=32)
    vae = DiffusersVAE(in_channels=3, out_channels=3, block_out_channels=(32, 64), layers_per_block=1,
                       down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                       latent_channels=4, norm_num_groups=32, scaling_factor=0.2)
    text = CLIPTextModel(clip_text_config(tiny_clip().params))
    with torch.no_grad():
        for p in list(unet.parameters()) + list(vae.parameters()):
            p.add_(torch.randn_like(p) * 0.05)
    folder = tmp_path / "pipe"
    unet.save_pretrained(folder / "unet")
    vae.save_pretrained(folder / "vae")
    text.save_pretrained(folder / "text_encoder")
    write_clip_tokenizer(folder / "tokenizer")
    (folder / "scheduler").mkdir()
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(
        {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "prediction_type": "v_prediction"}))
    loaded = load_checkpoint(folder, "cpu")
    assert loaded.report["format"] == "diffusers" and loaded.model.prediction == "v"
    assert loaded.first_stage.scale_factor == 0.2 and loaded.report["tokenizer"] == "found"
    g = torch.Generator().manual_seed(0)
    x, ctx, t = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 5, 128, generator=g), torch.tensor([3, 700])
    with torch.no_grad():
        expected = unet(x, t, encoder_hidden_states=ctx).sample
        z = torch.randn(1, 4, 4, 4, generator=g)
        expected_image = vae.decode(z).sample
        expected_text = text(input_ids=torch.tensor([[clip_vocab_size() - 2, 5, 9, clip_vocab_size() - 1]])).last_hidden_state
    torch.testing.assert_close(loaded.model.apply(x, t, Conditioning(crossattn=ctx)), expected, rtol=0, atol=1e-4)
    torch.testing.assert_close(loaded.first_stage.model.decode(z), expected_image, rtol=0, atol=1e-4)
    ids = torch.tensor([[clip_vocab_size() - 2, 5, 9, clip_vocab_size() - 1]])
    torch.testing.assert_close(loaded.conditioner.encode_ids(ids), expected_text, rtol=0, atol=1e-5)


def test_diffusers_key_map_agrees_with_diffusers_own_conversion():
    """Our original->diffusers names match diffusers' convert_ldm_unet_checkpoint / convert_ldm_vae_checkpoint."""
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint

    from engine.models.keymaps import unet_key_to_diffusers, vae_key_to_diffusers

    cfg = tiny_config()
    cfg.unet = replace(cfg.unet, channel_mult=(1, 2, 2), attention_resolutions=(1, 2), num_res_blocks=2)
    unet, ae, _ = random_modules(cfg)
    original = {UNET_PREFIX + k: v for k, v in unet.state_dict().items()}
    unet_config = {"layers_per_block": 2, "block_out_channels": [32, 64, 64]}
    converted = convert_ldm_unet_checkpoint(original, unet_config)
    ours = {unet_key_to_diffusers(k, [2, 2, 2]): v for k, v in unet.state_dict().items()}
    assert set(ours) == set(converted)
    assert all(torch.equal(ours[k], converted[k]) for k in ours)
    vae_original = {AE_PREFIX + k: v for k, v in ae.state_dict().items()}
    vae_converted = convert_ldm_vae_checkpoint(vae_original, {"layers_per_block": 1, "block_out_channels": [32, 64],
                                                             "down_block_types": ["DownEncoderBlock2D"] * 2,
                                                             "up_block_types": ["UpDecoderBlock2D"] * 2})
    vae_ours = {vae_key_to_diffusers(k, 2): v for k, v in ae.state_dict().items()}
    assert set(vae_ours) == set(vae_converted)
    assert all(vae_ours[k].numel() == vae_converted[k].numel() for k in vae_ours)


# ---------------------------------------------------------------- inspect-model


def test_inspect_reports_the_architecture_without_loading(tiny, capsys):
    info = inspect_checkpoint(str(tiny.path))
    assert info["preset"] == "custom" and info["strict"] is True
    assert info["autoencoder"] == {"kind": "kl", "downsampling_factor": 2, "latent_channels": 4,
                                   "scale_factor": 0.18215, "channels": 32, "channel_mult": [1, 2]}
    assert info["unet"]["attention_levels"] == [1] and info["unet"]["context_dim"] == 128
    assert info["unet"]["input_channels"] == 4 and info["conditioning"] == {"mode": "crossattn", "conditioner": "clip"}
    params = info["parameters"]
    unet = tiny.modules[0]
    assert params["unet"] == sum(p.numel() for p in unet.parameters())
    assert params["total"] == params["unet"] + params["autoencoder"] + params["conditioner"]
    assert inspect_main(str(tiny.path), as_json=True) == 0
    assert json.loads(capsys.readouterr().out)["strict"] is True
    assert inspect_main(str(tiny.path), as_json=False) == 0
    table = capsys.readouterr().out
    assert "KL f2, 4 latent channels" in table and "strict" in table


def test_inspect_reports_missing_keys_and_bad_files(tiny, tmp_path, capsys):
    sd = {k: v for k, v in tiny.sd.items() if not k.endswith("final_layer_norm.bias")}
    save_file(sd, str(tmp_path / "partial.safetensors"))
    info = inspect_checkpoint(str(tmp_path / "partial.safetensors"))
    assert info["strict"] is False and info["missing_keys"][0].endswith("final_layer_norm.bias")
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint at all")
    assert inspect_main(str(tmp_path / "junk.ckpt"), as_json=False) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "junk.ckpt" in err


def test_inspect_of_a_real_size_layout_reads_no_weights(tmp_path, monkeypatch):
    """An SD 1.5-shaped state dict of meta tensors (no data at all) is named and counted."""
    from test_presets import original_checkpoint

    from engine.models.checkpoint import DictSource
    from engine.models.presets import get_preset

    shapes = original_checkpoint(get_preset("sd15"))
    source = DictSource({k: torch.empty(v, device="meta") for k, v in shapes.items()})
    monkeypatch.setattr("engine.models.loader.open_source", lambda path: source)
    path = tmp_path / "v1-5-pruned.safetensors"
    path.write_bytes(b"\x02\x00\x00\x00\x00\x00\x00\x00{}")
    info = inspect_checkpoint(str(path))
    assert info["preset"] == "sd15" and info["conditioning"]["conditioner"] == "clip" and info["strict"]
    assert 859_000_000 < info["parameters"]["unet"] < 860_000_000
    assert info["unet"]["context_dim"] == 768 and info["autoencoder"]["downsampling_factor"] == 8


# ---------------------------------------------------------------- the node


class _Ctx:
    def __init__(self, settings):
        from engine.model_store import ModelStore

        self.settings = settings
        self.models = ModelStore()
        self.node_id = "loader"


def test_checkpoint_loader_node_keeps_the_model_and_lists_checkpoints(tiny, tmp_path):
    from engine.spec import EngineSettings
    from nodes.checkpoint_loader import CHECKPOINT_LOADER, list_checkpoints

    (tmp_path / "ae-only.safetensors").write_bytes(b"\x02\x00\x00\x00\x00\x00\x00\x00{}")
    settings = EngineSettings(device="cpu", model_dirs=(str(tiny.folder), str(tmp_path)))
    names = list_checkpoints(settings)
    assert "tiny.safetensors" in names and "ae-only.safetensors" not in names
    ctx = _Ctx(settings)
    params = {**CHECKPOINT_LOADER.default_params(), "checkpoint": "tiny.safetensors"}
    first = CHECKPOINT_LOADER.compute(ctx, {}, params)
    again = CHECKPOINT_LOADER.compute(ctx, {}, params)
    assert ctx.models.loads == 1 and again["model"] is first["model"]
    v = CHECKPOINT_LOADER.compute(ctx, {}, {**params, "prediction": "v"})
    assert ctx.models.loads == 1 and v["model"].prediction == "v" and v["model"].unet is first["model"].unet
    assert first["conditioner"].accepts == "text" and first["autoencoder"].downsample_factor == 2
    with pytest.raises(UserInputError, match="checkpoint 'nope.safetensors' not found") as info:
        CHECKPOINT_LOADER.compute(ctx, {}, {**params, "checkpoint": "nope.safetensors"})
    assert info.value.param == "checkpoint"
    (tmp_path / "bad.safetensors").write_bytes(b"\x00" * 4)
    with pytest.raises(UserInputError, match="bad.safetensors: truncated") as info:
        CHECKPOINT_LOADER.compute(ctx, {}, {**params, "checkpoint": str(tmp_path / "bad.safetensors")})
    assert info.value.param == "checkpoint"


# ---------------------------------------------------------------- start-up cost and CPU threads


def test_loading_a_token_model_imports_no_compiler_stack(tmp_path):
    """Building on meta must not pull in torch._dynamo/sympy (seconds of start-up) or transformers."""
    import subprocess

    from engine.models.loader import METADATA_CONFIG_KEY
    from engine.models.token_conditioner import TokenConditionerConfig

    tokens = TokenConditionerConfig(words=WORDS, coord_bins=8, max_tokens=8, width=128, layers=1, heads=2)
    cfg = tiny_config(ConditionerConfig("tokens", tokens.to_dict()))
    path = tmp_path / "tokens.safetensors"
    metadata = {METADATA_CONFIG_KEY: json.dumps(cfg.to_dict())}
    save_file(original_state(*random_modules(cfg)), str(path), metadata=metadata)
    code = ("import sys; from engine.models.loader import load_checkpoint; before = set(sys.modules);"
            f"loaded = load_checkpoint({str(path)!r}, 'cpu');"
            "assert loaded.conditioner.accepts is not None;"
            "heavy = sorted(m for m in set(sys.modules) - before"
            " if m.split('.')[0] in ('sympy', 'transformers') or m.startswith('torch._dynamo'));"
            "assert not heavy, heavy[:3]")
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    subprocess.run([sys.executable, "-c", code], cwd=repo, check=True, timeout=120,
                   env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_cpu_threads_leave_the_cores_other_work_keeps_busy(monkeypatch):
    from engine.models import loader

    monkeypatch.setattr(loader, "_DEFAULT_THREADS", 4)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    for busy, expected in ((0.0, 4), (1.0, 3), (3.0, 1), (9.0, 1)):
        monkeypatch.setattr(loader, "busy_cores", lambda busy=busy: busy)
        assert loader.cpu_threads() == expected, busy
    assert loader.cpu_threads(3) == 3  # asked for: kept, whatever the load
    monkeypatch.setenv("OMP_NUM_THREADS", "4")
    assert loader.cpu_threads() == 4  # the user's own setting wins over the load


def test_busy_cores_counts_the_work_running_now_not_the_minute_before(tmp_path, monkeypatch):
    from engine.models import loader

    stat = tmp_path / "loadavg"
    stat.write_text("1.90 0.80 0.40 3/210 4242\n")  # a run just ended: a high 1-minute average
    assert loader.busy_cores(samples=3, path=str(stat)) == 2.0  # 3 runnable, this reader among them
    stat.write_text("1.90 0.80 0.40 1/210 4242\n")  # only the reader runs now
    assert loader.busy_cores(samples=3, path=str(stat)) == 0.0
    monkeypatch.setattr(os, "getloadavg", lambda: (1.5, 1.0, 0.5))
    assert loader.busy_cores(path=str(tmp_path / "missing")) == 1.5  # no /proc: the load average


def test_checkpoint_loader_node_sets_the_cpu_threads_asked_for(tiny):
    from engine.spec import EngineSettings
    from nodes.checkpoint_loader import CHECKPOINT_LOADER

    before = torch.get_num_threads()
    try:
        params = {**CHECKPOINT_LOADER.default_params(), "checkpoint": str(tiny.path)}
        CHECKPOINT_LOADER.compute(_Ctx(EngineSettings(device="cpu", threads=2)), {}, params)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
