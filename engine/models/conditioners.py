"""Conditioners: the CONDITIONER socket value, one nn.Module per kind.

Each turns a batch of user inputs (prompts, class ids, layouts, semantic maps,
low-resolution or masked images) into a `Conditioning`. Module state-dict keys
are the original `cond_stage_model.*` names (prefix stripped), except OpenCLIP,
whose fused q/k/v weights are split onto a transformers CLIPTextModel by
`source_key`. `accepts` names the input a conditioner takes, so nodes can say
clearly when a prompt is given to, say, a class-conditional model.
"""
from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from engine.capabilities import Accepts, ConditionerCapabilities
from engine.errors import KilnError, UserInputError, quote, quote_list
from engine.models.configs import ConditionerConfig
from engine.models.keymaps import openclip_source_key
from engine.models.prompt_weights import has_weighting
from engine.models.tokenizers import Missing, WordTokenizer, bert_ids, clip_chunks, clip_tokenizer_for
from engine.values import Conditioning, SemanticMap

Transform = Callable[[torch.Tensor], torch.Tensor]


class Conditioner(nn.Module):
    """Base: `encode(batch) -> Conditioning`; `target` says which Conditioning field it fills."""

    kind = "none"
    accepts: Accepts = "nothing"

    def __init__(self, config: ConditionerConfig, target: str = "crossattn"):
        super().__init__()
        self.config = config
        self.target = target  # crossattn | concat | y

    @property
    def capabilities(self) -> ConditionerCapabilities:
        return ConditionerCapabilities(self.accepts)

    def source_key(self, module_key: str) -> tuple[str, Transform | None]:
        """Where a module key's tensor lives in the checkpoint (relative to cond_stage_model.)."""
        return module_key, None

    @property
    def device(self) -> torch.device:
        tensor = next(iter(self.parameters()), None)
        return tensor.device if tensor is not None else torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        tensor = next(iter(self.parameters()), None)
        return tensor.dtype if tensor is not None else torch.float32

    def encode(self, batch: Any) -> Conditioning:
        return Conditioning()

    def _wrap(self, tensor: torch.Tensor, **meta: Any) -> Conditioning:
        fields: dict[str, Any] = {self.target: tensor}
        return Conditioning(**fields, meta=meta)


class NullConditioner(Conditioner):
    """Unconditional models: every input encodes to an empty Conditioning."""


# ---------------------------------------------------------------- CLIP (SD 1.x) and OpenCLIP (SD 2.x)


class _TextModelHolder(nn.Module):
    """Gives the CLIPTextModel the original `transformer.text_model.` key level."""

    def __init__(self, text_model: nn.Module):
        super().__init__()
        self.text_model = text_model


def clip_text_config(p: dict[str, Any]) -> Any:
    from transformers import CLIPTextConfig

    vocab = int(p["vocab"])
    return CLIPTextConfig(vocab_size=vocab, hidden_size=int(p["width"]), intermediate_size=int(p["intermediate"]),
                          num_hidden_layers=int(p["layers"]), num_attention_heads=int(p["heads"]),
                          max_position_embeddings=int(p["max_length"]), hidden_act=p.get("act", "quick_gelu"),
                          layer_norm_eps=1e-5, bos_token_id=vocab - 2, eos_token_id=vocab - 1,
                          pad_token_id=vocab - 1)


