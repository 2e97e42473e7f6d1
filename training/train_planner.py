"""Train the layout planner (engine.models.layout_planner) on the shapes world's captions and layouts.

    python -m training.train_planner train --base resources/models/kiln-shapes-base.safetensors \\
        --out runs/planner --steps 5000
    python -m training.train_planner evaluate --run runs/planner --n 1000
    python -m training.train_planner export --run runs/planner --into resources/models/kiln-shapes-base.safetensors
    python -m training.train_planner copy --from resources/models/kiln-shapes-base.safetensors --into NEW.safetensors

The planner reads the base model's own word ids (its vocabulary comes from the
base checkpoint), so it is trained for one base model and exported into that
model's file (`cond_stage_model.planner.*`, its config in the conditioner's
params), where the Plan Layout node finds it; `copy` carries it over into a
retrained base model's export (same words). Every batch is drawn fresh from
training seeds: an augmented caption (size, position, background each dropped
with p=0.3, objects shuffled, as the base model's text training) and the boxes
of its objects in the order it names them. A few empty prompts teach it to
plan nothing for nothing.
"""
from __future__ import annotations

import argparse
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engine.errors import KilnError
from engine.models.keymaps import COND_PREFIX
from engine.models.layout_planner import LayoutPlanner, LayoutPlannerConfig
from engine.models.token_conditioner import TokenConditionerConfig
from training import shapes_world as world
from training.command_line import add_threads_argument, run_command
from training.data import held_out_seeds
from training.loop import STATE, load_state, resume_run, run_loop, save_run
from training.model_files import conditioner_params, has_planner, safetensors_metadata, update_card

LABELS = world.LAYOUT_LABELS  # the planner's box classes: every "{colour} {shape}"


@dataclass
class PlannerTrainConfig:
    planner: LayoutPlannerConfig = field(default_factory=lambda: LayoutPlannerConfig(labels=LABELS))
    batch: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup: int = 200
    p_empty: float = 0.02  # share of empty prompts (nothing to plan)
    steps: int = 5000  # the run's length: the learning rate's cosine ends here
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "planner": self.planner.to_dict()}


def base_words(base: str) -> TokenConditionerConfig:
    """The word tokenizer of a Kiln base checkpoint, from the file's metadata."""
    params = conditioner_params(base)
    allowed = set(TokenConditionerConfig.__dataclass_fields__)
    return TokenConditionerConfig.from_dict({k: v for k, v in params.items() if k in allowed})


def example(planner: LayoutPlanner, rng: np.random.Generator, p_empty: float) -> tuple[list[int], list[int]]:
    """One training pair: an augmented caption's word ids and its objects' slot classes, in caption order."""
    if rng.random() < p_empty:
        return planner.tokenizer.encode_text(""), planner.encode_layout([])
    scene = world.make_scene(int(rng.integers(len(world.TRAIN_SEEDS))))
    text, order = world.augmented_caption_and_order(scene, rng)
    boxes = world.layout(scene)
    return planner.tokenizer.encode_text(text), planner.encode_layout([boxes[i] for i in order])


class PlannerTrainer:
    """The planner, its AdamW and its step count, with the interface training.loop.run_loop drives."""

    def __init__(self, cfg: PlannerTrainConfig, words: TokenConditionerConfig):
        torch.manual_seed(cfg.seed)
        self.cfg, self.words, self.step = cfg, words, 0
        self.model = LayoutPlanner(cfg.planner, words)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)

    def batch(self, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        pairs = [example(self.model, rng, self.cfg.p_empty) for _ in range(self.cfg.batch)]
        return torch.tensor([p for p, _ in pairs]), torch.tensor([t for _, t in pairs])  # (B, T), (B, L)

    def train_step(self, prompt: torch.Tensor, targets: torch.Tensor, gen: torch.Generator) -> float:
        for group in self.opt.param_groups:  # warm-up, then cosine to a tenth over the run's --steps
            group["lr"] = self.cfg.lr * self.lr_factor()
        loss = self.model.train().loss(prompt, targets)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.opt.step()
        self.step += 1
        return float(loss.detach())

    def lr_factor(self) -> float:
        warm = min(1.0, (self.step + 1) / max(self.cfg.warmup, 1))
        progress = min(1.0, self.step / max(self.cfg.steps, 1))
        return warm * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))

    def state(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "opt": self.opt.state_dict(), "step": self.step,
                "config": json.dumps(self.cfg.to_dict()), "words": json.dumps(self.words.to_dict())}

    def load(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["opt"])
        self.step = int(state["step"])


