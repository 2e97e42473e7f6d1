"""Conditioners: CLIP parity through the loader, long prompts, OpenCLIP, the paper's BERT and
layout tokens, classes, semantic maps, images, the built-in token model, and the nodes."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from test_checkpoint_loading import (  # noqa: F401
    original_state,
    random_modules,
    tiny,
    tiny_clip,
    tiny_config,
    write_clip_tokenizer,
)

from engine.errors import KilnError, UserInputError
from engine.models.conditioners import (
    BBoxConditioner,
    BERTConditioner,
    ClassConditioner,
    CLIPConditioner,
    IdentityConditioner,
    MaskedImageConditioner,
    SpatialConditioner,
    build_conditioner,
)
from engine.models.configs import ConditionerConfig
from engine.models.keymaps import COND_PREFIX
from engine.models.loader import load_checkpoint
from engine.models.tokenizers import WordTokenizer
from engine.values import Conditioning, SemanticMap

# ---------------------------------------------------------------- CLIP


def test_clip_through_the_loader_matches_transformers(tiny):  # noqa: F811
    from transformers import CLIPTokenizer

    loaded = load_checkpoint(tiny.path, "cpu")
    reference = tiny.modules[2].text_model  # the transformers CLIPTextModel the file was written from
    tokenizer = CLIPTokenizer.from_pretrained(str(tiny.folder / "tokenizer"), local_files_only=True)
    prompts = ["a red circle on the white background", "blue square"]
    ids = tokenizer(prompts, padding="max_length", max_length=77, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        expected = reference(input_ids=ids).last_hidden_state
    got = loaded.conditioner.encode(prompts)
    assert got.crossattn.shape == (2, 77, 128) and got.meta["prompt"] == prompts
    assert (got.crossattn - expected).abs().max() <= 1e-5


def test_long_prompts_are_encoded_in_chunks_of_75_tokens(tiny):  # noqa: F811
    loaded = load_checkpoint(tiny.path, "cpu")
    cond = loaded.conditioner
    words = ("a red circle at the top " * 17).split()  # 102 one-token words
    long_prompt = " ".join(words)
    chunks = cond.token_chunks(long_prompt)
    bos, eos = cond.tokenizer.bos_token_id, cond.tokenizer.eos_token_id
    assert len(chunks) == 2 and all(len(c) == 77 and c[0] == bos for c in chunks)
    assert chunks[0][76] == eos and chunks[1][1 + 27] == eos and chunks[1][29:] == [eos] * 48
    both = cond.encode([long_prompt, "a red circle"])
    assert both.crossattn.shape == (2, 154, 128)
    first = cond.encode_ids(torch.tensor([chunks[0]]))
    torch.testing.assert_close(both.crossattn[0, :77], first[0], rtol=0, atol=1e-6)
    empty = cond.encode([""]).crossattn
    torch.testing.assert_close(both.crossattn[1, 77:], empty[0], rtol=0, atol=1e-6)


def test_missing_tokenizer_is_a_clear_error_at_encode_time(tiny, tmp_path):  # noqa: F811
    path = tmp_path / "lonely.safetensors"
    path.write_bytes(tiny.path.read_bytes())
    loaded = load_checkpoint(path, "cpu")
    assert loaded.report["tokenizer"] == "missing"
    with pytest.raises(KilnError, match=r"no CLIP tokenizer found \(looked in: .*lonely.tokenizer.*HF cache "
                                        r"openai/clip-vit-large-patch14.*folder named 'tokenizer' beside"):
        loaded.conditioner.encode(["a red circle"])


def _openclip_state(text_model) -> dict[str, torch.Tensor]:
    """An OpenCLIP text tower state dict (fused q/k/v) holding a CLIPTextModel's weights."""
    sd = text_model.state_dict()
    out = {"model.token_embedding.weight": sd["embeddings.token_embedding.weight"],
           "model.positional_embedding": sd["embeddings.position_embedding.weight"],
           "model.ln_final.weight": sd["final_layer_norm.weight"], "model.ln_final.bias": sd["final_layer_norm.bias"],
           "model.text_projection": torch.randn(128, 64), "model.logit_scale": torch.tensor(4.6)}
    for n in range(text_model.config.num_hidden_layers):
        a, b = f"encoder.layers.{n}.", f"model.transformer.resblocks.{n}."
        for kind in ("weight", "bias"):
            out[b + f"attn.in_proj_{kind}"] = torch.cat([sd[a + f"self_attn.{p}_proj.{kind}"] for p in "qkv"])
            out[b + f"attn.out_proj.{kind}"] = sd[a + f"self_attn.out_proj.{kind}"]
            out[b + f"ln_1.{kind}"] = sd[a + f"layer_norm1.{kind}"]
            out[b + f"ln_2.{kind}"] = sd[a + f"layer_norm2.{kind}"]
            out[b + f"mlp.c_fc.{kind}"] = sd[a + f"mlp.fc1.{kind}"]
            out[b + f"mlp.c_proj.{kind}"] = sd[a + f"mlp.fc2.{kind}"]
    return {k: v.clone().contiguous() for k, v in out.items()}


