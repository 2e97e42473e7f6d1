"""Start-to-finish time of `main.py run`, as a user sees it: `python3 -m bench.bench_startup`.

    python3 -m bench.bench_startup [--base PATH] [--sr PATH] [--random] [--runs 3] [--json]
                                   [--against CHECKOUT]

Each measurement is a fresh process, model loading included:
- `main.py run resources/graphs/text_to_image.json --no-disk-cache` (one 128 px
  image, 25 guided steps; goal: under 3 s), median of --runs;
- `main.py run resources/graphs/default.json --no-disk-cache` (that, then 4x
  super-resolution to 512 px; goal: under 30 s), once;
- the reference beside them: the seconds `import torch` alone takes in a fresh
  interpreter (median of --runs), which every run pays first.

With --against (another checkout of Kiln, e.g. `git worktree add /tmp/old HEAD~3`),
text_to_image runs of that checkout's main.py and of this one alternate, each pair
back to back, and the median of the per-pair ratios (ours / theirs) is reported:
on a machine whose speed drifts by a third from one minute to the next, only
runs taken side by side compare.

Models: the built-in ones in resources/models, or --base / --sr, or with
--random freshly built random-weight checkpoints of the built-in architectures
(same cost to run as trained ones; for before the trained weights exist). The
runs inherit the environment (OMP_NUM_THREADS included); the 1-minute load
average is printed, since other work on the CPU inflates every figure.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "resources" / "models"
BASE_NAME, SR_NAME = "kiln-shapes-base.safetensors", "kiln-shapes-sr.safetensors"


def torch_import_seconds() -> float:
    code = "import time; t = time.perf_counter(); import torch; print(time.perf_counter() - t)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300)
    return float(out.stdout.strip())


def run_graph(graph: str, overrides: list[str], workdir: str, root: Path = ROOT) -> dict:
    """Wall seconds of one `main.py run GRAPH --no-disk-cache --json` process and its per-node seconds."""
    command = [sys.executable, str(root / "main.py"), "run", str(root / "resources" / "graphs" / graph),
               "--no-disk-cache", "--out", workdir, "--json"]
    for item in overrides:
        command += ["--set", item]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, timeout=1800, cwd=root, check=False)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"bench_startup: {graph} failed: {done.stderr.strip()}")
    summary = json.loads(done.stdout)
    return {"wall_s": round(wall, 3), "engine_s": summary["seconds"],
            "nodes_s": {nid: node["seconds"] for nid, node in summary["nodes"].items()}}


def random_checkpoints(folder: Path) -> tuple[str, str]:
    """Random-weight base and SR checkpoints of the built-in architectures, written into `folder`."""
    import torch

    from engine.models.autoencoder import AutoencoderKL
    from training import train_autoencoder, train_ldm, train_sr
    from training.autoencoder import TrainConfig, autoencoder_config
    from training.model_files import load_autoencoder, write_checkpoint
    from training.trainer import ConcatTrainer

    ae, ae_card = load_autoencoder(str(MODELS / "kiln-shapes-ae.safetensors"))
    cfg = train_ldm.LdmTrainConfig()
    base = train_ldm.Trainer(cfg)
    write_checkpoint(folder / "kiln-shapes-base", base.state()["ema"], ae,
                     train_ldm.checkpoint_config(cfg, ae.cfg, float(ae_card["scale_factor"])),
                     {"name": "random-weight base (bench)", "latent_rgb_factors": ae_card.get("latent_rgb_factors")})
    flags = train_autoencoder._parser().parse_args(["train", *train_sr.SR_AE_FLAGS])
    sr_ae_cfg = autoencoder_config(TrainConfig(
        ch=flags.ch, ch_mult=flags.ch_mult, num_res_blocks=flags.num_res_blocks, z_channels=flags.z_channels))
    sr_ae = AutoencoderKL(sr_ae_cfg).eval()
    sr_cfg = train_sr.SrTrainConfig()
    sr_cfg.unet = train_sr.fit_unet(sr_cfg, sr_ae_cfg.embed_dim)
    sr = ConcatTrainer(sr_cfg.unet, sr_cfg.diffusion, None, sr_cfg.lr, sr_cfg.ema, sr_cfg.seed)
    write_checkpoint(folder / "kiln-shapes-sr", sr.state()["ema"], sr_ae,
                     train_sr.checkpoint_config(sr_cfg, sr_ae_cfg, 1.0), {"name": "random-weight SR (bench)"},
                     torch.float16)
    return str(folder / BASE_NAME), str(folder / SR_NAME)


def model_paths(args: argparse.Namespace, workdir: Path) -> tuple[str, str]:
    if args.random:
        return random_checkpoints(workdir)
    base, sr = args.base or str(MODELS / BASE_NAME), args.sr or str(MODELS / SR_NAME)
    for path in (base, sr):
        if not Path(path).is_file():
            raise SystemExit(f"bench_startup: {path} does not exist; give --base/--sr, or --random")
    return os.path.abspath(base), os.path.abspath(sr)


def bench(args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory(prefix="kiln-bench-startup-") as tmp:
        base, sr = model_paths(args, Path(tmp))
        load_before = os.getloadavg()[0]
        imports = [torch_import_seconds() for _ in range(args.runs)]
        texts = [run_graph("text_to_image.json", [f"ckpt.checkpoint={base}"], tmp) for _ in range(args.runs)]
        upscale = run_graph("default.json", [f"ckpt.checkpoint={base}", f"sr_ckpt.checkpoint={sr}"], tmp)
    median_text = sorted(texts, key=lambda r: r["wall_s"])[len(texts) // 2]
    return {"torch_import_s": round(statistics.median(imports), 3),
            "text_to_image_s": median_text["wall_s"], "text_to_image_runs_s": [r["wall_s"] for r in texts],
            "text_to_image_nodes_s": median_text["nodes_s"],
            "default_512_s": upscale["wall_s"], "default_512_nodes_s": upscale["nodes_s"],
            "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "models": {"base": base, "sr": sr}}


def paired(args: argparse.Namespace) -> dict:
    """text_to_image.json alternately on the other checkout and on this one (their own built-in models)."""
    other = Path(args.against).resolve()
    if not (other / "main.py").is_file():
        raise SystemExit(f"bench_startup: {other} is not a Kiln checkout (no main.py)")
    theirs, ours = [], []
    with tempfile.TemporaryDirectory(prefix="kiln-bench-startup-") as tmp:
        for _ in range(args.runs):
            theirs.append(run_graph("text_to_image.json", [], tmp, other)["wall_s"])
            ours.append(run_graph("text_to_image.json", [], tmp)["wall_s"])
    ratios = [o / t for o, t in zip(ours, theirs, strict=True)]
    return {"against": str(other), "theirs_s": theirs, "ours_s": ours,
            "theirs_median_s": statistics.median(theirs), "ours_median_s": statistics.median(ours),
            "median_pair_ratio": round(statistics.median(ratios), 3)}


def report_paired(result: dict) -> None:
    runs = lambda values: ", ".join(f"{v:.2f}" for v in values)
    print(f"text_to_image.json, {result['against']}: median {result['theirs_median_s']:.2f} s "
          f"(runs {runs(result['theirs_s'])})")
    print(f"text_to_image.json, this checkout: median {result['ours_median_s']:.2f} s (runs {runs(result['ours_s'])})")
    print(f"median of the pair ratios (this / that; lower is faster): {result['median_pair_ratio']}")


def report(result: dict) -> None:
    slow = lambda nodes: ", ".join(f"{k} {v:.2f}" for k, v in nodes.items() if v >= 0.05)
    print(f"import torch alone (reference)  {result['torch_import_s']:6.2f} s")
    print(f"text_to_image.json, 128 px      {result['text_to_image_s']:6.2f} s wall (goal < 3; runs "
          f"{', '.join(f'{s:.2f}' for s in result['text_to_image_runs_s'])}; nodes: "
          f"{slow(result['text_to_image_nodes_s'])})")
    print(f"default.json, 128 -> 512 px     {result['default_512_s']:6.2f} s wall (goal < 30; nodes: "
          f"{slow(result['default_512_nodes_s'])})")
    print(f"load average before/after: {result['load_average'][0]} / {result['load_average'][1]}; "
          f"OMP_NUM_THREADS={result['omp_num_threads'] or 'unset'}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m bench.bench_startup", description=__doc__.split("\n")[0])
    parser.add_argument("--base", help=f"base checkpoint (default: resources/models/{BASE_NAME})")
    parser.add_argument("--sr", help=f"4x SR checkpoint (default: resources/models/{SR_NAME})")
    parser.add_argument("--random", action="store_true", help="random-weight checkpoints of the built-in "
                        "architectures, built in a temporary folder")
    parser.add_argument("--runs", type=int, default=3, help="text_to_image runs and torch imports (median)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--against", metavar="CHECKOUT", help="another Kiln checkout: text_to_image runs of it "
                        "and of this one alternate, and the median pair ratio is reported")
    args = parser.parse_args(argv)
    result = paired(args) if args.against else bench(args)
    if args.json:
        print(json.dumps(result))
    else:
        (report_paired if args.against else report)(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
