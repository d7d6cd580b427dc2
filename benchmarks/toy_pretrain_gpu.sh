#!/usr/bin/env bash
# The toy model's transformer pretrained anew on one H100/H200, in one device call, on the committed
# VAE (README: "Pretrained toy model"; the transformer is what limits the demo's edits).
#
#   here, once:  bash benchmarks/toy_pretrain_gpu.sh wheels     # diffusers + importlib_metadata as wheels in .whl/
#   there:       device run, carry [".whl"] (and "gpu_work" to resume), timeout_s 600:
#                bash benchmarks/toy_pretrain_gpu.sh
#
# Back in $OUT: log.txt; when the run finished, toy-model.tar (the exported folder: untar it over
# models/toy-wan2.1-i2v) and eval.json (`loraedit.toy_eval`: the VAE and plain-I2V bars on 8 held-out
# clips); when --max-minutes paused it, gpu-work.tar.part-* (the checkpoint and logs, no cache):
# `cat gpu-work.tar.part-* | tar -x` here gives gpu_work/, and the same call with "gpu_work" in carry
# goes on from there (the cache is encoded again, the same on the same GPU kind).
# I2V (JSON, `toy_i2v.I2VRecipe` fields) and MINUTES override the recipe and the time cap; PY and
# DEVICE the interpreter and device (a smoke run here: PY=.venv/bin/python DEVICE=cpu I2V='{"steps": 2,
# "clips": 2, "batch": 2}' bash benchmarks/toy_pretrain_gpu.sh).
# Not run on a GPU yet: no session that wrote it had one.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = wheels ]; then  # what the device's Python lacks (device README: KINDS.md's package list)
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .whl \
    diffusers==0.42.1 importlib_metadata==10.2.0
  ls .whl
  exit 0
fi

OUT=${OUT:-/tmp/toy-gpu-out}
RUN=/tmp/toy-gpu
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
# The committed architecture (so the CPU demo's LoRA steps cost what they cost now), with about 14x
# the samples of the CPU run (2800 steps x 8 on 768 clips).
I2V=${I2V:-'{"steps": 20000, "batch": 16, "clips": 2048, "warmup": 200}'}
MINUTES=${MINUTES:-6}
[ -d gpu_work ] && cp -r gpu_work "$RUN/work"
set +e
$PY -m loraedit.toy_pretrain --device "$DEVICE" --threads 8 --workers 8 --vae-from models/toy-wan2.1-i2v \
  --i2v "$I2V" --out "$RUN/model" --work "$RUN/work" --max-minutes "$MINUTES" 2>&1 | tee -a "$OUT/log.txt"
rc=${PIPESTATUS[0]}
set -e
if [ "$rc" = 0 ]; then
  tar -cf "$OUT/toy-model.tar" -C "$RUN" model
  $PY -m loraedit.toy_eval "$RUN/model" --clips "${EVAL_CLIPS:-8}" --out "$OUT/eval.json" 2>&1 | tail -20 | tee -a "$OUT/log.txt"
elif [ "$rc" = 3 ]; then  # paused: bring the checkpoint back in parts of at most 15 MB (the tool's per-file limit)
  mkdir -p "$RUN/back/gpu_work"
  find "$RUN/work" -maxdepth 1 -type f -exec cp {} "$RUN/back/gpu_work/" \;  # not cache/
  tar -cf - -C "$RUN/back" gpu_work | split -b 15M - "$OUT/gpu-work.tar.part-"
else
  exit "$rc"
fi