def test_openclip_layout_loads_onto_clip_and_uses_the_penultimate_layer(tmp_path):
    cfg = tiny_config(tiny_clip("openclip", "penultimate"))
    unet, ae, cond = random_modules(cfg, seed=5)
    sd = {k: v for k, v in original_state(unet, ae, cond).items() if not k.startswith(COND_PREFIX)}
    sd.update({COND_PREFIX + k: v for k, v in _openclip_state(cond.text_model).items()})
    path = tmp_path / "sd2ish.safetensors"
    save_file(sd, str(path))
    write_clip_tokenizer(tmp_path / "tokenizer")
    loaded = load_checkpoint(path, "cpu")
    assert loaded.conditioner.kind == "openclip" and loaded.report["strict"]
    chunk = loaded.conditioner.token_chunks("a red circle")[0]
    assert chunk[5:] == [0] * 72  # OpenCLIP pads with 0, not EOS
    ids = torch.tensor([chunk])
    with torch.no_grad():
        hidden = cond.text_model(input_ids=ids, output_hidden_states=True).hidden_states[-2]
        expected = cond.text_model.final_layer_norm(hidden)
    assert (loaded.conditioner.encode(["a red circle"]).crossattn - expected).abs().max() <= 1e-5


# ---------------------------------------------------------------- the paper's BERT text model


def _bert_config(words=("a", "red", "blue", "circle", "square")) -> ConditionerConfig:
    return ConditionerConfig("bert", {"n_embed": 32, "n_layer": 2, "vocab_size": 3 + len(words), "max_seq_len": 8,
                                      "words": list(words)})


def _x_transformer_reference(sd: dict[str, torch.Tensor], ids: torch.Tensor, depth: int) -> torch.Tensor:
    """The x-transformers Encoder forward written out: pre-norm, 8 heads of 64, GELU feed-forward."""
    x = sd["transformer.token_emb.weight"][ids] + sd["transformer.pos_emb.emb.weight"][: ids.shape[1]]
    for n in range(depth):
        a, f = f"transformer.attn_layers.layers.{2 * n}.", f"transformer.attn_layers.layers.{2 * n + 1}."
        h = F.layer_norm(x, x.shape[-1:], sd[a + "0.weight"], sd[a + "0.bias"])
        q, k, v = (h @ sd[a + f"1.to_{p}.weight"].T for p in "qkv")
        split = lambda t: t.view(t.shape[0], t.shape[1], 8, 64).transpose(1, 2)
        scores = torch.einsum("bhid,bhjd->bhij", split(q), split(k)) * 64 ** -0.5
        out = torch.einsum("bhij,bhjd->bhid", scores.softmax(-1), split(v)).transpose(1, 2).flatten(2)
        x = x + out @ sd[a + "1.to_out.weight"].T + sd[a + "1.to_out.bias"]
        h = F.layer_norm(x, x.shape[-1:], sd[f + "0.weight"], sd[f + "0.bias"])
        h = F.gelu(h @ sd[f + "1.net.0.0.weight"].T + sd[f + "1.net.0.0.bias"])
        x = x + h @ sd[f + "1.net.2.weight"].T + sd[f + "1.net.2.bias"]
    return F.layer_norm(x, x.shape[-1:], sd["transformer.norm.weight"], sd["transformer.norm.bias"])