class CLIPConditioner(Conditioner):
    """CLIP text transformer; last hidden state (SD 1.x) or penultimate + final norm (SD 2.x)."""

    kind = "clip"
    accepts = "text"

    def __init__(self, config: ConditionerConfig, target: str = "crossattn", tokenizer: Any = None):
        super().__init__(config, target)
        from engine.models.clip_text import CLIPTextTransformer, TextConfig

        # Kiln's own copy of transformers' CLIPTextModel (same keys, same outputs): no transformers import
        self.transformer = _TextModelHolder(CLIPTextTransformer(TextConfig.from_params(config.params)))
        self.tokenizer = clip_tokenizer_for(tokenizer, int(config.params["vocab"]))
        self.clip_layer: int | None = None  # CLIP Set Last Layer's choice; None: the model's own layer

    def with_clip_layer(self, layer: int) -> CLIPConditioner:
        """The same weights read out at hidden layer `layer` (-1 the last, -2 the penultimate, ...;
        beyond the first layer: the last, as ComfyUI does), each time through the final layer norm."""
        clone = copy.copy(self)  # shares the modules; only the layer differs
        clone.clip_layer = int(layer)
        return clone

    def output_layer(self) -> int:
        """The hidden layer encodings come from: -1 the last (SD 1.x), -2 the penultimate (SD 2.x), ..."""
        if self.clip_layer is None:
            return -1 if self.config.params.get("layer", "last") == "last" else -2
        return self.clip_layer if 0 < -self.clip_layer <= int(self.config.params["layers"]) else -1

    @property
    def text_model(self) -> Any:  # engine.models.clip_text.CLIPTextTransformer (its final_layer_norm is used too)
        return self.transformer.text_model

    def token_chunks(self, text: str) -> list[list[int]]:
        p = self.config.params
        return clip_chunks(self.tokenizer, text, int(p["max_length"]), p.get("pad", "eos"))

    def encode_ids(self, ids: torch.Tensor, vectors: dict[tuple[int, int], torch.Tensor] | None = None
                   ) -> torch.Tensor:
        """(B, 77) token ids -> (B, 77, width) hidden states; `vectors` replace the token embeddings
        at their (row, position) (textual-inversion embeddings)."""
        from engine.models.clip_weighting import token_vectors

        ids, layer = ids.to(self.device), self.output_layer()
        with token_vectors(self.text_model.embeddings.token_embedding, vectors):
            if layer == -1:
                return self.text_model(input_ids=ids).last_hidden_state
            out = self.text_model(input_ids=ids, output_hidden_states=True)
        return self.text_model.final_layer_norm(out.hidden_states[layer])

    @torch.no_grad()
    def encode(self, texts: Sequence[str], embedding_folders: Sequence[Path] = ()) -> Conditioning:
        """Prompts -> (B, 77*chunks, width); chunks are padded with the empty prompt to the longest.
        Prompts with weights or embeddings are read as ComfyUI reads them (engine.models.clip_weighting)."""
        if any(has_weighting(t) for t in texts):
            from engine.models.clip_weighting import encode_texts

            return self._wrap(encode_texts(self, texts, embedding_folders), prompt=list(texts))
        chunks = [self.token_chunks(t) for t in texts]
        longest = max(len(c) for c in chunks)
        empty = self.token_chunks("")[0]
        rows = [c + [empty] * (longest - len(c)) for c in chunks]
        ids = torch.tensor([tok for row in rows for tok in row]).view(len(rows) * longest, -1)  # (B*n, 77)
        hidden = self.encode_ids(ids)  # (B*n, 77, D)
        context = hidden.reshape(len(rows), longest * hidden.shape[1], hidden.shape[2])
        return self._wrap(context, prompt=list(texts))


class OpenCLIPConditioner(CLIPConditioner):
    """OpenCLIP ViT-H text tower, run as a CLIPTextModel with the same weights."""

    kind = "openclip"

    def source_key(self, module_key: str) -> tuple[str, Transform | None]:
        inner = module_key.removeprefix("transformer.text_model.")
        key, transform = openclip_source_key(inner)
        return "model." + key, transform


# ---------------------------------------------------------------- the LDM's own transformer (x-transformers layout)


