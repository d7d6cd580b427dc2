#!/usr/bin/env python
"""Cached sampling on the toy benchmark: `infer.cache` none, teacache and first_block at a few
thresholds, on the same per-clip LoRAs, scored against the true edits.

Each clip of the benchmark sheet (seed 100) is edited by method `mask` with its stage-1 LoRA from
`--lora-dir` (`<clip_id>.pt`, peft state as `training.lora_state` returns it; the cold run of
`loraedit toy curve --save-loras` writes them). A missing LoRA is trained here with the
benchmark's recipe (config/config.yaml + config/toy-benchmark.yaml `train`: lr 1e-3, 200 steps,
4 recoloured copies) and saved there. Inference takes the benchmark's `infer` section (20 steps,
no CFG, shift 3, nearest) with only the cache changed. Per clip and cache: the toy scores, the
share of transformer calls skipped, the PSNR of frames 2..T against the uncached output, seconds.

    .venv/bin/python benchmarks/toy_cache.py --clips 16 --out docs/toy-cache.csv
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from loraedit import inference as inf
from loraedit import training as tr
from loraedit.atomic import atomic_path, write_text
from loraedit.caption import DEFAULT_SPECIAL_TOKEN, make_prompt
from loraedit.metrics.iqa import masked_psnr
from loraedit.sampling_cache import CacheStats
from loraedit.toy import benchmark, curve
from loraedit.toy import eval as toy_eval

REPO = Path(__file__).resolve().parents[1]
SCORES = ("gt_psnr", "bg_psnr", "edit_color_err", "back_color_err")
# (infer.cache, infer.cache_threshold): the official TeaCache threshold, one below and one above;
# FirstBlockCache at its default and twice it.
CACHES = (
    ("none", None),
    ("teacache", 0.15),
    ("teacache", 0.275),
    ("teacache", 0.5),
    ("first_block", 0.05),
    ("first_block", 0.1),
)
LORA = tr.TrainSettings(rank=16, alpha=16)  # the benchmark's rank and alpha (config/config.yaml)
CPU = torch.device("cpu")


def train_lora(index: int, train_cfg: dict, path: Path) -> None:
    """The clip's stage-1 LoRA, trained as `loraedit toy curve --init none` trains it (cold start)."""
    truth = curve.benchmark_truth(index)
    models = toy_eval.load_toy(str(REPO / toy_eval.TOY_MODEL))
    settings = tr.TrainSettings.from_config({**train_cfg, "steps": 200, "checkpoint_every": 0})
    samples = tr.encode_samples(
        models.encoders,
        truth.video,
        truth.keep,
        "mask",
        make_prompt(DEFAULT_SPECIAL_TOKEN, truth.caption),
        settings,
        CPU,
        mask_mode=train_cfg.get("mask_downsample", "nearest"),
        family=models.family,
    )
    transformer = models.transformers[0]
    tr.add_lora(transformer, settings, models.family)
    with tempfile.TemporaryDirectory() as work:
        tr.train(transformer, samples, settings, CPU, work, progress=False, family=models.family)
    with atomic_path(path) as tmp:
        torch.save(tr.lora_state(transformer), tmp)


def clip_rows(index: int, lora_dir: Path, train_cfg: dict, infer_cfg: dict, caches) -> list[dict]:
    clip_id = f"toy100-{index:02d}"
    path = lora_dir / f"{clip_id}.pt"
    if not path.exists():
        print(f"{clip_id}: no LoRA at {path}; training it", flush=True)
        train_lora(index, train_cfg, path)
    truth = curve.benchmark_truth(index)
    models = toy_eval.load_toy(str(REPO / toy_eval.TOY_MODEL))
    tr.add_lora(models.transformers[0], LORA, models.family)
    tr.load_lora_state(models.transformers[0], torch.load(path, weights_only=True))
    prompt = make_prompt(DEFAULT_SPECIAL_TOKEN, truth.edit_caption)
    rows, uncached = [], None  # caches start with none: the output the others are compared with
    for cache, threshold in caches:
        settings = inf.InferSettings.from_config({**infer_cfg, "cache": cache, "cache_threshold": threshold})
        stats = CacheStats()
        start = time.perf_counter()
        out = inf.edit_video(
            models, truth.video, truth.edited[0], truth.keep, prompt, settings, CPU, progress=False, cache_stats=stats
        )
        seconds = time.perf_counter() - start
        uncached = out if cache == "none" else uncached
        scores = benchmark.toy_scores(out, truth)
        rows.append(
            {
                "clip_id": clip_id,
                "cache": cache,
                "threshold": stats.threshold,
                "skipped_share": stats.skipped_share,
                "calls": sum(stats.calls.values()),
                **{k: scores[k]["value"] for k in SCORES},
                "psnr_vs_none": np.nan if cache == "none" else masked_psnr(out[1:], uncached[1:]),
                "seconds": seconds,
            }
        )
        print({k: round(v, 3) if isinstance(v, float) else v for k, v in rows[-1].items()}, flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=16, help="the sheet's first N clips")
    ap.add_argument("--lora-dir", type=Path, default=REPO / "results" / "prior_curve" / "loras" / "cold")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None, help="per-clip CSV (docs/toy-cache.csv)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    train_cfg, infer_cfg = curve.benchmark_settings(REPO)
    rows = [row for index in range(args.clips) for row in clip_rows(index, args.lora_dir, train_cfg, infer_cfg, CACHES)]
    frame = pd.DataFrame(rows)
    if args.out:
        write_text(args.out, frame.to_csv(index=False, float_format="%.4g"))
    columns = ["skipped_share", *SCORES, "psnr_vs_none", "seconds"]
    table = frame.groupby(["cache", "threshold"], sort=False, dropna=False)[columns].mean()
    print(table.round(3).to_string())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