def test_bert_embedder_matches_the_original_computation_and_key_names():
    torch.manual_seed(0)
    cond = build_conditioner(_bert_config(), "crossattn")
    sd = cond.state_dict()
    assert {"transformer.pos_emb.emb.weight", "transformer.attn_layers.layers.0.1.to_q.weight",
            "transformer.attn_layers.layers.3.1.net.0.0.weight", "transformer.to_logits.weight"} <= set(sd)
    assert sd["transformer.attn_layers.layers.0.1.to_q.weight"].shape == (512, 32)
    out = cond.encode(["a red circle", "blue square"])
    ids = torch.tensor([[1, 3, 4, 6, 2, 0, 0, 0], [1, 5, 7, 2, 0, 0, 0, 0]])
    torch.testing.assert_close(out.crossattn, _x_transformer_reference(sd, ids, 2), rtol=0, atol=1e-5)


def test_word_tokenizer_names_unknown_words_and_round_trips(tmp_path):
    tok = WordTokenizer(["a", "red", "circle"], max_length=6)
    assert tok.encode("A red, circle.") == [1, 3, 4, 5, 2, 0]
    with pytest.raises(UserInputError, match=r"unknown words 'purple', 'dog'; this model knows: a red circle") as info:
        tok.encode("a purple dog")
    assert info.value.param == "text"
    with pytest.raises(UserInputError, match="5 words; this model reads at most 4"):
        tok.encode("a red circle a red")
    tok.to_file(tmp_path / "vocab.json")
    assert WordTokenizer.from_file(tmp_path / "vocab.json").encode("red") == tok.encode("red")
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(KilnError, match="bad.json: not a word vocabulary"):
        WordTokenizer.from_file(tmp_path / "bad.json")


# ---------------------------------------------------------------- layouts


def test_layout_boxes_become_the_papers_tokens():
    cfg = ConditionerConfig("bbox", {"n_embed": 32, "n_layer": 1, "vocab_size": 8192, "max_seq_len": 92,
                                     "max_objects": 30, "encode_crop": True, "labels": ["red circle", "blue square"]})
    cond = build_conditioner(cfg, "crossattn")
    tokens = cond.tokens([{"label": "blue square", "box": [0.1, 0.2, 0.5, 0.6]}])
    assert len(tokens) == 92
    # 90x90 grid: round(0.2*89)*90 + round(0.1*89) and round(0.6*89)*90 + round(0.5*89)
    assert tokens[:3] == [1, 18 * 90 + 9, 53 * 90 + 44]
    assert tokens[3:90] == [8191] * 87 and tokens[90:] == [0, 89 * 90 + 89]
    out = cond.encode([[{"label": "red circle", "box": [0, 0, 1, 1]}]])
    assert out.crossattn.shape == (1, 92, 32) and out.meta["layout"][0][0]["label"] == "red circle"
    with pytest.raises(UserInputError, match="layout box 1: unknown label 'dog'; this model knows: red circle, blue"):
        cond.tokens([{"label": "dog", "box": [0, 0, 1, 1]}])
    unnamed = BBoxConditioner(ConditionerConfig("bbox", {**cfg.params, "labels": []}))
    assert unnamed.tokens([{"label": 12, "box": [0, 0, 1, 1]}])[0] == 12
    with pytest.raises(UserInputError, match="give class numbers"):
        unnamed.tokens([{"label": "red circle", "box": [0, 0, 1, 1]}])


# ---------------------------------------------------------------- classes, maps, images


