"""Train the built-in KL autoencoder (f=8, 4 latent channels) on the shapes world, and export it.

    python -m training.train_autoencoder train --out runs/ae
    python -m training.train_autoencoder export --run runs/ae
    python -m training.train_autoencoder fit-preview resources/models/kiln-shapes-base.safetensors

Running `train` again with the same --out resumes; flags given then override
the saved config (e.g. a lower --lr). The training itself (and why it sees whole
images rather than crops) is training/autoencoder.py; the export
training/autoencoder_export.py.
"""
from __future__ import annotations

import argparse
import json
import sys

from training.autoencoder import add_config_flags, train_from_flags
from training.autoencoder_export import export, fit_preview


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training.train_autoencoder",
                                     description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train (resumes from OUT/checkpoint.pt when it exists)")
    add_config_flags(train)
    exp = sub.add_parser("export", help="write the weights and the JSON card from a run")
    exp.add_argument("--run", default="runs/ae")
    exp.add_argument("--out", default="resources/models/kiln-shapes-ae", help="path without extension")
    exp.add_argument("--n", type=int, default=500, help="held-out images for the PSNR in the card")
    exp.add_argument("--weights", choices=("best", "ema", "model"), default="best")
    fit = sub.add_parser("fit-preview", help="fit the live preview's latent -> RGB network into a model's card")
    fit.add_argument("model", help="a shipped .safetensors file with its .json card beside it")
    fit.add_argument("--n", type=int, default=256, help="training scenes to fit on")
    fit.add_argument("--size", type=int, default=128, help="their size in pixels (the size the model works at)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "fit-preview":
        fit_preview(args.model, args.n, args.size)
        return 0
    if args.command == "export":
        card = export(args.run, args.out, args.n, args.weights)
        print(json.dumps(card["evaluation"], indent=2))
        return 0
    return train_from_flags(args, sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
