"""Every preset builds (on the meta device) and loads, strictly, a state dict with the
key names and shapes of the real released checkpoint; detection on those shapes
gives the preset back.

The expected state dicts are written here from the original code's layout
(openaimodel, ldm Encoder/Decoder, CLIP/OpenCLIP/x-transformers text models),
independently of Kiln's modules.
"""
from __future__ import annotations

import pytest
import torch

from engine.models.configs import AutoencoderConfig, CheckpointConfig, UNetConfig
from engine.models.detect import detect_config
from engine.models.loader import build_modules, check_shapes, plan_keys
from engine.models.presets import PRESET_NAMES, get_preset

Shapes = dict[str, tuple[int, ...]]

# ---------------------------------------------------------------- the original layouts, written out


def _linear(sd: Shapes, name: str, cin: int, cout: int, bias: bool = True) -> None:
    sd[f"{name}.weight"] = (cout, cin)
    if bias:
        sd[f"{name}.bias"] = (cout,)


def _conv(sd: Shapes, name: str, cin: int, cout: int, k: int, dims: int = 2, bias: bool = True) -> None:
    sd[f"{name}.weight"] = (cout, cin) + (k,) * dims
    if bias:
        sd[f"{name}.bias"] = (cout,)


def _norm(sd: Shapes, name: str, c: int) -> None:
    sd[f"{name}.weight"] = (c,)
    sd[f"{name}.bias"] = (c,)


def _resblock(sd: Shapes, p: str, cin: int, cout: int, emb: int, scale_shift: bool) -> None:
    _norm(sd, f"{p}.in_layers.0", cin)
    _conv(sd, f"{p}.in_layers.2", cin, cout, 3)
    _linear(sd, f"{p}.emb_layers.1", emb, 2 * cout if scale_shift else cout)
    _norm(sd, f"{p}.out_layers.0", cout)
    _conv(sd, f"{p}.out_layers.3", cout, cout, 3)
    if cin != cout:
        _conv(sd, f"{p}.skip_connection", cin, cout, 1)


def _spatial_transformer(sd: Shapes, p: str, c: int, depth: int, ctx: int, linear: bool) -> None:
    _norm(sd, f"{p}.norm", c)
    proj = _linear if linear else (lambda s, n, i, o: _conv(s, n, i, o, 1))
    proj(sd, f"{p}.proj_in", c, c)
    for k in range(depth):
        b = f"{p}.transformer_blocks.{k}"
        for attn, kv in (("attn1", c), ("attn2", ctx)):
            _linear(sd, f"{b}.{attn}.to_q", c, c, bias=False)
            _linear(sd, f"{b}.{attn}.to_k", kv, c, bias=False)
            _linear(sd, f"{b}.{attn}.to_v", kv, c, bias=False)
            _linear(sd, f"{b}.{attn}.to_out.0", c, c)
        _linear(sd, f"{b}.ff.net.0.proj", c, 8 * c)
        _linear(sd, f"{b}.ff.net.2", 4 * c, c)
        for n in (1, 2, 3):
            _norm(sd, f"{b}.norm{n}", c)
    proj(sd, f"{p}.proj_out", c, c)


def _attention_block(sd: Shapes, p: str, c: int) -> None:
    _norm(sd, f"{p}.norm", c)
    _conv(sd, f"{p}.qkv", c, 3 * c, 1, dims=1)
    _conv(sd, f"{p}.proj_out", c, c, 1, dims=1)