def test_class_embedder_gives_one_context_token_per_class():
    cond = build_conditioner(ConditionerConfig("class", {"n_classes": 11, "embed_dim": 16, "null_class": 10}),
                             "crossattn")
    out = cond.encode([3, 7])
    assert out.crossattn.shape == (2, 1, 16)
    torch.testing.assert_close(out.crossattn[:, 0], cond.embedding.weight[[3, 7]])
    torch.testing.assert_close(cond.unconditional(1).crossattn[0, 0], cond.embedding.weight[10])
    with pytest.raises(UserInputError, match="class 11 is outside 0..10"):
        cond.encode([11])
    adm = build_conditioner(ConditionerConfig("class", {"n_classes": 5, "embed_dim": 0}), "adm")
    assert adm.encode([4]).y.tolist() == [4] and adm.encode([4]).crossattn is None
    with pytest.raises(UserInputError, match="no 'no class' label"):
        adm.unconditional(1)


def test_spatial_rescaler_one_hot_halves_and_maps_channels():
    cfg = ConditionerConfig("spatial", {"n_stages": 2, "in_channels": 21, "out_channels": 3, "method": "bilinear",
                                        "multiplier": 0.5, "bias": False})
    cond = build_conditioner(cfg, "concat")
    assert set(cond.state_dict()) == {"channel_mapper.weight"}
    labels = torch.randint(0, 21, (1, 16, 16))
    out = cond.encode(SemanticMap(labels, 21))
    x = F.one_hot(labels, 21).permute(0, 3, 1, 2).float()
    for _ in range(2):
        x = F.interpolate(x, scale_factor=0.5, mode="bilinear")
    expected = F.conv2d(x, cond.channel_mapper.weight)
    assert out.concat.shape == (1, 3, 4, 4) and out.crossattn is None
    torch.testing.assert_close(out.concat, expected)
    with pytest.raises(UserInputError, match="class 25; this model knows 0..20"):
        cond.encode(SemanticMap(torch.full((1, 4, 4), 25), 26))


def test_identity_and_masked_image_conditioning_follow_each_models_conventions():
    pixels = torch.rand(1, 3, 16, 16)
    ident = IdentityConditioner(ConditionerConfig("identity", {}))
    torch.testing.assert_close(ident.encode(pixels).concat, pixels * 2 - 1)
    assert ident.encode(pixels, size=(32, 32)).concat.shape == (1, 3, 32, 32)

    class FakeFirstStage:  # a 4x average pool standing in for the autoencoder
        def encode_pixels(self, p):
            return F.avg_pool2d(p, 4)

    mask = torch.zeros(1, 1, 16, 16)
    mask[..., :8, :] = 1  # top half is the hole
    ldm = MaskedImageConditioner(ConditionerConfig("masked_image", {"order": "image_mask", "mask_range": "pm1"}))
    out = ldm.encode(pixels, mask, FakeFirstStage()).concat
    assert out.shape == (1, 4, 4, 4)
    assert torch.all(out[:, :3, :2] == 0)  # hole filled with black before encoding
    assert out[0, 3].tolist() == [[1.0] * 4] * 2 + [[-1.0] * 4] * 2
    sd = MaskedImageConditioner(ConditionerConfig("masked_image", {"order": "mask_image", "mask_range": "01",
                                                                    "fill": "gray"}))
    out = sd.encode(pixels, mask, FakeFirstStage()).concat
    assert out[0, 0].tolist() == [[1.0] * 4] * 2 + [[0.0] * 4] * 2 and torch.allclose(out[:, 1:, :2], torch.tensor(0.5))


# ---------------------------------------------------------------- the built-in token model and the nodes


