"""Train the built-in base latent diffusion model on the shapes world, and export it.

One UNet learns, on the latents of the built-in autoencoder:
- text-to-image and layout-to-image through cross-attention on one token
  stream (engine.models.token_conditioner), with conditioning dropout so that
  classifier-free guidance and unconditional sampling work;
- inpainting through concatenation of [latent zeroed in the hole, mask 0/1]
  (the concat is all zeros for plain generation, so one model serves every
  mode). The exported config names this layout (`inpaint_convention: kiln` in
  the conditioner params), which Inpaint Conditioning's `auto` follows.

    python -m training.train_ldm train --out runs/ldm --ae resources/models/kiln-shapes-ae.safetensors --minutes 240
    python -m training.train_ldm export --run runs/ldm --out resources/models/kiln-shapes-base --eval-n 200
    python -m training.train_ldm speed --seconds 60      # steps/s of this trainer on this machine

Default sizes, chosen by timing on the shared 2-core CPU: token conditioner
width 128, 2 layers, 4 heads, 32 tokens (the longest caption, three objects
with size and position plus the background, is 30 words + BOS/EOS; a 3-box
layout is 21); UNet 64 channels x (1, 2, 2), 2 res blocks, attention at 1/2
and 1/4 with 32-channel heads, context 128: 10.1 M parameters (the (1, 2, 3)
variant is 16.1 M). `speed` measured 0.45 steps/s at batch 32 with 1
thread while other work shared the CPU. Use 1 torch thread (the default) while other work shares
the CPU, and set OMP_WAIT_POLICY=PASSIVE so idle OpenMP workers do not spin:

    OMP_WAIT_POLICY=PASSIVE python -m training.train_ldm train --out runs/ldm

Resumable: the run folder keeps `state.pt` (weights, EMA, optimiser, step, data
rngs), written atomically every `--save-every` seconds; rerunning `train` with
the same --out resumes with the run's saved config. The latent cache
`latents.pt` has the format of train_semantic's (same autoencoder and --scenes:
copy it to skip encoding). The shared machinery lives in the training library modules
(trainer, loop, model_files, generators, command_line).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engine.errors import KilnError
from engine.models.configs import (
    AutoencoderConfig,
    CheckpointConfig,
    ConditionerConfig,
    DiffusionConfig,
    UNetConfig,
)
from engine.models.keymaps import COND_PREFIX, UNET_PREFIX
from engine.models.regional import DEFAULT_BACKGROUND, PromptRegion, RegionalContext, compile_regions
from engine.models.regions import layout_regions, paint_regions
from engine.models.token_conditioner import TokenConditioner, TokenConditionerConfig
from training import shapes_world as world
from training.command_line import (
    add_export_arguments,
    add_speed_parser,
    add_threads_argument,
    add_train_parser,
    dispatch,
    run_command,
    schedule_of,
)
from training.data import encode_scenes, held_out_seeds
from training.generators import inpaint_generator, layout_generator, text_generator
from training.loop import (
    LOSS_LOG,
    STATE,
    load_state,
    log,
    prefetched,
    resume_run,
    run_loop,
    save_run,
    with_learning_rate,
)
from training.metrics import (
    evaluate_inpainting,
    evaluate_layout_to_image,
    evaluate_one_object,
    evaluate_text_to_image,
)
from training.model_files import exported_model, load_autoencoder, update_card, write_checkpoint
from training.pipeline import IMAGE_SIZE, engine_executor, inpaint_steps
from training.trainer import (
    LATENT_CHANNELS,
    ConcatTrainer,
    dataclass_from,
    with_overrides,
)

INPAINT_CONVENTION = "kiln"  # nodes/latent_nodes.inpaint_concat: latent zeroed in the hole, then the 0/1 mask
DEFAULT_MODEL = "resources/models/kiln-shapes-base"


def region_vocabulary() -> tuple[str, ...]:
    """The words a layout label's region channels light: every colour, then every shape."""
    return (*world.COLOURS, *world.SHAPES)


def vocabulary() -> tuple[str, ...]:
    """Every word a shapes-world caption or layout label can hold, sorted."""
    return tuple(sorted(world.VOCABULARY))


