#!/bin/bash
# Train the built-in models further on a lent GPU, in one prepared call, and bring them back.
#
#   OUT=/results/folder MINUTES=6 bash training/gpu_session.sh
#
# CHAINS names what trains (default: base alone, the model furthest from its goals); "base sr" runs
# both at once on the GPU, the CPU cores rendering scenes and making batches for them:
#   base: train_ldm on from the shipped base model (--init-from), large batches, bfloat16 forward,
#         WORKERS processes making batches, a warm-up and a decay over the last DECAY_FROM -> export
#         (the shipped model's layout planner copied into it)
#   decoder: tune_decoder on the base autoencoder's decoder (the top-edge band), DEC_* settings -> export
#         the tuned autoencoder (not measured there: swap it in and evaluate on the CPU)
#   sr:   the f=4 autoencoder on from the shipped SR model's autoencoder -> export it ->
#         the SR UNet on from the shipped SR UNet, on the new latents -> export
# Into $OUT go the model files (split into 15 MB parts, the most the device tool brings back
# per file: join with `cat NAME.safetensors.part-* > NAME.safetensors`) and notes.tar.gz: their
# cards, the loss logs and the chains' logs. Evaluate them afterwards on the CPU
# (python -m training.evaluate ...), not on GPU time.
# DEVICE, SCENES, POOL and the *_BATCH variables exist for a small smoke test on a CPU.
set -u
OUT=${OUT:?set OUT to the folder the results go to}
MINUTES=${MINUTES:-6}
DEVICE=${DEVICE:-cuda}
RUNS=${RUNS:-/tmp/kiln-gpu-runs}
SCENES=${SCENES:-48000}
POOL=${POOL:-8000}
BASE_BATCH=${BASE_BATCH:-512}
AE_BATCH=${AE_BATCH:-48}
SR_BATCH=${SR_BATCH:-128}
THREADS=${THREADS:-4}
CHAINS=${CHAINS:-base}
WORKERS=${WORKERS:-10}
BASE_LR=${BASE_LR:-3e-4}
WARMUP=${WARMUP:-300}
DECAY_FROM=${DECAY_FROM:-0.6}
ASK_OBJECT=${ASK_OBJECT:-0.3}
HALF_OBJECT=${HALF_OBJECT:-0.5}
# the shares of the batch conditioned on captions and on layouts (empty: the shipped model's, 0.45 and 0.40)
TEXT_SHARE=${TEXT_SHARE:-}
LAYOUT_SHARE=${LAYOUT_SHARE:-}
STEPS=${STEPS:-1000000}
# COMPILE=1: the base UNet through torch.compile (--compile); untried on a GPU so far: the first minute or two
# compile, and the logged steps/s then say whether it beats the 6.3-8 steps/s of the eager runs of sessions 6-7
COMPILE=${COMPILE:-0}
DEC_LR=${DEC_LR:-1e-4}
DEC_BATCH=${DEC_BATCH:-64}
DEC_BORDER=${DEC_BORDER:-8}
DEC_POOL=${DEC_POOL:-12000}
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=$THREADS
mkdir -p "$RUNS" "$OUT"
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null
nproc
minutes() { python3 -c "print(round($MINUTES * $1, 2))"; }

base_train() {  # base_train MINUTES [extra flags]
  python3 -m training.train_ldm train --out "$RUNS/ldm" --init-from resources/models/kiln-shapes-base.safetensors \
    --scenes "$SCENES" --device "$DEVICE" --batch "$BASE_BATCH" --lr "$BASE_LR" --minutes "$1" \
    --steps "$STEPS" --warmup "$WARMUP" --decay-from "$DECAY_FROM" \
    --ask-object "$ASK_OBJECT" --half-object "$HALF_OBJECT" ${TEXT_SHARE:+--text-share "$TEXT_SHARE"} \
    ${LAYOUT_SHARE:+--layout-share "$LAYOUT_SHARE"} --save-every 120 --threads "$THREADS" "${@:2}"
}

base() {
  # the worker processes and bfloat16 are new on a GPU: should that fail, the rest of the time goes to
  # a plain float32 run with batches made in the loop (it resumes from the last save, if any)
  local deadline=$(( $(date +%s) + ${MINUTES%.*} * 60 + 60 ))
  local compile=""
  [ "$COMPILE" = 1 ] && compile="--compile"
  base_train "$MINUTES" --workers "$WORKERS" $compile || {
    local left=$(( (deadline - $(date +%s)) / 60 ))
    echo "base: retrying for $left minutes in float32 without workers"
    [ "$left" -ge 1 ] && base_train "$left" --workers 0 --fp32
  } &&
  python3 -m training.train_ldm export --run "$RUNS/ldm" --out "$RUNS/kiln-shapes-base" --threads "$THREADS" &&
  python3 -m training.train_planner copy --from resources/models/kiln-shapes-base.safetensors \
    --into "$RUNS/kiln-shapes-base.safetensors"  # the shipped layout planner, into the retrained model
}

decoder() {
  python3 -m training.tune_decoder train --out "$RUNS/decoder" --device "$DEVICE" --lr "$DEC_LR" \
    --batch "$DEC_BATCH" --border-weight "$DEC_BORDER" --pool "$DEC_POOL" --minutes "$MINUTES" \
    --save-every 120 --threads "$THREADS" &&
  python3 -m training.tune_decoder export --run "$RUNS/decoder" --out "$RUNS/kiln-shapes-ae-tuned" --n 0
}

sr() {
  python3 -m training.train_sr autoencoder --out "$RUNS/sr-ae" \
    --init-from resources/models/kiln-shapes-sr.safetensors --device "$DEVICE" --batch "$AE_BATCH" \
    --max-minutes "$(minutes 0.55)" --threads "$THREADS" &&
  python3 -m training.train_sr export-autoencoder --run "$RUNS/sr-ae" --out "$RUNS/sr-ae/kiln-shapes-sr-ae" \
    --n 100 &&
  python3 -m training.train_sr train --out "$RUNS/sr" --ae "$RUNS/sr-ae/kiln-shapes-sr-ae.safetensors" \
    --init-from resources/models/kiln-shapes-sr.safetensors --device "$DEVICE" --batch "$SR_BATCH" \
    --pool "$POOL" --minutes "$(minutes 0.3)" --threads "$THREADS" &&
  python3 -m training.train_sr export --run "$RUNS/sr" --out "$RUNS/kiln-shapes-sr" --threads "$THREADS"
}

for chain in $CHAINS; do
  $chain > "$OUT/$chain.log" 2>&1 &
done
wait
# the device tool brings back at most 8 files: the model parts alone, and one archive of the cards,
# the loss logs and the chains' logs (the logs stay loose until here, so a killed call still returns them)
notes=$(mktemp -d)
cp "$RUNS/ldm/loss.csv" "$notes/base-loss.csv" 2>/dev/null
cp "$RUNS/decoder/loss.csv" "$notes/decoder-loss.csv" 2>/dev/null
for name in kiln-shapes-base kiln-shapes-sr kiln-shapes-ae-tuned; do
  if [ -f "$RUNS/$name.safetensors" ]; then
    split -b 15M -d "$RUNS/$name.safetensors" "$OUT/$name.safetensors.part-"
    cp "$RUNS/$name.json" "$notes/"
  fi
done
cp "$RUNS/sr-ae/kiln-shapes-sr-ae.json" "$notes/" 2>/dev/null
for chain in $CHAINS; do tail -n 3 "$OUT/$chain.log"; mv "$OUT/$chain.log" "$notes/"; done
tar -czf "$OUT/notes.tar.gz" -C "$notes" .
ls -la "$OUT"
