#!/usr/bin/env python
"""LoRA precision on the toy benchmark: `train.lora_dtype` fp32 (master weights) against bf16 (the
official code's LoRA weights and AdamW state), method `mask`, the benchmark's own settings.

Each clip of the benchmark sheet (seed 100) is edited in memory by the calls the workflow makes
(`toy.benchmark.edit_in_memory`: encode, LoRA, train, infer) with config/toy-benchmark.yaml's
`train` and `infer` sections, once per precision, on fresh copies of the committed toy model, and
scored against its true edit.

    .venv/bin/python benchmarks/toy_lora_dtype.py --clips 16 --out docs/toy-lora-dtype.csv
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
import yaml

from loraedit.atomic import write_text
from loraedit.toy import benchmark, data
from loraedit.toy import eval as toy_eval

REPO = Path(__file__).resolve().parents[1]
SCORES = ("gt_psnr", "bg_psnr", "edit_color_err", "back_color_err")


def run(clips: int, seed: int, dtypes: list[str]) -> pd.DataFrame:
    cfg = yaml.safe_load((REPO / "config" / "toy-benchmark.yaml").read_text())
    train = {k: v for k, v in cfg["train"].items() if k not in ("lr", "steps", "checkpoint_every")}
    rows = []
    for index in range(clips):
        truth = data.truth_for({"seed": seed, "index": index, "num_frames": 17, "size": 64})
        for dtype in dtypes:
            models = toy_eval.load_toy(str(REPO / toy_eval.TOY_MODEL))  # fresh: the run attaches its LoRA
            start = time.perf_counter()
            with tempfile.TemporaryDirectory() as work:
                out = benchmark.edit_in_memory(
                    models,
                    truth,
                    work,
                    "mask",
                    steps=cfg["train"]["steps"],
                    lr=cfg["train"]["lr"],
                    infer=cfg["infer"],
                    train={**train, "lora_dtype": dtype},
                )
            scores = benchmark.toy_scores(out, truth)
            rows.append(
                {
                    "clip_id": f"toy{seed}-{index:02d}",
                    "lora_dtype": dtype,
                    **{k: scores[k]["value"] for k in SCORES},
                    "seconds": time.perf_counter() - start,
                }
            )
            print(rows[-1], flush=True)
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=16)
    ap.add_argument("--seed", type=int, default=100)
    ap.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None, help="per-clip CSV")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    frame = run(args.clips, args.seed, args.dtypes)
    if args.out:
        write_text(args.out, frame.to_csv(index=False, float_format="%.4g"))
    print(frame.groupby("lora_dtype")[[*SCORES, "seconds"]].mean().round(2).to_string())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