@dataclass
class LdmTrainConfig:
    unet: UNetConfig = field(default_factory=lambda: UNetConfig(
        in_channels=2 * LATENT_CHANNELS + 1, out_channels=LATENT_CHANNELS, model_channels=64,
        num_res_blocks=2, attention_resolutions=(2, 4), channel_mult=(1, 2, 2), num_head_channels=32,
        use_spatial_transformer=True, transformer_depth=1, context_dim=128,
        use_linear_in_transformer=True, legacy=False))
    conditioner: TokenConditionerConfig = field(default_factory=lambda: TokenConditionerConfig(
        words=vocabulary(), coord_bins=64, max_tokens=32, width=128, layers=2, heads=4))
    diffusion: DiffusionConfig = field(default_factory=lambda: DiffusionConfig(
        linear_start=0.0015, linear_end=0.0195, conditioning_key="hybrid", prediction="v"))
    scenes: int = 40_000  # training scenes encoded once to latents
    batch: int = 32
    lr: float = 2e-4
    ema: float = 0.998
    p_text: float = 0.45
    p_layout: float = 0.40  # the rest is unconditional
    p_inpaint: float = 0.5
    seed: int = 0
    position_lr_scale: float = 1.0  # learning rate of the UNet's position projections, times lr
    region_words: tuple[str, ...] = ()  # layout boxes also painted as concat channels (engine.models.regions)
    # of the inpainting masks that hide an object: the share whose text asks for that object by its
    # phrase (as an artist prompts for what goes in the hole), and the share that hides only half of it
    p_ask_object: float = 0.0
    p_half_object: float = 0.0
    # the share of the batch conditioned on regional prompts (engine.models.regional, attention mode): the
    # background as the global prompt, each object's phrase as a prompt on its box, no layout tokens or
    # region channels; taken before the text/layout/unconditional split
    p_regional: float = 0.0

    @property
    def region_channels(self) -> int:
        return 1 + len(self.region_words) if self.region_words else 0

    def with_regions(self, words: tuple[str, ...]) -> LdmTrainConfig:
        """This config with layout region channels for `words` after the inpainting channels."""
        k = 1 + len(words)
        return replace(self, region_words=tuple(words),
                       unet=replace(self.unet, in_channels=2 * LATENT_CHANNELS + 1 + k),
                       diffusion=replace(self.diffusion, region_channels=k))

    def checkpoint_conditioner(self) -> ConditionerConfig:
        """The exported conditioner: the token model plus the inpainting concat layout it was trained with."""
        params = {**self.conditioner.to_dict(), "inpaint_convention": INPAINT_CONVENTION}
        if self.region_words:
            params["region_words"] = list(self.region_words)
        return ConditionerConfig("tokens", params)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["unet"], d["diffusion"] = self.unet.to_dict(), self.diffusion.to_dict()
        d["conditioner"] = self.conditioner.to_dict()
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LdmTrainConfig:
        nested = {"unet": UNetConfig, "diffusion": DiffusionConfig, "conditioner": TokenConditionerConfig}
        return dataclass_from(cls, data, nested)


# ---------------------------------------------------------------- data


@dataclass
class Batch:
    latents: torch.Tensor  # (B, 4, 16, 16) scaled
    tokens: torch.Tensor  # (B, T)
    concat: torch.Tensor  # (B, 5 [+ K], 16, 16): masked latent, mask [, painted layout regions]
    regions: tuple[tuple[int, tuple[int, ...], tuple[float, ...]], ...] = ()  # (item, prompt ids, box) each