def original_unet(u: UNetConfig) -> Shapes:
    """openaimodel.UNetModel's state dict shapes (uniform num_res_blocks and depth)."""
    sd: Shapes = {}
    mc, emb = u.model_channels, 4 * u.model_channels
    _linear(sd, "time_embed.0", mc, emb)
    _linear(sd, "time_embed.2", emb, emb)
    if u.num_classes:
        sd["label_emb.weight"] = (u.num_classes, emb)
    _conv(sd, "input_blocks.0.0", u.in_channels, mc, 3)
    res = lambda p, i, o: _resblock(sd, p, i, o, emb, u.use_scale_shift_norm)

    def attention(p: str, c: int) -> None:
        if u.use_spatial_transformer:
            _spatial_transformer(sd, p, c, u.transformer_depth, u.context_dim, u.use_linear_in_transformer)
        else:
            _attention_block(sd, p, c)

    ch, ds, index, skips = mc, 1, 1, [mc]
    for level, mult in enumerate(u.channel_mult):
        for _ in range(u.num_res_blocks):
            res(f"input_blocks.{index}.0", ch, mult * mc)
            ch = mult * mc
            if ds in u.attention_resolutions:
                attention(f"input_blocks.{index}.1", ch)
            skips.append(ch)
            index += 1
        if level != len(u.channel_mult) - 1:
            if u.resblock_updown:
                res(f"input_blocks.{index}.0", ch, ch)
            else:
                _conv(sd, f"input_blocks.{index}.0.op", ch, ch, 3)
            skips.append(ch)
            index += 1
            ds *= 2
    res("middle_block.0", ch, ch)
    attention("middle_block.1", ch)
    res("middle_block.2", ch, ch)
    index = 0
    for level, mult in reversed(list(enumerate(u.channel_mult))):
        for i in range(u.num_res_blocks + 1):
            res(f"output_blocks.{index}.0", ch + skips.pop(), mult * mc)
            ch, sub = mult * mc, 1
            if ds in u.attention_resolutions:
                attention(f"output_blocks.{index}.1", ch)
                sub = 2
            if level and i == u.num_res_blocks:
                if u.resblock_updown:
                    res(f"output_blocks.{index}.{sub}", ch, ch)
                else:
                    _conv(sd, f"output_blocks.{index}.{sub}.conv", ch, ch, 3)
                ds //= 2
            index += 1
    _norm(sd, "out.0", ch)
    _conv(sd, "out.2", ch, u.out_channels, 3)
    return sd


def _ae_block(sd: Shapes, p: str, cin: int, cout: int) -> None:
    _norm(sd, f"{p}.norm1", cin)
    _conv(sd, f"{p}.conv1", cin, cout, 3)
    _norm(sd, f"{p}.norm2", cout)
    _conv(sd, f"{p}.conv2", cout, cout, 3)
    if cin != cout:
        _conv(sd, f"{p}.nin_shortcut", cin, cout, 1)


def _ae_mid(sd: Shapes, p: str, c: int, attn: bool) -> None:
    _ae_block(sd, f"{p}.block_1", c, c)
    if attn:
        _norm(sd, f"{p}.attn_1.norm", c)
        for n in ("q", "k", "v", "proj_out"):
            _conv(sd, f"{p}.attn_1.{n}", c, c, 1)
    _ae_block(sd, f"{p}.block_2", c, c)


def original_autoencoder(a: AutoencoderConfig) -> Shapes:
    """ldm AutoencoderKL / VQModel shapes (no attention outside the middle blocks)."""
    sd: Shapes = {}
    attn = a.attn_type != "none"
    _conv(sd, "encoder.conv_in", a.in_channels, a.ch, 3)
    cin = a.ch
    for i, mult in enumerate(a.ch_mult):
        for j in range(a.num_res_blocks):
            _ae_block(sd, f"encoder.down.{i}.block.{j}", cin, a.ch * mult)
            cin = a.ch * mult
        if i != len(a.ch_mult) - 1:
            _conv(sd, f"encoder.down.{i}.downsample.conv", cin, cin, 3)
    _ae_mid(sd, "encoder.mid", cin, attn)
    _norm(sd, "encoder.norm_out", cin)
    _conv(sd, "encoder.conv_out", cin, 2 * a.z_channels if a.double_z else a.z_channels, 3)
    zq = 2 if a.kind == "kl" else 1
    _conv(sd, "quant_conv", zq * a.z_channels, zq * a.embed_dim, 1)
    _conv(sd, "post_quant_conv", a.embed_dim, a.z_channels, 1)
    if a.kind == "vq":
        sd["quantize.embedding.weight"] = (a.n_embed, a.embed_dim)
    cin = a.ch * a.ch_mult[-1]
    _conv(sd, "decoder.conv_in", a.z_channels, cin, 3)
    _ae_mid(sd, "decoder.mid", cin, attn)
    for i in reversed(range(len(a.ch_mult))):
        for j in range(a.num_res_blocks + 1):
            _ae_block(sd, f"decoder.up.{i}.block.{j}", cin, a.ch * a.ch_mult[i])
            cin = a.ch * a.ch_mult[i]
        if i != 0:
            _conv(sd, f"decoder.up.{i}.upsample.conv", cin, cin, 3)
    _norm(sd, "decoder.norm_out", cin)
    _conv(sd, "decoder.conv_out", cin, a.out_ch, 3)
    return sd