def test_builtin_token_model_loads_from_metadata_and_encodes_text_and_layouts(tmp_path):
    from nodes.conditioning_nodes import LAYOUT_ENCODE, TEXT_ENCODE

    words = ["a", "red", "blue", "circle", "square"]
    cond_cfg = ConditionerConfig("tokens", {"words": words, "coord_bins": 8, "max_tokens": 16, "width": 128,
                                            "layers": 1, "heads": 2})
    cfg = tiny_config(cond_cfg)
    unet, ae, cond = random_modules(cfg, seed=2)
    path = tmp_path / "kiln-shapes-t2i.safetensors"
    save_file(original_state(unet, ae, cond), str(path), metadata={"kiln_config": json.dumps(cfg.to_dict())})
    loaded = load_checkpoint(path, "cpu")
    assert loaded.conditioner.kind == "tokens"
    text = TEXT_ENCODE.compute(None, {"conditioner": loaded.conditioner}, {"text": "a red circle"})["conditioning"]
    torch.testing.assert_close(text.crossattn, cond.inner.encode_texts(["a red circle"]), rtol=0, atol=1e-6)
    boxes = [{"label": "blue square", "box": [0.1, 0.1, 0.4, 0.4]}]
    layout = LAYOUT_ENCODE.compute(None, {"conditioner": loaded.conditioner}, {"boxes": boxes})["conditioning"]
    assert layout.crossattn.shape == (1, 16, 128)
    no_words = {**cfg.to_dict(), "conditioner": {"kind": "tokens", "params": {"width": 128}}}
    save_file(original_state(unet, ae, cond), str(tmp_path / "nowords.safetensors"),
              metadata={"kiln_config": json.dumps(no_words)})
    with pytest.raises(KilnError, match="nowords.safetensors: cannot build the model: .*needs its word list"):
        load_checkpoint(tmp_path / "nowords.safetensors", "cpu")


def test_encode_nodes_say_which_node_a_model_needs():
    from nodes.conditioning_nodes import CLASS_ENCODE, LAYOUT_ENCODE, TEXT_ENCODE, ZERO_OUT

    classes = build_conditioner(ConditionerConfig("class", {"n_classes": 4, "embed_dim": 8, "null_class": 3}),
                                "crossattn")
    with pytest.raises(UserInputError, match="conditioned on class, not text; use ClassEncode"):
        TEXT_ENCODE.compute(None, {"conditioner": classes}, {"text": "a cat"})
    out = CLASS_ENCODE.compute(None, {"conditioner": classes}, {"class_id": 2, "unconditional": False})
    assert out["conditioning"].crossattn.shape == (1, 1, 8)
    none = build_conditioner(ConditionerConfig("none"), None)
    with pytest.raises(UserInputError, match="this model is unconditional"):
        TEXT_ENCODE.compute(None, {"conditioner": none}, {"text": "a cat"})
    bbox = build_conditioner(ConditionerConfig("bbox", {"n_embed": 16, "n_layer": 1, "vocab_size": 64,
                                                        "max_seq_len": 11, "max_objects": 3}), "crossattn")
    with pytest.raises(UserInputError, match=r'the layout: box 1, "box": \[0.5, 0, 0.2, 1\] needs x0 < x1') as info:
        LAYOUT_ENCODE.compute(None, {"conditioner": bbox}, {"boxes": [{"label": "1", "box": [0.5, 0, 0.2, 1]}]})
    assert info.value.param == "boxes"
    zero = ZERO_OUT.compute(None, {"conditioning": Conditioning(crossattn=torch.ones(1, 2, 3))}, {})["conditioning"]
    assert torch.count_nonzero(zero.crossattn) == 0 and zero.crossattn.shape == (1, 2, 3)


def test_clip_conditioner_builds_without_weights_on_meta():
    with torch.device("meta"):
        cond = build_conditioner(tiny_clip(), "crossattn")
    assert isinstance(cond, CLIPConditioner) and cond.text_model.embeddings.token_embedding.weight.is_meta
    assert isinstance(build_conditioner(_bert_config(), "crossattn"), BERTConditioner)
    assert isinstance(build_conditioner(ConditionerConfig("class", {"n_classes": 2, "embed_dim": 2}), "adm"),
                      ClassConditioner)
    assert isinstance(build_conditioner(ConditionerConfig("spatial", {"in_channels": 3}), "concat"),
                      SpatialConditioner)
    with pytest.raises(KilnError, match="unknown conditioner kind 'dreams'"):
        build_conditioner(ConditionerConfig("dreams"), None)