def make_batch(cfg: LdmTrainConfig, tokenizer, latents: torch.Tensor, seeds: list[int], scale: float,
               rng: np.random.Generator, scenes: list | None = None) -> Batch:
    """A random batch of the encoded scenes; `scenes` (the seeds' scenes, made once) saves remaking them."""
    idx = rng.integers(0, len(seeds), size=cfg.batch)
    x = latents[idx].float() * scale  # (B, 4, h, w)
    tokens, masks, layouts, regions = [], [], [], []
    for k, i in enumerate(idx):
        scene = scenes[i] if scenes is not None else world.make_scene(seeds[i])
        if cfg.p_regional > 0 and rng.random() < cfg.p_regional:
            ids, prompts = _regional_prompts(tokenizer, scene, rng)
            tokens.append(ids)
            layouts.append([])
            masks.append(np.zeros((x.shape[-1],) * 2, dtype=np.float32))
            regions += [(k, tuple(prompt), box) for prompt, box in prompts]
            continue
        ids, layout = _tokens_for(cfg, tokenizer, scene, rng)
        mask, hidden = _mask_for(cfg, scene, x.shape[-1], rng)
        # asking replaces the tokens drawn above, which are still drawn so that runs with p_ask_object 0
        # (every run before it) draw exactly the batches they drew
        if hidden is not None and cfg.p_ask_object > 0 and rng.random() < cfg.p_ask_object:
            ids, layout = tokenizer.encode_text(_asked_phrase(hidden, rng)), []
        tokens.append(ids)
        layouts.append(layout)
        masks.append(mask)
    mask = torch.from_numpy(np.stack(masks))[:, None].float()  # (B, 1, h, w) 1 = regenerate
    has_mask = mask.flatten(1).amax(1).view(-1, 1, 1, 1)
    parts = [x * (1 - mask) * has_mask, mask]
    if cfg.region_words:
        parts.append(paint_regions(layout_regions(layouts, cfg.region_words), *x.shape[-2:]))
    return Batch(x, tokenizer.batch(tokens), torch.cat(parts, dim=1), tuple(regions))


def _regional_prompts(tokenizer, scene, rng: np.random.Generator
                      ) -> tuple[list[int], list[tuple[list[int], tuple[float, ...]]]]:
    """A regional-prompt training item: the background as the global prompt (left empty with p=0.2), and
    per object its phrase (size dropped with p=0.3) on its box, each side moved by up to 0.02 as an
    artist's box would be."""
    background = f"on a {scene.background} background" if rng.random() >= 0.2 else ""
    prompts = []
    for obj in scene.objects:
        phrase = world.object_phrase(obj, with_size=rng.random() >= 0.3, with_position=False)
        box = np.clip(np.asarray(obj.box) + rng.uniform(-0.02, 0.02, size=4), 0.0, 1.0)
        prompts.append((tokenizer.encode_text(phrase), tuple(float(v) for v in box)))
    return tokenizer.encode_text(background), prompts


def _tokens_for(cfg: LdmTrainConfig, tokenizer, scene, rng: np.random.Generator) -> tuple[list[int], list[dict]]:
    """Token ids of a caption, a layout or nothing, and the layout's boxes (empty unless a layout)."""
    u = rng.random()
    if u < cfg.p_text:
        return tokenizer.encode_text(world.augmented_caption(scene, rng)), []
    if u < cfg.p_text + cfg.p_layout:
        boxes = world.layout(scene)
        order = rng.permutation(len(boxes))
        shuffled = [boxes[j] for j in order]
        return tokenizer.encode_layout(shuffled), shuffled
    return tokenizer.encode_text(""), []


def _asked_phrase(obj: world.SceneObject, rng: np.random.Generator) -> str:
    """The hidden object's phrase, its size and position each dropped with p=0.3 (as in captions)."""
    return world.object_phrase(obj, with_size=rng.random() >= 0.3, with_position=rng.random() >= 0.3)


