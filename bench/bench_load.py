"""Loading an SD 1.5-size checkpoint, Kiln against diffusers: `python3 -m bench.bench_load`.

    python3 -m bench.bench_load [--runs 3] [--threads 1] [--dir DIR] [--only kiln|diffusers] [--kiln ROOT] [--against ROOT]

Writes a random-weight checkpoint with the real SD 1.5 shapes in the original single-file layout
(fp16, about 2 GB, no embedded config: Kiln detects it from the shapes as it would a downloaded file)
into DIR (default: the temp folder; reused when present). Then each run is a fresh process, so the
imports count: Kiln's `load_checkpoint(path, "cpu")` against the same work in diffusers and
transformers (read the file, convert the keys, build UNet2DConditionModel, AutoencoderKL and
CLIPTextModel from their SD 1.5 configs and load the weights; `from_single_file` needs the hub's
config files, which are not there offline), both in fp32 on the CPU with --threads threads.
--kiln ROOT times the Kiln of another checkout (an older commit unpacked with `git archive`);
--against ROOT adds one to the rotation, so that before and after are timed side by side.
Runs alternate (Kiln, diffusers, Kiln, ...) so that a machine whose speed drifts treats both alike;
it prints each run's wall time and the parts inside the process, the medians and their ratio.
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
FILE_NAME = "kiln-bench-sd15-random-fp16.safetensors"

_KILN = """
import time; t0 = time.perf_counter()
import torch; torch.set_num_threads({threads})
t1 = time.perf_counter()
from engine.models.loader import load_checkpoint
t2 = time.perf_counter()
loaded = load_checkpoint({path!r}, "cpu")
t3 = time.perf_counter()
assert loaded.config.preset == "sd15", loaded.config.preset
import json; print(json.dumps({{"import torch": t1 - t0, "import loader": t2 - t1, "load": t3 - t2, "in process": t3 - t0}}))
"""

_DIFFUSERS = """
import time; t0 = time.perf_counter()
import torch; torch.set_num_threads({threads})
t1 = time.perf_counter()
import warnings; warnings.simplefilter("ignore")
from diffusers import AutoencoderKL, UNet2DConditionModel
from diffusers.loaders import single_file_utils as sfu
from diffusers.utils import logging; logging.set_verbosity_error()
from safetensors.torch import load_file
from transformers import CLIPTextConfig, CLIPTextModel
t2 = time.perf_counter()
ckpt = load_file({path!r})
yaml = {yaml!r}
ucfg = sfu.create_unet_diffusers_config_from_ldm(yaml, ckpt)
vcfg = sfu.create_vae_diffusers_config_from_ldm(yaml, ckpt, image_size=512)
unet = UNet2DConditionModel(**ucfg)
unet.load_state_dict(sfu.convert_ldm_unet_checkpoint(ckpt, ucfg), strict=True)
vae = AutoencoderKL(**vcfg)
vae.load_state_dict(sfu.convert_ldm_vae_checkpoint(ckpt, vcfg), strict=True)
text = CLIPTextModel(CLIPTextConfig(**{clip!r}))
prefix = "cond_stage_model.transformer."
state = {{k[len(prefix):]: v for k, v in ckpt.items() if k.startswith(prefix)}}
state = {{k: v for k, v in state.items() if not k.endswith("position_ids")}}
own = text.state_dict()
if not any(k.startswith("text_model.") for k in own):  # transformers 5 dropped that level
    state = {{k.removeprefix("text_model."): v for k, v in state.items()}}
text.load_state_dict(state, strict=False)
for m in (unet, vae, text):
    m.to("cpu", torch.float32).eval().requires_grad_(False)
