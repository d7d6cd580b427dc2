#!/usr/bin/env bash
# The memory modes' GPU checks on one H100/H200, in parts of a few minutes (benchmarks/README.md, "GPU commands").
# Usage: benchmarks/gpu_verify.sh [part ...]   parts: cuda-tests tiny base fast low offload fp8mm merge
# Not run on a GPU yet: none was available when it was written.
# Results: $OUT_DIR/gpu-verify.json (rename it <device>-<date> before committing it to benchmarks/results/).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT_DIR:-benchmarks/results}
NAME=gpu-verify
# Each mode whose LoRA check passes gets a verification record, which `train.memory: auto` needs.
B="$PY benchmarks/gpu_scale.py --out-dir $OUT --name $NAME --merge --warmup 2 --steps 4 --infer-warmup 1 --infer-steps 3 --train-frames 49 --verified-dir benchmarks/results/verified"
for part in "${@:-cuda-tests tiny base fast low offload fp8mm merge}"; do
  for p in $part; do
    echo "== $p"
    case $p in
      cuda-tests) $PY -m pytest -q -p no:cacheprovider tests/test_memory_cuda.py ;;  # streams/events/pinning, seconds
      tiny) $PY benchmarks/gpu_scale.py --tiny --device cuda --modes bf16 low fast fp8mm --warmup 1 --steps 2 \
              --infer-steps 2 --no-vae --out-dir /tmp/$NAME-tiny ;;  # every mode's CUDA path, tiny sizes
      base) $B --modes bf16 attn --no-vae ;;                       # baseline + picked kernel (profiler column)
      fast) $B --modes fast --no-vae ;;                            # MFU target; compiled inference
      low) $B --modes low20 low --no-infer --no-vae ;;             # <= 20 GB / <= 16 GB, host GB
      offload) $B --modes offload --no-infer --no-vae --warmup 1 --steps 2 ;;  # expected: LoRA check FAILED
      fp8mm) $B --modes fp8mm --no-vae ;;
      merge) $PY benchmarks/gpu_scale.py --merge-files "$OUT/$NAME.json" "$OUT/h200-2026-11-28.json" \
               --out-dir "$OUT" --name $NAME-all ;;
      *) echo "unknown part $p" >&2; exit 2 ;;
    esac
  done
done