def trainer_from_run(run: Path) -> PlannerTrainer:
    """The trainer saved in a run folder, weights and step included."""
    state = load_state(run / STATE)
    cfg_dict = json.loads(state["config"])
    cfg = PlannerTrainConfig(**{**cfg_dict, "planner": LayoutPlannerConfig.from_dict(cfg_dict["planner"])})
    trainer = PlannerTrainer(cfg, TokenConditionerConfig.from_dict(json.loads(state["words"])))
    trainer.load(state)
    return trainer


# ---------------------------------------------------------------- evaluation


def box_errors(scene: world.Scene, boxes: list[dict]) -> dict[str, bool]:
    """What a planned layout gets right against the scene whose full caption it was planned from."""
    wanted = scene.objects
    same_count = len(boxes) == len(wanted)
    pairs = list(zip(wanted, boxes)) if same_count else []
    planned = [tuple(b["box"]) for b in boxes]
    apart = all(not world._boxes_clash(a, b) for i, a in enumerate(planned) for b in planned[i + 1:])
    inside = all(0 <= b[0] < b[2] <= 1 and 0 <= b[1] < b[3] <= 1 for b in planned)
    checks = {
        "count": same_count,
        "labels": same_count and all(o.label == b["label"] for o, b in pairs),
        "sizes": same_count and all(_size_word(b["box"]) == o.size for o, b in pairs),
        "positions": same_count and all(world.position_word(*_centre(b["box"])) == o.position for o, b in pairs),
        "apart": apart,
        "inside": inside,
    }
    checks["all"] = all(checks.values())
    return checks


def _centre(box: list[float]) -> tuple[float, float]:
    return (box[0] + box[2]) / 2, (box[1] + box[3]) / 2


def _size_word(box: list[float]) -> str:
    d = box[2] - box[0]
    return min(world.SIZE_RANGES, key=lambda w: abs(d - sum(world.SIZE_RANGES[w]) / 2))


def evaluate_planner(planner: LayoutPlanner, n: int, offset: int = 0, temperature: float = 1.0) -> dict[str, Any]:
    """Plan each held-out scene's full caption (planner seed = scene seed); rates of each check."""
    planner.eval()
    totals: dict[str, int] = {}
    failed: list[int] = []
    for seed in held_out_seeds(n, offset):
        scene = world.make_scene(seed)
        checks = box_errors(scene, planner.plan([world.caption(scene)], seed, temperature)[0])
        for key, ok in checks.items():
            totals[key] = totals.get(key, 0) + int(ok)
        if not checks["all"]:
            failed.append(seed)
    return {"metric": "layout_planner", "n": n, **{f"{k}_rate": v / n for k, v in totals.items()},
            "failed_seeds": failed[:50]}


# ---------------------------------------------------------------- commands


def train(args: argparse.Namespace) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = PlannerTrainConfig(batch=args.batch, lr=args.lr, steps=args.steps, seed=args.seed)
    trainer = PlannerTrainer(cfg, base_words(args.base))
    rng, gen = resume_run(trainer, out / STATE, cfg.seed)
    (out / "config.json").write_text(json.dumps({**cfg.to_dict(), "base": args.base, "steps": args.steps},
                                                indent=2))
    run_loop(trainer, trainer.batch, rng, gen, lambda: save_run(trainer, rng, gen, {}, out / STATE),
             args.steps, args.minutes, save_every=120, log_every=100, loss_log=out / "loss.csv")


def evaluate(args: argparse.Namespace) -> None:
    result = evaluate_planner(trainer_from_run(Path(args.run)).model, args.n, args.offset, args.temperature)
    print(json.dumps(result, indent=2))


PREFIX = COND_PREFIX + "planner."  # where a checkpoint holds its planner


def export(args: argparse.Namespace) -> dict[str, Any]:
    """Write the run's planner into the base checkpoint it was trained for (file, metadata and card)."""
    trainer, base = trainer_from_run(Path(args.run)), Path(args.into)
    if base_words(str(base)).to_dict() != trainer.words.to_dict():
        raise KilnError(f"{base}: its word list differs from the one the planner in {args.run} was trained on")
    weights = {k: v.detach() for k, v in trainer.model.state_dict().items()}
    result = evaluate_planner(trainer.model, args.eval_n) if args.eval_n else {}
    card = {"training": {"command": f"python -m training.train_planner train --base {base} --out {args.run} "
                                    f"--steps {trainer.cfg.steps}",
                         "steps": trainer.step, "config": trainer.cfg.to_dict()},
            "evaluation": result}
    write_planner(base, weights, trainer.cfg.planner.to_dict(), card)
    return result


