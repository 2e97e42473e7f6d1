"""A learned layout planner: a prompt's words -> labelled boxes, sampled from a seed.

A text-conditioned diffusion model binds attributes badly once a prompt names
several objects ("a large blue square at the top left and a small orange
circle ..."): colours and shapes trade places between objects. Given the boxes
as well, the same model places and labels them well. So, as LayoutGPT and
LLM-grounded diffusion plan a scene before drawing it, this small transformer
reads the prompt and writes a layout, object by object, which then conditions
the diffusion model beside the prompt itself (nodes/plan_layout.py).

It is a prefix language model. The prompt's word ids (the built-in
conditioner's tokenizer) come first and attend to each other; then, for each
object, four layout tokens: its label, its size, its centre's x and y, each
quantised to bins, then an end token in the next label slot. Every layout token
attends to the prompt and to the tokens before it, so later objects are placed
around earlier ones. Sampling draws each token from the predicted distribution
with a seeded generator, then a value uniformly inside the drawn bin; a place
whose box would touch an earlier one is drawn again (as the training scenes
were placed), up to `placement_tries` times.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from engine.models.token_conditioner import PAD, TokenConditionerConfig, Tokenizer, TransformerBlock

SLOTS = ("label", "size", "x", "y")  # the tokens of one object, in order


@dataclass
class LayoutPlannerConfig:
    labels: tuple[str, ...] = ()  # box labels, e.g. "red circle"
    max_objects: int = 3
    position_bins: int = 48  # the centre's x and y, over [0, 1]
    size_bins: int = 32  # the box side, over [0, max_size]
    max_size: float = 0.5
    margin: float = 0.02  # planned boxes keep this gap; a place that breaks it is drawn again
    placement_tries: int = 20
    width: int = 128
    layers: int = 3
    heads: int = 4

    @property
    def layout_length(self) -> int:
        return len(SLOTS) * self.max_objects + 1  # the last label slot can only end

    def slot_sizes(self) -> dict[str, int]:
        return {"label": len(self.labels) + 1, "size": self.size_bins, "x": self.position_bins,
                "y": self.position_bins}  # label: + end

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "labels": list(self.labels)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LayoutPlannerConfig:
        return cls(**{**d, "labels": tuple(d.get("labels", ()))})


def slot_of(position: int) -> str:
    """Which slot the layout token at `position` (0-based) fills."""
    return SLOTS[position % len(SLOTS)]


def _clash(a: Sequence[float], b: Sequence[float], margin: float) -> bool:
    """True when box a overlaps box b grown by `margin` on every side."""
    return not (a[2] <= b[0] - margin or a[0] >= b[2] + margin or a[3] <= b[1] - margin or a[1] >= b[3] + margin)


def _bin(value: float, lo: float, hi: float, bins: int) -> int:
    return min(bins - 1, max(0, int((value - lo) / (hi - lo) * bins)))


class LayoutPlanner(nn.Module):
    """(B, T) prompt ids + (B, L) layout targets -> per-slot logits; `plan` samples layouts."""

    def __init__(self, config: LayoutPlannerConfig, words: TokenConditionerConfig):
        super().__init__()
        self.config, self.tokenizer = config, Tokenizer(words)
        sizes = config.slot_sizes()
        self.offsets = {slot: 1 + sum(sizes[s] for s in SLOTS[:i]) for i, slot in enumerate(SLOTS)}  # 0 = start
        self.prompt_embedding = nn.Embedding(words.vocab_size, config.width)
        self.layout_embedding = nn.Embedding(1 + sum(sizes.values()), config.width)
        self.position_embedding = nn.Parameter(torch.zeros(words.max_tokens + config.layout_length, config.width))
        self.blocks = nn.ModuleList(TransformerBlock(config.width, config.heads) for _ in range(config.layers))
        self.norm_out = nn.LayerNorm(config.width)
        self.heads = nn.ModuleDict({slot: nn.Linear(config.width, n) for slot, n in sizes.items()})
        nn.init.normal_(self.position_embedding, std=0.02)

    # ---------------------------------------------------------------- tokens

    def encode_layout(self, boxes: Sequence[dict]) -> list[int]:
        """Per-slot class indices (label, size bin, x bin, y bin, ..., end), -1 padded to layout_length."""
        cfg = self.config
        if len(boxes) > cfg.max_objects:
            raise ValueError(f"{len(boxes)} boxes; the planner writes at most {cfg.max_objects}")
        out: list[int] = []
        for item in boxes:
            x0, y0, x1, y1 = (float(v) for v in item["box"])
            size = max(x1 - x0, y1 - y0)
            out += [cfg.labels.index(item["label"]), _bin(size, 0.0, cfg.max_size, cfg.size_bins),
                    _bin((x0 + x1) / 2, 0.0, 1.0, cfg.position_bins), _bin((y0 + y1) / 2, 0.0, 1.0, cfg.position_bins)]
        out.append(len(cfg.labels))  # end
        return out + [-1] * (cfg.layout_length - len(out))

    def _layout_inputs(self, targets: torch.Tensor) -> torch.Tensor:
        """(B, L) slot classes -> (B, L) embedding ids of the tokens fed in: start, then targets shifted."""
        ids = torch.zeros_like(targets)
        for position in range(1, targets.shape[1]):
            previous = targets[:, position - 1]
            ids[:, position] = torch.where(previous >= 0, previous + self.offsets[slot_of(position - 1)], 0)
        return ids

    # ---------------------------------------------------------------- network

    def forward(self, prompt: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        """Logits for every layout position, grouped by slot: {slot: (B, n_positions_of_slot, classes)}."""
        t, n = prompt.shape[1], targets.shape[1]
        x = torch.cat([self.prompt_embedding(prompt), self.layout_embedding(self._layout_inputs(targets))], 1)
        x = x + self.position_embedding[: t + n]  # (B, T + L, W)
        pad = torch.cat([prompt == PAD, torch.zeros_like(targets, dtype=torch.bool)], 1)  # (B, T + L)
        causal = torch.ones(n, n, dtype=torch.bool, device=x.device).triu(1)
        blocked = torch.zeros(t + n, t + n, dtype=torch.bool, device=x.device)
        blocked[:t, t:] = True  # the prompt does not see the layout
        blocked[t:, t:] = causal
        for block in self.blocks:
            x = block(x, pad, blocked)
        h = self.norm_out(x[:, t:])  # (B, L, W)
        return {slot: self.heads[slot](h[:, i :: len(SLOTS)]) for i, slot in enumerate(SLOTS)}

    def loss(self, prompt: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits = self(prompt, targets)
        losses = [F.cross_entropy(logits[slot].flatten(0, 1), targets[:, i :: len(SLOTS)].flatten(),
                                  ignore_index=-1, reduction="sum") for i, slot in enumerate(SLOTS)]
        return torch.stack(losses).sum() / (targets >= 0).sum().clamp(min=1)

    # ---------------------------------------------------------------- sampling

    @torch.no_grad()
    def plan(self, texts: Sequence[str], seed: int, temperature: float = 1.0) -> list[list[dict]]:
        """One layout per prompt, drawn from `seed` (the same seed and prompts give the same boxes)."""
        generator = torch.Generator().manual_seed(int(seed))
        return [self._plan_one(text, generator, temperature) for text in texts]

    def _plan_one(self, text: str, generator: torch.Generator, temperature: float) -> list[dict]:
        """Object by object: a label (or the end), a size, then a place, drawn again while it clashes."""
        cfg, end = self.config, len(self.config.labels)
        prompt = self.tokenizer.batch([self.tokenizer.encode_text(text)]).to(self.device)  # (1, T)
        targets = torch.full((1, cfg.layout_length), -1, dtype=torch.long, device=self.device)
        boxes: list[dict] = []
        for k in range(cfg.max_objects):
            first = len(SLOTS) * k
            label = self._draw(prompt, targets, first, generator, temperature)
            if label == end:
                break
            size = self._draw(prompt, targets, first + 1, generator, temperature)
            d = (size + float(torch.rand(1, generator=generator))) / cfg.size_bins * cfg.max_size
            for _ in range(max(1, cfg.placement_tries)):
                x = self._draw(prompt, targets, first + 2, generator, temperature)
                y = self._draw(prompt, targets, first + 3, generator, temperature)
                box = self._box(d, x, y, generator)
                if not any(_clash(box, other["box"], cfg.margin) for other in boxes):
                    break
            boxes.append({"label": cfg.labels[label], "box": box})
        return boxes

    def _draw(self, prompt: torch.Tensor, targets: torch.Tensor, position: int, generator: torch.Generator,
              temperature: float) -> int:
        """Draw the slot class at `position` given the tokens before it, and write it into `targets`."""
        slot = slot_of(position)
        logits = self(prompt, targets)[slot][0, position // len(SLOTS)].float().cpu()
        probs = torch.softmax(logits / max(temperature, 1e-3), -1)
        choice = int(torch.multinomial(probs, 1, generator=generator))
        targets[0, position] = choice
        return choice

    def _box(self, d: float, x: int, y: int, generator: torch.Generator) -> list[float]:
        """A d x d box centred at a point drawn uniformly in bins (x, y), moved inside the picture."""
        bins = self.config.position_bins
        u, v = torch.rand(2, generator=generator).tolist()
        cx = min(max((x + u) / bins, d / 2), 1 - d / 2)
        cy = min(max((y + v) / bins, d / 2), 1 - d / 2)
        return [round(value, 4) for value in (cx - d / 2, cy - d / 2, cx + d / 2, cy + d / 2)]

    @property
    def device(self) -> torch.device:
        return self.prompt_embedding.weight.device