def _mask_for(cfg: LdmTrainConfig, scene, n: int, rng: np.random.Generator
              ) -> tuple[np.ndarray, world.SceneObject | None]:
    """(n, n) latent-resolution mask: none, an object's grown box (or half of it), or a random rectangle;
    and the object it hides, if any."""
    mask, hidden = np.zeros((n, n), dtype=np.float32), None
    if rng.random() >= cfg.p_inpaint:
        return mask, hidden
    if rng.random() < 0.6:
        hidden = scene.objects[rng.integers(len(scene.objects))]
        x0, y0, x1, y1 = hidden.box
        if cfg.p_half_object > 0 and rng.random() < cfg.p_half_object:
            x0, y0, x1, y1 = _half_of((x0, y0, x1, y1), int(rng.integers(4)))
        grow = rng.uniform(0.0, 0.08)
        box = (x0 - grow, y0 - grow, x1 + grow, y1 + grow)
    else:
        w, h = rng.uniform(0.2, 0.7, size=2)
        x0, y0 = rng.uniform(0, 1 - w), rng.uniform(0, 1 - h)
        box = (x0, y0, x0 + w, y0 + h)
    # any latent cell the box touches is hole, as inpaint_concat's max-pooled mask at inference
    c0, r0 = int(np.floor(max(box[0], 0) * n)), int(np.floor(max(box[1], 0) * n))
    c1, r1 = int(np.ceil(min(box[2], 1) * n)), int(np.ceil(min(box[3], 1) * n))
    mask[r0:r1, c0:c1] = 1.0
    return mask, hidden


def _half_of(box: tuple[float, float, float, float], which: int) -> tuple[float, float, float, float]:
    """The left, right, top or bottom half (which 0-3) of a box."""
    x0, y0, x1, y1 = box
    xm, ym = (x0 + x1) / 2, (y0 + y1) / 2
    return [(x0, y0, xm, y1), (xm, y0, x1, y1), (x0, y0, x1, ym), (x0, ym, x1, y1)][which]


class Trainer(ConcatTrainer):
    """The UNet plus the token conditioner that learns with it (cross-attention context + inpainting concat)."""

    def __init__(self, cfg: LdmTrainConfig, device: str = "cpu"):
        self.cfg = cfg
        torch.manual_seed(cfg.seed)  # the conditioner is built before the UNet
        self.conditioner = TokenConditioner(cfg.conditioner)
        super().__init__(cfg.unet, cfg.diffusion, self.conditioner, cfg.lr, cfg.ema, cfg.seed, device,
                         cfg.position_lr_scale)

    def concat(self, cond_input: Batch) -> torch.Tensor:
        return cond_input.concat

    def context(self, cond_input: Batch) -> torch.Tensor | RegionalContext:
        context = self.conditioner(cond_input.tokens)  # (B, T, width)
        if not cond_input.regions:
            return context
        ids = torch.tensor([prompt for _, prompt, _ in cond_input.regions], device=context.device)
        encoded = self.conditioner(ids)  # (R, T, width)
        regions = [PromptRegion(encoded[j:j + 1], box=(box[0], box[1], box[2], box[3]), items=(item,))
                   for j, (item, _, box) in enumerate(cond_input.regions)]
        joined = compile_regions(context, regions, context.shape[0], 0.5, DEFAULT_BACKGROUND)
        return context if joined is None else joined

    def train_step(self, batch: Batch, gen: torch.Generator) -> float:  # type: ignore[override]
        return super().train_step(batch.latents, batch, gen)


# ---------------------------------------------------------------- commands


