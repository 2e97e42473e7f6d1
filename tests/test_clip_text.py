"""CLIP text: the shipped tokenizer, ComfyUI prompt weighting, textual-inversion embeddings,
CLIP Set Last Layer, and an SD 1.x file alone (no tokenizer folder, empty Hugging Face cache)."""
from __future__ import annotations

import functools
import gzip
import itertools
import re
import shutil
import types
import unicodedata

import pytest
import regex
import torch
from safetensors.torch import save_file
from torch import nn
from zoo_support import shrink, write_zoo_checkpoint

from engine.choices import EMBEDDINGS, model_folders
from engine.errors import UserInputError
from engine.models.clip_vocab import (
    BUNDLED_CLIP_BPE,
    BundledCLIPTokenizer,
    bundled_clip_tokenizer,
    write_tokenizer_files,
)
from engine.models.conditioners import build_conditioner
from engine.models.configs import ConditionerConfig
from engine.models.presets import get_preset
from engine.models.prompt_weights import pack_chunks, weighted_segments
from engine.spec import EngineSettings

PROMPTS = [
    "a photo of a cat", "A Photo, of 3 cats!! résumé 日本 😀 don't", "  several   spaces\tand\nnewlines ",
    "numbers 1234567 3.14 -5 1/2", "masterpiece, best quality, ultra-detailed, 8k uhd, dslr, f/1.8",
    "ÄÖÜ straße façade naïve Ελληνικά русский", "emoji 🎨🖌️ mixed ✨ ~!@#$%^&*()_+{}|:\"<>?",
    "we'll they've I'm it's WE'LL", "email@example.com http://x.y/z?q=1&amp;r=2", "<|endoftext|> after",
    " ".join(["extremely detailed watercolour landscape with mountains rivers and birds"] * 12),
]


# ---------------------------------------------------------------- the shipped tokenizer


@functools.lru_cache(maxsize=1)
def reference_tables() -> tuple[list[str], dict, dict, dict]:
    """Merge lines, pair ranks, byte characters and token ids, from the shipped file."""
    lines = gzip.decompress(BUNDLED_CLIP_BPE.read_bytes()).decode().split("\n")[1:48895]
    ranks = {tuple(line.split()): i for i, line in enumerate(lines)}
    printable = [b for b in range(256) if 33 <= b <= 126 or 161 <= b <= 172 or 174 <= b <= 255]
    chars = {b: chr(b) for b in printable}
    chars.update({b: chr(256 + i) for i, b in enumerate(b for b in range(256) if b not in chars)})
    symbols = [chars[b] for b in printable] + [chars[b] for b in range(256) if b not in printable]
    ids = {s: i for i, s in enumerate(symbols + [s + "</w>" for s in symbols] + ["".join(p) for p in ranks])}
    ids.update({"<|startoftext|>": 49406, "<|endoftext|>": 49407})
    return lines, ranks, chars, ids


def reference_ids(text: str) -> list[int]:
    """CLIP BPE written out here from the shipped merges: NFC, whitespace collapsed, lower case,
    CLIP's split pattern, bytes as GPT-2's characters, then the lowest-ranked pair merged first."""
    lines, ranks, chars, ids = reference_tables()
    text = re.sub(r"\s+", " ", unicodedata.normalize("NFC", text)).strip().lower()
    pattern = r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"
    out: list[int] = []
    for piece in regex.findall(pattern, text, regex.IGNORECASE):
        if piece in ids and piece.startswith("<|"):
            out.append(ids[piece])
            continue
        word = [chars[b] for b in piece.encode("utf-8")]
        word[-1] += "</w>"
        while len(word) > 1:
            best = min(ranks.get(pair, 1 << 30) for pair in itertools.pairwise(word))
            if best == 1 << 30:
                break
            pair, merged, i = lines[best].split(), [], 0
            while i < len(word):
                if i + 1 < len(word) and [word[i], word[i + 1]] == pair:
                    merged.append(word[i] + word[i + 1])
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = merged
        out += [ids[t] for t in word]
    return out