def original_clip(width: int, layers: int, inter: int, vocab: int = 49408, positions: int = 77) -> Shapes:
    sd: Shapes = {}
    b = "transformer.text_model."
    sd[b + "embeddings.token_embedding.weight"] = (vocab, width)
    sd[b + "embeddings.position_embedding.weight"] = (positions, width)
    sd[b + "embeddings.position_ids"] = (1, positions)  # present in SD 1.x files; nothing loads it
    for n in range(layers):
        p = f"{b}encoder.layers.{n}"
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            _linear(sd, f"{p}.self_attn.{proj}", width, width)
        _norm(sd, f"{p}.layer_norm1", width)
        _norm(sd, f"{p}.layer_norm2", width)
        _linear(sd, f"{p}.mlp.fc1", width, inter)
        _linear(sd, f"{p}.mlp.fc2", inter, width)
    _norm(sd, b + "final_layer_norm", width)
    return sd


def original_openclip(width: int = 1024, layers: int = 24) -> Shapes:
    sd: Shapes = {"model.token_embedding.weight": (49408, width), "model.positional_embedding": (77, width),
                  "model.text_projection": (width, width), "model.logit_scale": ()}
    for n in range(layers):
        p = f"model.transformer.resblocks.{n}"
        _norm(sd, f"{p}.ln_1", width)
        sd[f"{p}.attn.in_proj_weight"] = (3 * width, width)
        sd[f"{p}.attn.in_proj_bias"] = (3 * width,)
        _linear(sd, f"{p}.attn.out_proj", width, width)
        _norm(sd, f"{p}.ln_2", width)
        _linear(sd, f"{p}.mlp.c_fc", width, 4 * width)
        _linear(sd, f"{p}.mlp.c_proj", 4 * width, width)
    _norm(sd, "model.ln_final", width)
    return sd


def original_x_transformer(dim: int, depth: int, vocab: int, max_len: int) -> Shapes:
    """ldm BERTEmbedder: TransformerWrapper(Encoder(dim, depth)), 8 heads of 64, ff x4."""
    sd: Shapes = {"transformer.token_emb.weight": (vocab, dim), "transformer.pos_emb.emb.weight": (max_len, dim)}
    for n in range(depth):
        a, f = f"transformer.attn_layers.layers.{2 * n}", f"transformer.attn_layers.layers.{2 * n + 1}"
        _norm(sd, f"{a}.0", dim)
        for proj in ("to_q", "to_k", "to_v"):
            _linear(sd, f"{a}.1.{proj}", dim, 512, bias=False)
        _linear(sd, f"{a}.1.to_out", 512, dim)
        _norm(sd, f"{f}.0", dim)
        _linear(sd, f"{f}.1.net.0.0", dim, 4 * dim)
        _linear(sd, f"{f}.1.net.2", 4 * dim, dim)
    _norm(sd, "transformer.norm", dim)
    _linear(sd, "transformer.to_logits", dim, vocab)
    return sd


def original_conditioner(cfg: CheckpointConfig) -> Shapes:
    kind, p = cfg.conditioner.kind, cfg.conditioner.params
    if kind == "clip":
        return original_clip(p["width"], p["layers"], p["intermediate"])
    if kind == "openclip":
        return original_openclip(p["width"], p["layers"])
    if kind in ("bert", "bbox"):
        return original_x_transformer(p["n_embed"], p["n_layer"], p["vocab_size"], p["max_seq_len"])
    if kind == "class":
        return {"embedding.weight": (p["n_classes"], p["embed_dim"])}
    if kind == "spatial":
        return {"channel_mapper.weight": (p["out_channels"], p["in_channels"], 1, 1)}
    return {}


def original_checkpoint(cfg: CheckpointConfig) -> Shapes:
    sd: Shapes = {"betas": (1000,), "alphas_cumprod": (1000,)}
    sd.update({f"model.diffusion_model.{k}": v for k, v in original_unet(cfg.unet).items()})
    sd.update({f"first_stage_model.{k}": v for k, v in original_autoencoder(cfg.autoencoder).items()})
    sd.update({f"cond_stage_model.{k}": v for k, v in original_conditioner(cfg).items()})
    return sd


