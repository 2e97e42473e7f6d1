#!/bin/bash
# Train the built-in models further on a lent GPU, in one prepared call, and bring them back.
#
#   OUT=/results/folder MINUTES=6 bash training/gpu_session.sh
#
# Two chains share the GPU at once (the CPU cores render the scenes):
#   base: train_ldm on from the shipped base model (--init-from), large batches -> export
#   sr:   the f=4 autoencoder on from the shipped SR model's autoencoder -> export it ->
#         the SR UNet on from the shipped SR UNet, on the new latents -> export
# Into $OUT go the model files (split into 15 MB parts, the most the device tool brings back
# per file: join with `cat NAME.safetensors.part-* > NAME.safetensors`), their cards and the
# logs. Evaluate them afterwards on the CPU (python -m training.evaluate ...), not on GPU time.
# DEVICE, SCENES, POOL and the *_BATCH variables exist for a small smoke test on a CPU.
set -u
OUT=${OUT:?set OUT to the folder the results go to}
MINUTES=${MINUTES:-6}
DEVICE=${DEVICE:-cuda}
RUNS=${RUNS:-/tmp/kiln-gpu-runs}
SCENES=${SCENES:-24000}
POOL=${POOL:-8000}
BASE_BATCH=${BASE_BATCH:-256}
AE_BATCH=${AE_BATCH:-48}
SR_BATCH=${SR_BATCH:-128}
THREADS=${THREADS:-4}
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=$THREADS
mkdir -p "$RUNS" "$OUT"
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
minutes() { python3 -c "print(round($MINUTES * $1, 2))"; }

base() {
  python3 -m training.train_ldm train --out "$RUNS/ldm" --init-from resources/models/kiln-shapes-base.safetensors \
    --scenes "$SCENES" --device "$DEVICE" --batch "$BASE_BATCH" --lr 3e-4 --minutes "$MINUTES" --threads "$THREADS" &&
  python3 -m training.train_ldm export --run "$RUNS/ldm" --out "$RUNS/kiln-shapes-base" --threads "$THREADS"
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

base > "$OUT/base.log" 2>&1 &
sr > "$OUT/sr.log" 2>&1 &
wait
for name in kiln-shapes-base kiln-shapes-sr; do
  if [ -f "$RUNS/$name.safetensors" ]; then
    split -b 15M -d "$RUNS/$name.safetensors" "$OUT/$name.safetensors.part-"
    cp "$RUNS/$name.json" "$OUT/"
  fi
done
cp "$RUNS/sr-ae/kiln-shapes-sr-ae.json" "$OUT/" 2>/dev/null
tail -n 3 "$OUT/base.log" "$OUT/sr.log"
ls -la "$OUT"