def train(args: argparse.Namespace) -> dict[str, float]:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    state_path = out / STATE
    start, before = None, {"step": 0, "images_seen": 0}
    if state_path.exists():
        meta = json.loads(load_state(state_path)["meta"])
        cfg, ae_path = LdmTrainConfig.from_dict(meta["config"]), meta["ae"]
        before = meta.get("before", before)
        log("resuming with the run's saved config")
    elif args.init_from:
        cfg, start = start_from_model(args.init_from, args.batch, args.lr or LdmTrainConfig.lr, args.scenes)
        before = {"step": start[1], "images_seen": _images_seen(args.init_from, start[1])}
        cfg.unet = with_overrides(cfg.unet, args.unet)
        cfg.position_lr_scale = args.position_lr_scale
        if args.regions and not cfg.region_words:
            cfg = cfg.with_regions(region_vocabulary())
        cfg = _with_share_flags(cfg, args)
        ae_path = args.ae
    else:
        cfg = LdmTrainConfig(scenes=args.scenes or LdmTrainConfig.scenes, batch=args.batch, lr=args.lr or LdmTrainConfig.lr,
                             position_lr_scale=args.position_lr_scale)
        cfg.unet = with_overrides(cfg.unet, args.unet)
        if args.regions:
            cfg = cfg.with_regions(region_vocabulary())
        cfg = _with_share_flags(cfg, args)
        ae_path = args.ae
    (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2, sort_keys=True))
    ae, card = load_autoencoder(ae_path)
    seeds = list(range(cfg.scenes))
    latents = encode_scenes(ae.to(args.device), seeds, out / "latents.pt", workers=args.workers)
    scale = float(card.get("scale_factor") or 1.0 / latents.float().std().item())
    trainer = Trainer(cfg, args.device)
    if args.fp32:
        trainer.autocast = None
    if args.compile:
        trainer.compile_unet()
    if start is not None:
        trainer.start_from(*start, args.init_from)
    rng, gen = resume_run(trainer, state_path, cfg.seed)
    cfg.lr = with_learning_rate(trainer, cfg.lr, args.lr)
    # `before`: the step and images seen of the model a run started from, which trained at other batch sizes
    meta = {"config": cfg.to_dict(), "ae": str(ae_path), "scale": scale, "before": before}
    tokenizer = trainer.conditioner.tokenizer
    scenes = [world.make_scene(seed) for seed in seeds]
    batches = prefetched(lambda r: (make_batch(cfg, tokenizer, latents, seeds, scale, r, scenes),),
                         (cfg.seed, trainer.step), args.workers)
    return run_loop(trainer, batches, rng, gen, lambda: save_run(trainer, rng, gen, meta, state_path), args.steps,
                    args.minutes, args.save_every, loss_log=out / LOSS_LOG, schedule=schedule_of(args))


def _with_share_flags(cfg: LdmTrainConfig, args: argparse.Namespace) -> LdmTrainConfig:
    """A new run's config with --ask-object, --half-object, --text-share and --layout-share, when given."""
    for name in ("ask_object", "half_object", "text_share", "layout_share", "regional_share"):
        value = getattr(args, name)
        if value is not None and not 0.0 <= value <= 1.0:
            raise KilnError(f"--{name.replace('_', '-')} must be between 0 and 1, not {value}")
    p_text = cfg.p_text if args.text_share is None else args.text_share
    p_layout = cfg.p_layout if args.layout_share is None else args.layout_share
    if p_text + p_layout > 1.0:
        raise KilnError(f"--text-share {p_text} and --layout-share {p_layout} add up to more than 1 "
                        f"(the rest of the batch is unconditional)")
    return replace(cfg, p_ask_object=cfg.p_ask_object if args.ask_object is None else args.ask_object,
                   p_regional=cfg.p_regional if args.regional_share is None else args.regional_share,
                   p_half_object=cfg.p_half_object if args.half_object is None else args.half_object,
                   p_text=p_text, p_layout=p_layout)


def _images_seen(model: str, step: int) -> int:
    """The images an exported model was trained on, from its card (older cards: its steps times its batch)."""
    training = json.loads(Path(model).with_suffix(".json").read_text())["training"]
    return int(training.get("images_seen", step * int(training["config"]["batch"])))


def start_from_model(path: str, batch: int, lr: float, scenes: int | None = None
                     ) -> tuple[LdmTrainConfig, tuple[dict, int]]:
    """The training config and (weights, step) of an exported base model, to train it further.

    The architecture and data settings come from its card; `batch` and `lr` are this run's
    (a GPU takes far larger batches than the CPU the model started on)."""
    config, weights, steps = exported_model(path, (UNET_PREFIX, COND_PREFIX))
    # the layout planner rides in the conditioner's file space but trains apart (training.train_planner;
    # its `copy` command puts it into the new model file)
    weights = {k: v for k, v in weights.items() if not k.startswith(COND_PREFIX + "planner.")}
    try:
        cfg = LdmTrainConfig.from_dict({**config, "batch": batch, "lr": lr, "scenes": scenes or config["scenes"]})
    except (KeyError, TypeError) as exc:
        raise KilnError(f"--init-from {path}: its card's training config does not fit ({exc})") from None
    return cfg, (weights, steps)