def copy(args: argparse.Namespace) -> dict[str, Any]:
    """Put the planner of one base checkpoint into another with the same words (a retrained base model's export)."""
    from safetensors.torch import load_file

    source, base = Path(args.source), Path(args.into)
    if not has_planner(str(source)):
        raise KilnError(f"{source}: no layout planner in this checkpoint")
    if base_words(str(base)).to_dict() != base_words(str(source)).to_dict():
        raise KilnError(f"{base}: its word list differs from the one of {source}, whose planner reads its word ids")
    weights = {k.removeprefix(PREFIX): v for k, v in load_file(str(source)).items() if k.startswith(PREFIX)}
    card_file = source.with_suffix(".json")
    card = json.loads(card_file.read_text()).get("layout_planner", {}) if card_file.is_file() else {}
    write_planner(base, weights, conditioner_params(str(source))["planner"], {**card, "copied_from": source.name})
    return {"written": str(base), "planner_tensors": len(weights)}


def write_planner(base: Path, weights: dict[str, torch.Tensor], config: dict[str, Any], card: dict[str, Any]) -> None:
    """A planner's fp16 weights and config into a checkpoint file (replacing any), and into its card."""
    from safetensors.torch import load_file, save_file

    from engine.models.loader import CARD_CONFIG_KEY, METADATA_CONFIG_KEY

    metadata = safetensors_metadata(base)
    tensors = {k: v for k, v in load_file(str(base)).items() if not k.startswith(PREFIX)}
    tensors.update({PREFIX + k: v.to(torch.float16).contiguous() for k, v in weights.items()})
    checkpoint_config = json.loads(metadata[METADATA_CONFIG_KEY])
    checkpoint_config["conditioner"]["params"]["planner"] = config
    metadata[METADATA_CONFIG_KEY] = json.dumps(checkpoint_config)
    save_file(tensors, str(base), metadata=metadata)
    os.chmod(base, 0o644)  # safetensors writes owner-only; shipped models are for everyone
    card_path = base.with_suffix("")
    if card_path.with_suffix(".json").is_file():
        update_card(card_path, **{CARD_CONFIG_KEY: checkpoint_config, "layout_planner": card})


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training.train_planner", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    tr = sub.add_parser("train", help="train (resumes from OUT/state.pt when it exists)")
    tr.add_argument("--base", default="resources/models/kiln-shapes-base.safetensors",
                    help="the base checkpoint whose word ids the planner reads")
    tr.add_argument("--out", default="runs/planner")
    tr.add_argument("--steps", type=int, default=5000)
    tr.add_argument("--minutes", type=float, default=60.0)
    tr.add_argument("--batch", type=int, default=128)
    tr.add_argument("--lr", type=float, default=1e-3)
    tr.add_argument("--seed", type=int, default=0)
    ev = sub.add_parser("evaluate", help="plan held-out full captions and check every box against its scene")
    ev.add_argument("--run", default="runs/planner")
    ev.add_argument("--n", type=int, default=1000)
    ev.add_argument("--offset", type=int, default=0)
    ev.add_argument("--temperature", type=float, default=1.0)
    ex = sub.add_parser("export", help="write the planner into its base checkpoint")
    ex.add_argument("--run", default="runs/planner")
    ex.add_argument("--into", default="resources/models/kiln-shapes-base.safetensors")
    ex.add_argument("--eval-n", type=int, default=1000, help="held-out captions to check for the card (0: none)")
    cp = sub.add_parser("copy", help="put one base checkpoint's planner into another (after retraining the base)")
    cp.add_argument("--from", dest="source", default="resources/models/kiln-shapes-base.safetensors")
    cp.add_argument("--into", required=True)
    add_threads_argument(tr, ev, ex, cp)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    commands = {"train": train, "evaluate": evaluate, "export": lambda a: print(json.dumps(export(a), indent=2)),
                "copy": lambda a: print(json.dumps(copy(a)))}
    return run_command(args, commands[args.command])


if __name__ == "__main__":
    raise SystemExit(main())