t3 = time.perf_counter()
import json; print(json.dumps({{"import torch": t1 - t0, "import loader": t2 - t1, "load": t3 - t2, "in process": t3 - t0}}))
"""

CLIP_L = {"vocab_size": 49408, "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
          "num_attention_heads": 12, "max_position_embeddings": 77, "hidden_act": "quick_gelu"}


def _yaml() -> dict:
    """The original v1-inference.yaml's model part, as diffusers' converters read it."""
    unet = {"in_channels": 4, "out_channels": 4, "model_channels": 320, "attention_resolutions": [4, 2, 1],
            "num_res_blocks": 2, "channel_mult": [1, 2, 4, 4], "num_heads": 8, "use_spatial_transformer": True,
            "transformer_depth": 1, "context_dim": 768, "use_checkpoint": True, "legacy": False,
            "image_size": 32}
    ddconfig = {"double_z": True, "z_channels": 4, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 128,
                "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [], "dropout": 0.0}
    return {"model": {"params": {"scale_factor": 0.18215, "unet_config": {"params": unet},
                                 "first_stage_config": {"params": {"embed_dim": 4, "ddconfig": ddconfig}}}}}


def sd15_shapes() -> dict[str, tuple[int, ...]]:
    """Every tensor of an SD 1.5 single file (original names) with its shape, from Kiln's modules on meta."""
    from engine.models.keymaps import AE_PREFIX, COND_PREFIX, UNET_PREFIX
    from engine.models.loader import build_modules, meta_modules
    from engine.models.presets import get_preset

    with meta_modules():
        unet, ae, cond = build_modules(get_preset("sd15"))
    shapes = {UNET_PREFIX + k: tuple(v.shape) for k, v in unet.state_dict().items()}
    shapes.update({AE_PREFIX + k: tuple(v.shape) for k, v in ae.state_dict().items()})
    shapes.update({COND_PREFIX + cond.source_key(k)[0]: tuple(v.shape) for k, v in cond.state_dict().items()})
    return shapes


def write_checkpoint(path: Path) -> None:
    import torch
    from safetensors.torch import save_file

    generator = torch.Generator().manual_seed(0)
    state = {}
    for key, shape in sorted(sd15_shapes().items()):
        fan_in = max(1, int(torch.tensor(shape[1:]).prod().item())) if len(shape) > 1 else 1
        state[key] = (torch.randn(shape, generator=generator) / fan_in ** 0.5).half()
    state["cond_stage_model.transformer.text_model.embeddings.position_ids"] = torch.arange(77)[None]
    tmp = path.with_suffix(".partial")
    save_file(state, str(tmp))
    os.replace(tmp, path)


def run_once(code: str, threads: int, root: Path = ROOT) -> dict[str, float]:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONPATH=str(root))
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, env=env,
                          timeout=900, check=False)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"bench_load: a run failed:\n{done.stderr.strip()[-3000:]}")
    parts = json.loads(done.stdout.strip().splitlines()[-1])
    return {"wall": wall, **parts}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--dir", default=os.path.join(tempfile.gettempdir(), "kiln-bench-load"))
    parser.add_argument("--only", choices=("kiln", "diffusers"))
    parser.add_argument("--kiln", type=Path, default=ROOT, help="the Kiln checkout to time (default: this one)")
    parser.add_argument("--against", type=Path, help="also time the Kiln of this checkout, in the same rotation")
    args = parser.parse_args()
    path = Path(args.dir) / FILE_NAME
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        print(f"writing {path} ...", flush=True)
        write_checkpoint(path)
    print(f"Kiln {args.kiln}; {path} ({path.stat().st_size / 1e9:.2f} GB), threads {args.threads}, {args.runs} runs each, "
          f"load average {os.getloadavg()[0]:.2f}", flush=True)
    codes = {"kiln": _KILN.format(threads=args.threads, path=str(path)),
             "diffusers": _DIFFUSERS.format(threads=args.threads, path=str(path), yaml=_yaml(), clip=CLIP_L)}
    roots = {"kiln": args.kiln, "kiln-other": args.against, "diffusers": ROOT}
    codes["kiln-other"] = codes["kiln"]
    sides = [args.only] if args.only else ["kiln", "diffusers"]
    sides += ["kiln-other"] if args.against else []
    results: dict[str, list[dict[str, float]]] = {side: [] for side in sides}
    for run in range(args.runs):
        for side in sides:
            parts = run_once(codes[side], args.threads, roots[side])
            results[side].append(parts)
            print(f"run {run + 1} {side:10} " + "  ".join(f"{k} {v:.2f} s" for k, v in parts.items()), flush=True)
    medians = {side: {k: statistics.median(r[k] for r in rows) for k in rows[0]} for side, rows in results.items()}
    for side, parts in medians.items():
        print(f"median {side:10} " + "  ".join(f"{k} {v:.2f} s" for k, v in parts.items()))
    for side in ("kiln", "kiln-other"):
        if side in medians and "diffusers" in medians:
            print(f"ratio {side}/diffusers (wall): {medians[side]['wall'] / medians['diffusers']['wall']:.2f}")


if __name__ == "__main__":
    main()