def test_the_shipped_tokenizer_is_clips():
    tokenizer = bundled_clip_tokenizer()
    assert len(tokenizer) == 49408 and (tokenizer.bos_token_id, tokenizer.eos_token_id) == (49406, 49407)
    assert tokenizer("a photo of a cat")["input_ids"] == [49406, 320, 1125, 539, 320, 2368, 49407]
    lazy = BundledCLIPTokenizer()
    assert lazy("a photo of a cat")["input_ids"] == tokenizer("a photo of a cat")["input_ids"]
    for text in PROMPTS:
        assert tokenizer(text, add_special_tokens=False)["input_ids"] == reference_ids(text), text


def test_the_shipped_tokenizer_matches_transformers_from_the_derived_files(tmp_path):
    from transformers import CLIPTokenizer

    write_tokenizer_files(tmp_path)
    assert (tmp_path / "merges.txt").read_text().startswith("#version: 0.2\ni n\n")
    from_files = CLIPTokenizer.from_pretrained(str(tmp_path), local_files_only=True)
    shipped = bundled_clip_tokenizer()
    for text in PROMPTS:
        assert shipped(text)["input_ids"] == from_files(text)["input_ids"], text


# ---------------------------------------------------------------- tiny CLIP models


def tiny_clip(kind: str = "clip", layers: int = 3):
    """The zoo's shrunk SD text model (49408 tokens, width 64), here with 3 layers, random weights."""
    preset = "sd15" if kind == "clip" else "sd2-512"
    params = {**shrink(get_preset(preset)).conditioner.params, "layers": layers}
    cond = build_conditioner(ConditionerConfig(kind, params), None, BundledCLIPTokenizer())
    torch.manual_seed(0)
    with torch.no_grad():
        for p in cond.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return cond.eval()


@pytest.fixture(scope="module")
def sd1():
    return tiny_clip()


def word_ids(words: list[str]) -> list[int]:
    tok = bundled_clip_tokenizer()
    return [i for w in words for i in tok(w, add_special_tokens=False)["input_ids"]]


def row(ids: list[int], pad: int = 49407) -> list[int]:
    return [49406, *ids, 49407] + [pad] * (75 - len(ids))


def expected_weighted(cond, ids: list[int], weights: list[float]) -> torch.Tensor:
    """ComfyUI's default weighting, written out: z_empty + (z - z_empty) * w where w != 1."""
    with torch.no_grad():
        z = cond.encode_ids(torch.tensor([row(ids)]))[0]
        z_empty = cond.encode_ids(torch.tensor([row([])]))[0]
    w = torch.tensor([1.0, *weights, 1.0] + [1.0] * (75 - len(ids)))[:, None]
    return torch.where(w != 1, z_empty + (z - z_empty) * w, z)


def _segments(text: str) -> list[tuple[str, float]]:
    """weighted_segments with the weights rounded, so that texts compare exactly and weights to 1e-9."""
    return [(part, round(weight, 9)) for part, weight in weighted_segments(text)]


def _expected(pairs: list[tuple[str, float]]) -> list[tuple[str, float]]:
    return [(part, round(weight, 9)) for part, weight in pairs]


def test_weight_syntax_is_read_as_comfyui_reads_it():
    up, down = 1.1, 1 / 1.1
    assert _segments("a (red:1.5) circle, [blue] ((square))") == _expected(
        [("a ", 1.0), ("red", 1.5), (" circle, ", 1.0), ("blue", down), (" ", 1.0), ("square", up * up)])
    assert weighted_segments(r"a \(b\) c \[d\]") == [("a (b) c [d]", 1.0)]
    assert _segments("(a (b:1.5) c)") == _expected([("a ", up), ("b", 1.5), (" c", up)])
    assert _segments("(a:1.2 (b))") == _expected([("a:1.2 ", up), ("b", up * up)])
    assert _segments("(a (b) :0.5)") == _expected([("a ", 0.5), ("b", 0.55), (" ", 0.5)])
    assert weighted_segments("smile :) (cat:1.2)") == [("smile :) (cat:1.2)", 1.0)]  # a stray ")"
    assert weighted_segments("(cat") == [("(cat", 1.0)]
    assert _segments("(:1.2) (x:nan)") == _expected([(":1.2", up), (" ", 1.0), ("x:nan", up)])