class _XAttention(nn.Module):
    def __init__(self, dim: int, heads: int, dim_head: int):
        super().__init__()
        inner = heads * dim_head
        self.heads = heads
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_k = nn.Linear(dim, inner, bias=False)
        self.to_v = nn.Linear(dim, inner, bias=False)
        self.to_out = nn.Linear(inner, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = (t(x).view(b, n, self.heads, -1).transpose(1, 2) for t in (self.to_q, self.to_k, self.to_v))
        out = F.scaled_dot_product_attention(q, k, v)  # (B, h, T, d); no padding mask, as the original
        return self.to_out(out.transpose(1, 2).reshape(b, n, -1))


class _XFeedForward(nn.Module):
    def __init__(self, dim: int, mult: int):
        super().__init__()
        self.net = nn.Sequential(nn.Sequential(nn.Linear(dim, dim * mult), nn.GELU()), nn.Dropout(0.0),
                                 nn.Linear(dim * mult, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class _XAttentionLayers(nn.Module):
    """Pre-norm encoder: layers alternate (norm, attention) and (norm, feed-forward)."""

    def __init__(self, dim: int, depth: int, heads: int, dim_head: int, ff_mult: int):
        super().__init__()
        layers = []
        for _ in range(depth):
            layers.append(nn.ModuleList([nn.LayerNorm(dim), _XAttention(dim, heads, dim_head)]))
            layers.append(nn.ModuleList([nn.LayerNorm(dim), _XFeedForward(dim, ff_mult)]))
        self.layers = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for norm, block in cast("list[nn.ModuleList]", self.layers):
            x = x + block(norm(x))
        return x


class _PositionEmbedding(nn.Module):
    def __init__(self, dim: int, max_len: int):
        super().__init__()
        self.emb = nn.Embedding(max_len, dim)


class TransformerWrapper(nn.Module):
    """ldm.modules.x_transformer.TransformerWrapper(attn_layers=Encoder(...)), return_embeddings=True."""

    def __init__(self, vocab: int, max_len: int, dim: int, depth: int, heads: int = 8, dim_head: int = 64,
                 ff_mult: int = 4):
        super().__init__()
        self.token_emb = nn.Embedding(vocab, dim)
        self.pos_emb = _PositionEmbedding(dim, max_len)
        self.attn_layers = _XAttentionLayers(dim, depth, heads, dim_head, ff_mult)
        self.norm = nn.LayerNorm(dim)
        self.to_logits = nn.Linear(dim, vocab)  # kept for strict loading; embeddings do not use it

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, T) ids -> (B, T, dim)."""
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        x = self.token_emb(tokens) + self.pos_emb.emb(positions)[None]
        return self.norm(self.attn_layers(x))


def _transformer_from(p: dict[str, Any]) -> TransformerWrapper:
    return TransformerWrapper(int(p["vocab_size"]), int(p["max_seq_len"]), int(p["n_embed"]), int(p["n_layer"]),
                              int(p.get("heads", 8)), int(p.get("dim_head", 64)), int(p.get("ff_mult", 4)))


class BERTConditioner(Conditioner):
    """The paper's text model (BERTEmbedder): WordPiece or word tokens through a transformer."""

    kind = "bert"
    accepts = "text"

    def __init__(self, config: ConditionerConfig, target: str = "crossattn", tokenizer: Any = None):
        super().__init__(config, target)
        p = config.params
        self.transformer = _transformer_from(p)
        if "words" in p:
            tokenizer = WordTokenizer(p["words"], int(p["max_seq_len"]))
        self.tokenizer = tokenizer if tokenizer is not None else Missing("BERT", ())

    def token_ids(self, texts: Sequence[str]) -> torch.Tensor:
        if isinstance(self.tokenizer, WordTokenizer):
            return torch.tensor([self.tokenizer.encode(t) for t in texts])
        return torch.tensor(bert_ids(self.tokenizer, texts, int(self.config.params["max_seq_len"])))

    @torch.no_grad()
    def encode(self, texts: Sequence[str]) -> Conditioning:
        return self._wrap(self.transformer(self.token_ids(texts).to(self.device)), prompt=list(texts))


class BBoxConditioner(Conditioner):
    """Layouts as the paper's box tokens (taming's ObjectsBoundingBoxConditionalBuilder) through a transformer.

    Each box is (label token, top-left token, bottom-right token) with coordinates
    quantised to a sqrt(vocab) grid; unused slots hold the `none` token (vocab-1);
    with `encode_crop` the full-image crop's two tokens follow.
    """

    kind = "bbox"
    accepts = "layout"

    def __init__(self, config: ConditionerConfig, target: str = "crossattn"):
        super().__init__(config, target)
        p = config.params
        self.transformer = _transformer_from(p)
        self.vocab = int(p["vocab_size"])
        self.sections = int(self.vocab ** 0.5)
        self.labels = list(p.get("labels", ()))

    def coordinate_token(self, x: float, y: float) -> int:
        n = self.sections - 1
        return round(y * n) * self.sections + round(x * n)

    def label_token(self, label: Any, index: int) -> int:
        if self.labels:
            if str(label) in self.labels:
                return self.labels.index(str(label))
            raise UserInputError(f"layout box {index + 1}: unknown label {quote(label)}; this model knows: "
                                 f"{quote_list(self.labels, 12, str)}", param="layout")
        try:
            return int(label)
        except (TypeError, ValueError):
            raise UserInputError(f"layout box {index + 1}: this model has no label names; "
                                 f"give class numbers, not {quote(label)}", param="layout") from None

    def tokens(self, layout: Sequence[dict]) -> list[int]:
        p = self.config.params
        max_objects = int(p.get("max_objects", 30))
        if len(layout) > max_objects:
            raise UserInputError(f"the layout has {len(layout)} boxes; this model takes at most {max_objects}",
                                 param="layout")
        none = self.vocab - 1
        out: list[int] = []
        for i, item in enumerate(layout):
            x0, y0, x1, y1 = (min(1.0, max(0.0, float(v))) for v in item["box"])
            out += [self.label_token(item["label"], i), self.coordinate_token(x0, y0), self.coordinate_token(x1, y1)]
        out += [none] * (3 * (max_objects - len(layout)))
        if p.get("encode_crop", True):
            out += [self.coordinate_token(0.0, 0.0), self.coordinate_token(1.0, 1.0)]
        return out

    @torch.no_grad()
    def encode(self, layouts: Sequence[Sequence[dict]]) -> Conditioning:
        ids = torch.tensor([self.tokens(layout) for layout in layouts], device=self.device)
        return self._wrap(self.transformer(ids), layout=[list(layout) for layout in layouts])


class TokensConditioner(Conditioner):
    """Kiln's built-in models: words and layout boxes through engine.models.token_conditioner."""

    kind = "tokens"
    accepts = "text"  # and layouts, through encode_layouts

    def __init__(self, config: ConditionerConfig, target: str = "crossattn"):
        super().__init__(config, target)
        from engine.models.token_conditioner import TokenConditioner, TokenConditionerConfig

        p = dict(config.params)
        if not p.get("words"):
            raise KilnError("the built-in token conditioner needs its word list (conditioner.params.words "
                            "in the model card or the file's metadata)")
        allowed = set(TokenConditionerConfig.__dataclass_fields__)
        words = TokenConditionerConfig.from_dict({k: v for k, v in p.items() if k in allowed})
        self.inner = TokenConditioner(words)
        self.region_words = tuple(p.get("region_words") or ())  # layout boxes also as concat channels
        self.planner = None  # a layout planner (engine.models.layout_planner), where the file has one
        if p.get("planner"):
            from engine.models.layout_planner import LayoutPlanner, LayoutPlannerConfig

            self.planner = LayoutPlanner(LayoutPlannerConfig.from_dict(p["planner"]), words)

    @property
    def capabilities(self) -> ConditionerCapabilities:
        planner = self.planner is not None
        return ConditionerCapabilities(self.accepts, layout_tokens=True, layout_planner=planner)

    def source_key(self, module_key: str) -> tuple[str, Transform | None]:
        return module_key.removeprefix("inner."), None

    @torch.no_grad()
    def encode(self, texts: Sequence[str]) -> Conditioning:
        return self._wrap(self.inner.encode_texts(list(texts)), prompt=list(texts))

    def plan_layouts(self, texts: Sequence[str], seed: int, temperature: float = 1.0) -> list[list[dict]]:
        """Boxes for each prompt, drawn by the file's layout planner from `seed`."""
        if self.planner is None:
            raise KilnError("this checkpoint has no layout planner (Kiln's built-in base model has one)")
        return self.planner.plan(list(texts), seed, temperature)

    @torch.no_grad()
    def encode_layouts(self, layouts: Sequence[Sequence[dict]]) -> Conditioning:
        cond = self._wrap(self.inner.encode_layouts(list(layouts)), layout=[list(x) for x in layouts])
        if self.region_words:
            from engine.models.regions import layout_regions

            cond = cond.with_(regions=layout_regions(layouts, self.region_words))
        return cond


# ---------------------------------------------------------------- classes, maps, images


class ClassConditioner(Conditioner):
    """ClassEmbedder: (B,) class ids -> (B, 1, D) context; or the ids themselves as `y` (adm)."""

    kind = "class"
    accepts = "class"

    def __init__(self, config: ConditionerConfig, target: str = "crossattn"):
        super().__init__(config, target)
        p = config.params
        self.n_classes = int(p["n_classes"])
        self.null_class = p.get("null_class")
        if int(p.get("embed_dim", 0)) > 0:
            self.embedding = nn.Embedding(self.n_classes, int(p["embed_dim"]))

    def check(self, class_id: int) -> int:
        if not 0 <= int(class_id) < self.n_classes:
            raise UserInputError(f"class {class_id} is outside 0..{self.n_classes - 1}", param="class_id")
        return int(class_id)

    @torch.no_grad()
    def encode(self, class_ids: Sequence[int]) -> Conditioning:
        ids = torch.tensor([self.check(c) for c in class_ids], device=self.device)
        if self.target == "y" or not hasattr(self, "embedding"):
            return Conditioning(y=ids, meta={"class_ids": list(map(int, class_ids))})
        return self._wrap(self.embedding(ids[:, None]), class_ids=list(map(int, class_ids)))  # (B, 1, D)

    def unconditional(self, batch: int = 1) -> Conditioning:
        if self.null_class is None:
            raise UserInputError("this class-conditional model has no 'no class' label for guidance")
        return self.encode([int(self.null_class)] * batch)


class SpatialConditioner(Conditioner):
    """SpatialRescaler: one-hot semantic map, `n_stages` bilinear halvings, 1x1 channel mapper -> concat."""

    kind = "spatial"
    accepts = "semantic"

    def __init__(self, config: ConditionerConfig, target: str = "concat"):
        super().__init__(config, target)
        p = config.params
        if p.get("out_channels") is not None:
            self.channel_mapper = nn.Conv2d(int(p["in_channels"]), int(p["out_channels"]), 1, bias=bool(p.get("bias")))

    @torch.no_grad()
    def encode(self, semantic: SemanticMap | torch.Tensor) -> Conditioning:
        p = self.config.params
        x = self.one_hot(semantic) if isinstance(semantic, SemanticMap) else semantic
        x = x.to(self.device, self.dtype)
        for _ in range(int(p.get("n_stages", 1))):
            x = F.interpolate(x, scale_factor=float(p.get("multiplier", 0.5)), mode=p.get("method", "bilinear"))
        if hasattr(self, "channel_mapper"):
            x = self.channel_mapper(x)
        return self._wrap(x)

    def one_hot(self, semantic: SemanticMap) -> torch.Tensor:
        """(B, H, W) ids -> (B, in_channels, H, W) float one-hot."""
        n = int(self.config.params["in_channels"])
        labels = semantic.labels.long()
        if labels.numel() and (labels.min() < 0 or labels.max() >= n):
            raise UserInputError(f"the semantic map has class {int(labels.max())}; this model knows 0..{n - 1}")
        return F.one_hot(labels, n).permute(0, 3, 1, 2).float()


class IdentityConditioner(Conditioner):
    """Super-resolution: the low-resolution image itself, in [-1, 1], concatenated to the latent."""

    kind = "identity"
    accepts = "image"

    def __init__(self, config: ConditionerConfig, target: str = "concat"):
        super().__init__(config, target)

    @torch.no_grad()
    def encode(self, pixels: torch.Tensor, size: tuple[int, int] | None = None) -> Conditioning:
        """pixels (B, 3, H, W) in [0, 1]; `size` (h, w) resizes to the latent size when given."""
        x = pixels.float() * 2 - 1
        if size is not None and tuple(x.shape[-2:]) != tuple(size):
            x = F.interpolate(x, size=size, mode="bicubic", align_corners=False).clamp(-1, 1)
        return self._wrap(x)


class MaskedImageConditioner(Conditioner):
    """Inpainting (LDM inpainting_big): [first_stage(masked image), mask at latent size] -> concat.

    `order` image_mask (LDM) or mask_image (SD inpainting); `mask_range` pm1 (mask*2-1) or 01.
    """

    kind = "masked_image"
    accepts = "masked_image"

    def __init__(self, config: ConditionerConfig, target: str = "concat"):
        super().__init__(config, target)

    @torch.no_grad()
    def encode(  # type: ignore[override]  # an inpainting model's input is three things, not one batch
            self, pixels: torch.Tensor, mask: torch.Tensor, first_stage: Any) -> Conditioning:
        """pixels (B, 3, H, W) in [0, 1]; mask (B, 1, H, W), 1 = fill in; first_stage: FirstStage."""
        return self._wrap(masked_image_concat(pixels, mask, first_stage, self.config.params))


def masked_image_concat(pixels: torch.Tensor, mask: torch.Tensor, first_stage: Any,
                        params: dict[str, Any]) -> torch.Tensor:
    """The inpainting concat channels, following the model's own conventions."""
    mask = (mask > 0.5).float().to(pixels.device)
    fill = 0.5 if params.get("fill", "black") == "gray" else 0.0  # gray = 0 in [-1, 1] (SD); black (LDM)
    masked = pixels * (1 - mask) + fill * mask
    latent = first_stage.encode_pixels(masked)  # (B, C, h, w)
    small = F.interpolate(mask, size=latent.shape[-2:], mode="nearest").to(latent)
    if params.get("mask_range", "pm1") == "pm1":
        small = small * 2 - 1
    parts = [small, latent] if params.get("order", "image_mask") == "mask_image" else [latent, small]
    return torch.cat(parts, dim=1)


_KINDS: dict[str, type[Conditioner]] = {
    "none": NullConditioner, "clip": CLIPConditioner, "openclip": OpenCLIPConditioner, "bert": BERTConditioner,
    "bbox": BBoxConditioner, "tokens": TokensConditioner, "class": ClassConditioner,
    "spatial": SpatialConditioner, "identity": IdentityConditioner, "masked_image": MaskedImageConditioner,
}


def conditioner_class(kind: str) -> type[Conditioner]:
    if kind not in _KINDS:
        raise KilnError(f"unknown conditioner kind {kind!r} (known: {', '.join(_KINDS)})")
    return _KINDS[kind]


def build_conditioner(config: ConditionerConfig, conditioning_key: str | None, tokenizer: Any = None) -> Conditioner:
    """The conditioner module for a config (weights uninitialised under a meta device)."""
    cls = conditioner_class(config.kind)
    target = {"adm": "y", "concat": "concat"}.get(conditioning_key or "", "crossattn")
    if config.kind in ("spatial", "identity", "masked_image"):
        target = "concat"
    if cls in (CLIPConditioner, OpenCLIPConditioner, BERTConditioner):
        return cls(config, target, tokenizer=tokenizer)
    return cls(config, target)