def checkpoint_config(cfg: LdmTrainConfig, ae_cfg: AutoencoderConfig, scale: float) -> CheckpointConfig:
    return CheckpointConfig(cfg.unet, ae_cfg, replace(cfg.diffusion, scale_factor=scale),
                            cfg.checkpoint_conditioner())


def export(run: str, out: str = DEFAULT_MODEL, ae_path: str | None = None, weights: str = "ema",
           dtype: str = "float16", eval_n: int = 0, eval_steps: int = 25, eval_cfg: float = 3.0) -> dict[str, Any]:
    """Write the model file and card from a run; with eval_n > 0, measure every mode through the engine."""
    state = load_state(Path(run) / STATE)
    meta = json.loads(state["meta"])
    cfg = LdmTrainConfig.from_dict(meta["config"])
    ae, ae_card = load_autoencoder(ae_path or meta["ae"])
    config = checkpoint_config(cfg, ae.cfg, float(meta["scale"]))
    tensors = state["ema"] if weights == "ema" else state["weights"]
    card = {"name": "Kiln shapes base",
            "description": "Text-to-image and layout-to-image (cross-attention on one word/box token stream) and "
                           "inpainting (concat: latent zeroed in the hole, mask) on the f=8 autoencoder's latents.",
            "latent_rgb_factors": ae_card.get("latent_rgb_factors"),
            "latent_rgb_network": ae_card.get("latent_rgb_network"),
            "training": {"command": f"python -m training.train_ldm train --out {run}",
                         "steps": int(state["step"]), "images_seen": _run_images_seen(meta, int(state["step"]), cfg.batch),
                         "weights": weights, "config": cfg.to_dict(), "autoencoder": str(ae_path or meta["ae"])}}
    card = write_checkpoint(out, tensors, ae, config, card, getattr(torch, dtype))
    if eval_n > 0:
        results = evaluate_model(f"{out}.safetensors", eval_n, eval_steps, eval_cfg)
        card = update_card(out, evaluation=results)
    return card


def _run_images_seen(meta: dict[str, Any], step: int, batch: int) -> int:
    before = meta.get("before", {"step": 0, "images_seen": 0})
    return int(before["images_seen"]) + (step - int(before["step"])) * batch


def evaluate_model(model: str, n: int, steps: int = 25, cfg: float = 3.0, offset: int = 0) -> list[dict]:
    """Text-to-image, layout-to-image and inpainting metrics of a base checkpoint, through the engine."""
    seeds = held_out_seeds(n, offset)
    executor = engine_executor()
    text = text_generator(model, steps, cfg, executor=executor)
    first, refine_steps = inpaint_steps(steps)  # as inpainting.json: the steps shared by its two passes
    inpaint = inpaint_generator(model, first, executor=executor, cfg=cfg, refine_steps=refine_steps)
    results = [evaluate_one_object(text, seeds), evaluate_text_to_image(text, seeds),
               evaluate_layout_to_image(layout_generator(model, steps, cfg, executor=executor), seeds),
               evaluate_inpainting(inpaint, seeds)]
    command = f"python -m training.evaluate {{}} --model {model} --n {n} --steps {steps}"
    for result, name in zip(results, ("text-to-image", "text-to-image", "layout-to-image", "inpainting")):
        result["command"] = command.format(name) + f" --cfg {cfg}"
    return results