# ---------------------------------------------------------------- tests

SAME_ARCHITECTURE = [{"celebahq256", "ffhq256", "lsun_beds256"}, {"sd2-512", "sd2-768-v"}]


def test_known_key_counts_of_real_checkpoints():
    """Spot checks of the written-out layouts against counts of the real SD 1.5 file."""
    sd15 = get_preset("sd15")
    assert len(original_unet(sd15.unet)) == 686
    assert len(original_autoencoder(sd15.autoencoder)) == 248
    assert len(original_clip(768, 12, 3072)) == 197  # 196 weights + position_ids
    assert sum(1 for k in original_checkpoint(get_preset("cin256-v2")) if k.startswith("cond_stage_model.")) == 1


@pytest.mark.parametrize("name", PRESET_NAMES)
def test_preset_loads_the_real_layout_strictly_on_meta(name):
    cfg = get_preset(name)
    shapes = original_checkpoint(cfg)
    with torch.device("meta"):
        unet, ae, cond = build_modules(cfg)
    plans, report = plan_keys(unet, ae, cond, shapes, use_ema=False)
    assert report["missing"] == [] and report["unexpected"] == [], (report["missing"][:3], report["unexpected"][:3])
    check_shapes(plans, shapes, name)
    for plan in plans:
        state = {}
        for key, (src, transform) in plan.entries.items():
            tensor = torch.empty(shapes[src], device="meta")
            state[key] = transform(tensor) if transform else tensor
        result = plan.module.load_state_dict(state, strict=True, assign=True)
        assert not result.missing_keys and not result.unexpected_keys


@pytest.mark.parametrize("name", PRESET_NAMES)
def test_detection_gives_the_preset_back(name):
    shapes = original_checkpoint(get_preset(name))
    detected = detect_config(shapes)
    group = next((g for g in SAME_ARCHITECTURE if name in g), {name})
    assert detected.config.preset in group
    assert set(detected.candidates) == group
    expected = get_preset(detected.config.preset)
    assert detected.config == expected


@pytest.mark.parametrize("name,filename", [("ffhq256", "ffhq-ldm-vq-4.ckpt"), ("lsun_beds256", "lsun_bedrooms.ckpt"),
                                           ("sd2-768-v", "v2-1_768-ema-pruned.safetensors"),
                                           ("sd2-512", "v2-1_512-ema-pruned.safetensors")])
def test_file_name_picks_among_same_architecture_presets(name, filename):
    detected = detect_config(original_checkpoint(get_preset(name)), filename)
    assert detected.config.preset == name
    assert detected.config.diffusion.prediction == ("v" if name == "sd2-768-v" else "eps")


def test_detection_of_a_custom_architecture_reads_every_size():
    unet = UNetConfig(in_channels=5, out_channels=4, model_channels=64, num_res_blocks=3, attention_resolutions=(2, 4),
                      channel_mult=(1, 2, 3), use_spatial_transformer=True, transformer_depth=2, context_dim=96,
                      use_linear_in_transformer=True, num_classes=10)
    ae = AutoencoderConfig(kind="vq", embed_dim=3, z_channels=3, double_z=False, ch=64, ch_mult=(1, 2, 2, 4),
                           num_res_blocks=1, n_embed=512)
    cfg = CheckpointConfig(unet, ae, get_preset("sd15").diffusion, get_preset("cin256-v2").conditioner)
    cfg.conditioner.params.update(embed_dim=96, n_classes=11)
    found = detect_config(original_checkpoint(cfg)).config
    assert found.preset == "custom"
    u, a = found.unet, found.autoencoder
    assert (u.in_channels, u.out_channels, u.model_channels, u.num_res_blocks) == (5, 4, 64, 3)
    assert u.channel_mult == (1, 2, 3) and u.attention_resolutions == (2, 4)
    assert (u.transformer_depth, u.context_dim, u.use_linear_in_transformer, u.num_classes) == (2, 96, True, 10)
    assert (a.kind, a.embed_dim, a.z_channels, a.ch, a.ch_mult, a.num_res_blocks, a.n_embed) == \
        ("vq", 3, 3, 64, (1, 2, 2, 4), 1, 512)
    assert found.conditioner.kind == "class" and found.conditioner.params["n_classes"] == 11
