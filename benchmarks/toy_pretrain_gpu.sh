#!/usr/bin/env bash
# The toy model's transformer trained on one H100/H200, in one device call, on the committed VAE
# (docs/toy-world.md; the transformer is what limits the demo's edits).
#
#   here, once:  bash benchmarks/toy_pretrain_gpu.sh wheels     # diffusers, importlib_metadata, ftfy, wcwidth as wheels in .whl/
#   there:       device run, carry [".whl"] (and "gpu_work" to resume), timeout_s 600:
#                bash benchmarks/toy_pretrain_gpu.sh
#
# FROM=continue (default) trains the committed transformer on (`--continue-from`, its architecture, so
# the CPU demo's LoRA steps cost what they cost now); FROM=fresh trains a new one (`--vae-from`).
# STEPS=auto (default): a calibration run of CALIB_STEPS steps encodes the cache and times a step, then
# the run takes as many steps as fit before TRAIN_END_S seconds after this script started (rounded
# down to 100, at most MAX_STEPS); the step count it chose is in log.txt and in the export's
# recipe.json command, so the same command with that count reproduces it. STEPS=N fixes the count.
# Back in $OUT: log.txt; when the run finished, toy-model.tar (the exported folder: untar it over
# models/toy-wan2.1-i2v) and, with EVAL_CLIPS > 0, eval.json (`loraedit toy eval`, on the CPU: it can
# as well run here); when --max-minutes paused it, gpu-work.tar.part-* (the checkpoint and logs, no
# cache): `cat gpu-work.tar.part-* | tar -x` here gives gpu_work/, and the same call with STEPS set to
# the logged count and "gpu_work" in carry goes on from there (the cache is encoded again).
# I2V (JSON, `loraedit.toy.i2v.I2VRecipe` fields) overrides the recipe; PY and DEVICE the interpreter and
# device (a smoke run here: PY=.venv/bin/python DEVICE=cpu CLIPS=4 BATCH=2 CALIB_STEPS=3 TRAIN_END_S=60
# bash benchmarks/toy_pretrain_gpu.sh).
# Measured on an H200 (defaults): encoding the 2048 clips took about 190 s (90 ms a clip,
# one clip at a time), a transformer step about 50 ms (batch 16; launch- and sync-bound at this size,
# deterministic kernels), so 5000 steps fitted; the whole call took 473 s.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = wheels ]; then  # what the device's Python lacks (device README: KINDS.md's package list)
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .whl \
    diffusers==0.42.1 importlib_metadata==10.2.0 ftfy==6.3.1 wcwidth==0.9.4  # ftfy: the Wan pipelines' prompt cleaning
  ls .whl
  exit 0
fi

T0=$(date +%s)
OUT=${OUT:-/tmp/toy-gpu-out}
RUN=${RUN:-/tmp/toy-gpu}
rm -rf "$RUN"
mkdir -p "$OUT" "$RUN"
PY=${PY:-python3}
DEVICE=${DEVICE:-cuda}
if [ "$DEVICE" = cuda ]; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD/src
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader > "$OUT/log.txt"
fi
export PYTHONUNBUFFERED=1
FROM=${FROM:-continue}
STEPS=${STEPS:-auto}
TRAIN_END_S=${TRAIN_END_S:-450}
MAX_STEPS=${MAX_STEPS:-40000}
CALIB_STEPS=${CALIB_STEPS:-40}
CLIPS=${CLIPS:-2048}
BATCH=${BATCH:-16}
case "$FROM" in
  continue) START=(--continue-from models/toy-wan2.1-i2v); LR=${LR:-5e-4} ;;
  fresh) START=(--vae-from models/toy-wan2.1-i2v); LR=${LR:-1e-3} ;;
  *) echo "FROM=$FROM: expected continue or fresh" >&2; exit 2 ;;
esac
recipe() { echo "{\"steps\": $1, \"batch\": $BATCH, \"clips\": $CLIPS, \"lr\": $LR, \"warmup\": 200}"; }
pretrain() {  # $1: steps, $2: --out, $3: minutes
  $PY -m loraedit.cli toy pretrain --device "$DEVICE" --threads 8 --workers 12 "${START[@]}" \
    --i2v "${I2V:-$(recipe "$1")}" --out "$2" --work "$RUN/work" --max-minutes "$3" 2>&1 | tee -a "$OUT/log.txt"
  return "${PIPESTATUS[0]}"
}
if [ -d gpu_work ]; then  # a paused run: its step count is fixed (a calibration would overwrite its checkpoint)
  [ "$STEPS" = auto ] && { echo "gpu_work/: resuming a paused run needs STEPS=N (the count in its log.txt), not auto" >&2; exit 2; }
  cp -r gpu_work "$RUN/work"
fi
if [ "$STEPS" = auto ]; then
  pretrain "$CALIB_STEPS" "$RUN/calibration" 30
  STEPS=$($PY - "$RUN/work/transformer_loss.csv" "$CALIB_STEPS" "$(( TRAIN_END_S - $(date +%s) + T0 ))" "$MAX_STEPS" <<'PYEOF'
import sys
import pandas as pd
log, calib, left, most = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
step = pd.read_csv(log)["seconds"].iloc[calib // 4:].median()  # the first steps warm the kernels up
print(min(most, max(100, int(left / (1.15 * step)) // 100 * 100)))  # 15 %: checkpoints, export
PYEOF
)
  echo "calibration: $(( $(date +%s) - T0 )) s in (cache encoded); $STEPS steps fit before ${TRAIN_END_S} s" | tee -a "$OUT/log.txt"
  rm -f "$RUN/work/transformer.pt" "$RUN/work/transformer_loss.csv"  # the cache stays
fi
set +e
pretrain "$STEPS" "$RUN/model" "$(( (TRAIN_END_S + 60 - $(date +%s) + T0) / 60 ))"
rc=$?
set -e
echo "step run ended, rc $rc, $(( $(date +%s) - T0 )) s after the start" | tee -a "$OUT/log.txt"
if [ "$rc" = 0 ]; then
  tar -cf "$OUT/toy-model.tar" -C "$RUN" model
  if [ "${EVAL_CLIPS:-0}" -gt 0 ]; then
    $PY -m loraedit.cli toy eval "$RUN/model" --clips "$EVAL_CLIPS" --out "$OUT/eval.json" 2>&1 | tail -20 | tee -a "$OUT/log.txt"
  fi
elif [ "$rc" = 3 ]; then  # paused: bring the checkpoint back in parts of at most 15 MB (the tool's per-file limit)
  mkdir -p "$RUN/back/gpu_work"
  find "$RUN/work" -maxdepth 1 -type f -exec cp {} "$RUN/back/gpu_work/" \;  # not cache/
  tar -cf - -C "$RUN/back" gpu_work | split -b 15M - "$OUT/gpu-work.tar.part-"
else
  exit "$rc"
fi