def test_words_are_packed_whole_into_chunks_as_comfyui_packs_them():
    b, e, p = 100, 101, 0
    small = pack_chunks([[(1, 1.0)] * 5, [(2, 2.0)] * 4], b, e, p, length=10)
    assert [[t for t, _ in r] for r in small] == [[b, 1, 1, 1, 1, 1, e, p, p, p], [b, 2, 2, 2, 2, e, p, p, p, p]]
    assert [w for _, w in small[1]] == [1.0, 2.0, 2.0, 2.0, 2.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    large = pack_chunks([[(1, 1.0)] * 5, [(3, 1.0)] * 9], b, e, p, length=10)  # 9 tokens >= 8: split
    assert [[t for t, _ in r] for r in large] == [[b, 1, 1, 1, 1, 1, 3, 3, 3, e], [b, 3, 3, 3, 3, 3, 3, e, p, p]]


def test_weighted_prompts_follow_the_formula(sd1):
    prompt = "a (red:1.5) circle, [blue] ((square))"
    ids = word_ids(["a", "red", "circle", ",", "blue", "square"])
    weights = [1.0, 1.5, 1.0, 1.0, 1 / 1.1, 1.1 * 1.1]
    got = sd1.encode([prompt]).crossattn
    assert got.shape == (1, 77, 64)
    torch.testing.assert_close(got[0], expected_weighted(sd1, ids, weights), rtol=0, atol=1e-5)
    plain = sd1.encode(["a red circle, blue square"]).crossattn  # no syntax: read as before
    with torch.no_grad():
        before = sd1.encode_ids(torch.tensor(sd1.token_chunks("a red circle, blue square")))
    assert torch.equal(plain[0], before[0])
    same = sd1.encode(["(a red circle:1.0)"]).crossattn  # syntax, all weights 1: no z_empty mixing
    torch.testing.assert_close(same[0], before[0][:77] * 0 + sd1.encode(["a red circle"]).crossattn[0],
                               rtol=0, atol=1e-6)


def test_long_weighted_prompts_are_chunked_and_batched_with_plain_ones(sd1):
    long_prompt = " ".join(["cat"] * 70 + ["(dog:1.3)"] * 10)  # 80 one-token words: 75 + 5
    both = sd1.encode([long_prompt, "a cat"]).crossattn
    assert both.shape == (2, 154, 64)
    first = expected_weighted(sd1, word_ids(["cat"] * 70 + ["dog"] * 5), [1.0] * 70 + [1.3] * 5)
    second = expected_weighted(sd1, word_ids(["dog"] * 5), [1.3] * 5)
    torch.testing.assert_close(both[0, :77], first, rtol=0, atol=1e-5)
    torch.testing.assert_close(both[0, 77:], second, rtol=0, atol=1e-5)
    empty = sd1.encode([""]).crossattn[0]
    torch.testing.assert_close(both[1, 77:], empty, rtol=0, atol=1e-6)


# ---------------------------------------------------------------- textual inversion


def _with_extra_rows(cond, vectors: torch.Tensor):
    """The text model's token table with `vectors` appended (ids 49408...): embeddings as ComfyUI adds them."""
    table = cond.text_model.embeddings.token_embedding
    bigger = nn.Embedding(table.num_embeddings + len(vectors), table.embedding_dim)
    with torch.no_grad():
        bigger.weight[:table.num_embeddings] = table.weight
        bigger.weight[table.num_embeddings:] = vectors
    return table, bigger


def expected_with_embedding(cond, before: list[str], vectors: torch.Tensor, after: list[str]) -> torch.Tensor:
    ids = word_ids(before) + [49408 + i for i in range(len(vectors))] + word_ids(after)
    table, bigger = _with_extra_rows(cond, vectors)
    cond.text_model.embeddings.token_embedding = bigger
    try:
        with torch.no_grad():
            return cond.encode_ids(torch.tensor([row(ids)]))[0]
    finally:
        cond.text_model.embeddings.token_embedding = table


def _write(path, data) -> None:
    if path.suffix == ".safetensors":
        save_file(data, str(path))
    else:
        torch.save(data, str(path))


@pytest.mark.parametrize("file_name, make", [
    ("a1111.pt", lambda v: {"string_to_token": {"*": 265}, "string_to_param": {"*": v}, "name": "x", "step": 3}),
    ("kohya.safetensors", lambda v: {"emb_params": v}),
    ("diffusers.bin", lambda v: {"<x>": v[0]}),
    ("sdxl.safetensors", lambda v: {"clip_g": torch.randn(len(v), 1280), "clip_l": v}),
])
def test_embeddings_in_each_format_replace_token_embeddings(sd1, tmp_path, file_name, make):
    vectors = torch.randn(1 if file_name.startswith("diffusers") else 2, 64)
    folder = tmp_path / "embeddings" / "sub"  # found in subfolders too
    folder.mkdir(parents=True)
    _write(folder / file_name, make(vectors))
    name = file_name.rsplit(".", 1)[0]
    got = sd1.encode([f"a embedding:{name} circle"], embedding_folders=[tmp_path / "embeddings"]).crossattn[0]
    torch.testing.assert_close(got, expected_with_embedding(sd1, ["a"], vectors, ["circle"]), rtol=0, atol=1e-5)


def test_embedding_weights_trailing_commas_and_errors(sd1, tmp_path):
    vectors = torch.randn(2, 64)
    save_file({"emb_params": vectors}, str(tmp_path / "style.safetensors"))
    torch.save({"emb_params": torch.randn(2, 768)}, str(tmp_path / "wide.pt"))
    folders = [tmp_path]
    got = sd1.encode(["(embedding:style.safetensors:1.2) cat"], embedding_folders=folders).crossattn[0]
    table, bigger = _with_extra_rows(sd1, vectors)
    sd1.text_model.embeddings.token_embedding = bigger
    try:
        want = expected_weighted(sd1, [49408, 49409, *word_ids(["cat"])], [1.2, 1.2, 1.0])
    finally:
        sd1.text_model.embeddings.token_embedding = table
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    comma = sd1.encode(["embedding:style, cat"], embedding_folders=folders).crossattn[0]
    torch.testing.assert_close(comma, expected_with_embedding(sd1, [], vectors, [",", "cat"]), rtol=0, atol=1e-5)
    with pytest.raises(UserInputError, match=r"embedding 'nothere' not found .*" + re.escape(str(tmp_path))):
        sd1.encode(["embedding:nothere cat"], embedding_folders=folders)
    with pytest.raises(UserInputError, match="its vectors are 768 wide; this text encoder takes 64"):
        sd1.encode(["embedding:wide"], embedding_folders=folders)
    with pytest.raises(UserInputError, match="not found"):
        sd1.encode(["embedding:../style"], embedding_folders=[tmp_path / "x"])


class _Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_a_pickled_object_in_an_embedding_is_refused_not_run(sd1, tmp_path, capsys):
    torch.save({"string_to_param": {"*": torch.randn(1, 64)}, "extra": _Payload()}, str(tmp_path / "evil.pt"))
    with pytest.raises(UserInputError, match="evil.pt: cannot read it as weights"):
        sd1.encode(["embedding:evil"], embedding_folders=[tmp_path])
    assert "must never run" not in capsys.readouterr().out


def test_text_encode_finds_embeddings_in_the_model_folders(sd1, tmp_path):
    from nodes.conditioning_nodes import TEXT_ENCODE

    (tmp_path / "embeddings").mkdir()
    vectors = torch.randn(1, 64)
    save_file({"emb_params": vectors}, str(tmp_path / "embeddings" / "tok.safetensors"))
    settings = EngineSettings(model_dirs=(str(tmp_path),))
    assert tmp_path / "embeddings" in model_folders(settings, EMBEDDINGS)
    ctx = types.SimpleNamespace(settings=settings)
    out = TEXT_ENCODE.compute(ctx, {"conditioner": sd1}, {"text": "embedding:tok dog"})["conditioning"]
    torch.testing.assert_close(out.crossattn[0], expected_with_embedding(sd1, [], vectors, ["dog"]),
                               rtol=0, atol=1e-5)


# ---------------------------------------------------------------- CLIP Set Last Layer


def _hidden(cond, ids: torch.Tensor) -> tuple[torch.Tensor, ...]:
    with torch.no_grad():
        return cond.text_model(input_ids=ids, output_hidden_states=True).hidden_states


def test_clip_set_last_layer_reads_that_layer_through_the_final_norm(sd1):
    from nodes.clip_set_last_layer import CLIP_SET_LAST_LAYER

    ids = torch.tensor(sd1.token_chunks("a red circle"))
    hidden = _hidden(sd1, ids)
    norm = sd1.text_model.final_layer_norm
    for layer in (-1, -2, -3):
        skipped = CLIP_SET_LAST_LAYER.compute(None, {"conditioner": sd1}, {"stop_at_clip_layer": layer})["conditioner"]
        with torch.no_grad():
            want = norm(hidden[layer])[0]
        torch.testing.assert_close(skipped.encode(["a red circle"]).crossattn[0], want, rtol=0, atol=1e-5)
    assert sd1.clip_layer is None  # the loaded model is unchanged
    beyond = sd1.with_clip_layer(-24)  # beyond the first layer: the last, as ComfyUI
    torch.testing.assert_close(beyond.encode(["a red circle"]).crossattn, sd1.encode(["a red circle"]).crossattn)
    with pytest.raises(UserInputError, match="only applies to CLIP"):
        CLIP_SET_LAST_LAYER.compute(None, {"conditioner": types.SimpleNamespace(kind="bert")},
                                    {"stop_at_clip_layer": -2})


def test_sd2_defaults_to_the_penultimate_layer_and_pads_with_zero():
    sd2 = tiny_clip("openclip")
    chunk = sd2.token_chunks("a cat")[0]
    assert chunk[:4] == [49406, 320, 2368, 49407] and chunk[4:] == [0] * 73
    hidden = _hidden(sd2, torch.tensor([chunk]))
    norm = sd2.text_model.final_layer_norm
    with torch.no_grad():
        torch.testing.assert_close(sd2.encode(["a cat"]).crossattn[0], norm(hidden[-2])[0], rtol=0, atol=1e-5)
        torch.testing.assert_close(sd2.with_clip_layer(-1).encode(["a cat"]).crossattn[0], norm(hidden[-1])[0],
                                   rtol=0, atol=1e-5)
        weighted = sd2.encode(["a (cat:1.4)"]).crossattn[0]
        empty = [49406, 49407] + [0] * 75
        z, z_empty = (norm(_hidden(sd2, torch.tensor([r]))[-2])[0] for r in (chunk, empty))
    want = z.clone()
    want[2] = z_empty[2] + (z[2] - z_empty[2]) * 1.4
    torch.testing.assert_close(weighted, want, rtol=0, atol=1e-5)


# ---------------------------------------------------------------- an SD 1.x file alone


def test_an_sd1_file_alone_encodes_text_offline(tmp_path, monkeypatch):
    import huggingface_hub.constants

    from engine.models.loader import load_checkpoint

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    path, _ = write_zoo_checkpoint("sd15", tmp_path / "models")
    shutil.rmtree(tmp_path / "models" / "tokenizer")
    loaded = load_checkpoint(path, "cpu")
    assert loaded.report["tokenizer"] == "bundled"
    cond = loaded.conditioner
    got = cond.encode(["a photo of a (cat:1.2)"]).crossattn
    assert got.shape == (1, 77, 64) and torch.isfinite(got).all()
    assert cond.token_chunks("a photo of a cat")[0][:7] == [49406, 320, 1125, 539, 320, 2368, 49407]
