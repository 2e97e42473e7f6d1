"""The diffusion trainers' command lines: the `train`, `export` and `speed` subcommands' shared flags,
their dispatch, and the thread count and error handling every training command runs under.
"""
from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

import torch

from engine.errors import KilnError
from training.loop import LrSchedule

THREADS_HELP = "torch threads; 1 is fastest while other work shares the CPU (measured 5-10x)"


def add_train_parser(sub: Any, out: str, ae: str, batch: int, lr: float, what: str = "train") -> Any:
    """The `train` subcommand with the flags every diffusion trainer has; callers add their own."""
    tr = sub.add_parser("train", help=f"{what} (resumes from OUT/state.pt when it exists)")
    tr.add_argument("--out", default=out)
    tr.add_argument("--ae", default=ae)
    tr.add_argument("--batch", type=int, default=batch)
    tr.add_argument("--lr", type=float, default=None,
                    help=f"learning rate (a new run's default {lr:g}; a resumed run keeps its own unless given)")
    tr.add_argument("--device", default="cpu", help="where to train: cpu, cuda, cuda:N or mps (the saved state "
                    "is device-free, so a run can move between machines)")
    add_run_arguments(tr)
    return tr


def dispatch(args: Any, train: Callable[[Any], Any], export: Callable[[Any], dict[str, Any]],
             speed: Callable[[Any], dict[str, float]]) -> None:
    """Run the parsed `train`, `export` or `speed` subcommand of a diffusion trainer."""
    if args.command == "export":
        print_export(export(args), args.out)
    elif args.command == "speed":
        print(json.dumps(speed(args)))
    else:
        train(args)


def add_run_arguments(parser: Any, minutes: float = 120.0) -> None:
    """--unet, --steps, --minutes, --save-every: how long a diffusion trainer runs and how often it saves."""
    parser.add_argument("--unet", default=None, help='UNet config changes as JSON, e.g. \'{"model_channels": 32}\'')
    parser.add_argument("--steps", type=int, default=1_000_000)
    parser.add_argument("--minutes", type=float, default=minutes)
    parser.add_argument("--save-every", type=float, default=300.0)
    parser.add_argument("--workers", type=int, default=0,
                        help="processes that render scenes and make batches ahead of the trainer (for a GPU)")
    parser.add_argument("--warmup", type=int, default=0, help="steps of linear learning-rate warm-up")
    parser.add_argument("--decay-from", type=float, default=1.0,
                        help="fraction of this call's steps or minutes after which the learning rate falls "
                             "linearly to a tenth (1 = never)")


def schedule_of(args: Any) -> LrSchedule:
    """The learning-rate schedule a `train` command's --warmup and --decay-from ask for."""
    if args.warmup < 0 or not 0.0 <= args.decay_from <= 1.0:
        raise KilnError("--warmup must be >= 0 and --decay-from between 0 and 1")
    return LrSchedule(warmup=args.warmup, decay_from=args.decay_from)


def add_export_arguments(parser: Any, run: str, out: str, eval_steps: int, eval_what: str) -> None:
    """--run, --out, --ae, --weights, --dtype, --eval-n, --eval-steps of an `export` subcommand."""
    parser.add_argument("--run", default=run)
    parser.add_argument("--out", default=out, help="path without extension")
    parser.add_argument("--ae", default=None, help="the autoencoder file (default: the one the run trained on)")
    parser.add_argument("--weights", choices=("ema", "raw"), default="ema")
    parser.add_argument("--dtype", choices=("float16", "float32"), default="float16")
    parser.add_argument("--eval-n", type=int, default=0, help=f"held-out {eval_what} to measure through the engine")
    parser.add_argument("--eval-steps", type=int, default=eval_steps)


def add_speed_parser(sub: Any, batch: int, what: str = "training") -> Any:
    sp = sub.add_parser("speed", help=f"measure {what} steps/s on random latents")
    sp.add_argument("--seconds", type=float, default=60.0)
    sp.add_argument("--batch", type=int, default=batch)
    return sp


def add_threads_argument(*parsers: Any) -> None:
    for parser in parsers:
        parser.add_argument("--threads", type=int, default=1, help=THREADS_HELP)


def run_command(args: Any, command: Callable[[Any], None]) -> int:
    """Set the thread count and run; a KilnError becomes one line on stderr and exit status 2."""
    torch.set_num_threads(args.threads)
    try:
        command(args)
    except KilnError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


def print_export(card: dict[str, Any], out: str) -> None:
    """What an export prints: the evaluation when there was one, else the file and its training steps."""
    print(json.dumps(card.get("evaluation") or {"written": f"{out}.safetensors",
                                                "steps": card["training"]["steps"]}, indent=2))