def speed(args: argparse.Namespace) -> dict[str, float]:
    """Steps/s of the real trainer and batch making, on random latents (no autoencoder needed).

    One step runs before the clock starts (with --compile it compiles), so the figure is the steady rate."""
    cfg = LdmTrainConfig(batch=args.batch)
    seeds = list(range(1000))
    latents = torch.randn(len(seeds), LATENT_CHANNELS, IMAGE_SIZE // 8, IMAGE_SIZE // 8).half()
    trainer = Trainer(cfg, args.device)
    if args.compile:
        trainer.compile_unet()
    rng, gen = np.random.default_rng(0), torch.Generator().manual_seed(0)
    unet = sum(p.numel() for p in trainer.unet.parameters())
    cond = sum(p.numel() for p in trainer.conditioner.parameters())
    log(f"UNet {unet / 1e6:.2f} M + conditioner {cond / 1e6:.2f} M parameters, batch {cfg.batch}, "
        f"{torch.get_num_threads()} threads, {args.device}")
    tokenizer = trainer.conditioner.tokenizer
    started = time.monotonic()
    trainer.train_step(make_batch(cfg, tokenizer, latents, seeds, 1.0, rng), gen)
    first = time.monotonic() - started
    log(f"first step {first:.1f} s")
    result = run_loop(trainer, lambda r: (make_batch(cfg, tokenizer, latents, seeds, 1.0, r),), rng, gen,
                      lambda: None, 10**9, args.seconds / 60, float("inf"), log_every=5)
    return {**result, "first_step_s": round(first, 2), "compiled": bool(args.compile)}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training.train_ldm", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    tr = add_train_parser(sub, "runs/ldm", "resources/models/kiln-shapes-ae.safetensors", LdmTrainConfig.batch,
                          LdmTrainConfig.lr)
    tr.add_argument("--scenes", type=int, default=None,
                    help=f"training scenes (default {LdmTrainConfig.scenes:,}; with --init-from, the model's)")
    tr.add_argument("--init-from", default=None, metavar="MODEL.safetensors",
                    help="start a new run from an exported base model and its card (its architecture and weights)")
    tr.add_argument("--position-lr-scale", type=float, default=LdmTrainConfig.position_lr_scale,
                    help="a new run's learning rate for the UNet's position projections, times --lr (for "
                         "position features added to a trained model with --unet)")
    tr.add_argument("--regions", action="store_true",
                    help="a new run also paints layout boxes as concat channels (box, colour and shape words); "
                         "with --init-from, the model's first convolution grows zero-weighted inputs for them")
    tr.add_argument("--ask-object", type=float, default=None, metavar="P",
                    help="a new run: of the inpainting masks that hide an object, the share whose text is that "
                         "object's phrase")
    tr.add_argument("--half-object", type=float, default=None, metavar="P",
                    help="a new run: of the inpainting masks that hide an object, the share that hides half of it")
    tr.add_argument("--text-share", type=float, default=None, metavar="P",
                    help=f"a new run: the share of the batch conditioned on captions (default "
                         f"{LdmTrainConfig.p_text}; with --init-from, the model's)")
    tr.add_argument("--layout-share", type=float, default=None, metavar="P",
                    help=f"a new run: the share conditioned on layouts (default {LdmTrainConfig.p_layout}; with "
                         f"--init-from, the model's); the rest is unconditional")
    tr.add_argument("--regional-share", type=float, default=None, metavar="P",
                    help="a new run: the share of the batch conditioned on regional prompts (the background as "
                         "the global prompt, each object's phrase on its box, by masked cross-attention), taken "
                         "before the text/layout split (default 0; with --init-from, the model's)")
    tr.add_argument("--fp32", action="store_true", help="on a GPU too, run the forward pass in float32 "
                    "(by default bfloat16 there)")
    tr.add_argument("--compile", action="store_true", help="run the UNet through torch.compile (for a GPU: "
                    "fused kernels; the first step compiles: 4 minutes cold on this 2-core CPU, seconds from "
                    "inductor's cache)")
    ex = sub.add_parser("export", help="write the model file and its card from a run")
    add_export_arguments(ex, "runs/ldm", DEFAULT_MODEL, 25, "scenes")
    ex.add_argument("--eval-cfg", type=float, default=3.0)
    sp = add_speed_parser(sub, LdmTrainConfig.batch)
    sp.add_argument("--device", default="cpu")
    sp.add_argument("--compile", action="store_true", help="time the UNet run through torch.compile")
    add_threads_argument(tr, ex, sp)
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_command(_parser().parse_args(argv), _run_command)


def _run_command(args: argparse.Namespace) -> None:
    dispatch(args, train, lambda a: export(a.run, a.out, a.ae, a.weights, a.dtype, a.eval_n, a.eval_steps,
                                           a.eval_cfg), speed)


if __name__ == "__main__":
    sys.exit(main())
