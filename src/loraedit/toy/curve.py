"""Quality against per-clip steps on the toy benchmark: cold start against a mask-prior start.

Each clip trains once, to the largest step count, with the benchmark's recipe
(config/config.yaml + config/toy-benchmark.yaml: method `mask`, lr 1e-3, 4 recoloured copies);
the LoRA is kept at every listed step (0 = before any update) and the clip is edited with it
under every sampling seed. So one run per clip and start gives the whole curve. Starts
(`train.init`): none (cold), prior (the prior's weights, trained on), prior-merged (a fresh LoRA
on the merged prior).

CLI: ``loraedit toy curve --init prior --prior models/toy-mask-prior --out results/prior_curve/prior.csv``;
``loraedit toy curve --plot docs/toy-prior-curve.png results/prior_curve/*.csv --table docs/toy-prior-curve.csv``
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml

from .. import inference as inf
from .. import lora_io
from .. import training as tr
from ..atomic import atomic_path, write_text
from ..caption import DEFAULT_SPECIAL_TOKEN, make_prompt
from ..commands import command_parser
from .benchmark import toy_scores
from .data import clip_kind, truth_for
from .eval import TOY_MODEL, load_toy

STEPS = (0, 10, 25, 50, 100, 200)
SCORES = ("gt_psnr", "bg_psnr", "edit_color_err", "back_color_err")


def benchmark_settings(workflow_dir: str | Path = ".") -> tuple[dict, dict]:
    """The toy benchmark's `train` and `infer` sections as the workflow merges them (config.yaml, then
    toy-benchmark.yaml on top)."""
    config = Path(workflow_dir) / "config"
    base = yaml.safe_load((config / "config.yaml").read_text())
    bench = yaml.safe_load((config / "toy-benchmark.yaml").read_text())
    return {**base["train"], **bench["train"]}, {**base["infer"], **bench["infer"]}


def benchmark_truth(index: int, seed: int = 100):
    """Clip `index` of the toy benchmark sheet (`loraedit toy data --seed 100`)."""
    return truth_for({"seed": seed, "index": index, "kind": clip_kind(index), "num_frames": 17, "size": 64})


def clip_curve(
    model_path: str | Path,
    index: int,
    init: str,
    prior: tuple[dict, float] | None,
    steps: list[int],
    seeds: list[int],
    train_cfg: dict,
    infer_cfg: dict,
    work_dir: Path,
    save_lora: Path | None = None,
    method: str = "mask",
) -> list[dict]:
    """One clip's rows {clip_id, method, init, steps, seed, train_seconds, <scores>} at every step count
    of `steps`; `method` mask (Sec. 3.3.1) or naive (Sec. 3.1: trained and sampled with the stock mask)."""
    truth = benchmark_truth(index)
    clip_id = f"toy100-{index:02d}"
    cpu = torch.device("cpu")
    models = load_toy(model_path)  # fresh: prior-merged changes the base weights
    transformer, family = models.transformers[0], models.family
    settings = tr.TrainSettings.from_config({**train_cfg, "steps": max(steps), "checkpoint_every": 0, "init": init})
    samples = tr.encode_samples(
        models.encoders,
        truth.video,
        truth.keep,
        method,
        make_prompt(DEFAULT_SPECIAL_TOKEN, truth.caption),
        settings,
        cpu,
        mask_mode=train_cfg.get("mask_downsample", "nearest"),
        family=family,
    )
    state, alpha = prior if prior is not None else (None, None)
    tr.start_lora(transformer, settings, family, state, alpha)
    kept = {0: tr.lora_state(transformer)} if 0 in steps else {}

    def keep_state(step: int, loss: float) -> None:
        if step in steps:
            kept[step] = tr.lora_state(transformer)

    started = time.perf_counter()
    tr.train(transformer, samples, settings, cpu, work_dir, progress=False, on_step=keep_state, family=family)
    seconds = time.perf_counter() - started
    if save_lora is not None:
        with atomic_path(save_lora / f"{clip_id}.pt") as tmp:
            torch.save(kept[max(steps)], tmp)
    rows = []
    prompt = make_prompt(DEFAULT_SPECIAL_TOKEN, truth.edit_caption)
    for step in steps:
        tr.load_lora_state(transformer, kept[step])
        for seed in seeds:
            infer = inf.InferSettings.from_config({**infer_cfg, "seed": seed})
            keep = inf.method_keep(method, truth.keep)
            output = inf.edit_video(models, truth.video, truth.edited[0], keep, prompt, infer, cpu, False)
            scores = {k: v["value"] for k, v in toy_scores(output, truth).items() if k in SCORES}
            rows.append({"clip_id": clip_id, "method": method, "init": init, "steps": step, "seed": seed, **scores})
    for row in rows:
        row["train_seconds"] = round(seconds * row["steps"] / max(steps), 2)
    return rows


def run(args) -> Path:
    out = Path(args.out)
    done = pd.read_csv(out) if out.exists() else pd.DataFrame(columns=["clip_id"])
    train_cfg, infer_cfg = benchmark_settings(args.workflow)
    if args.lr is not None:
        train_cfg = {**train_cfg, "lr": args.lr}
    prior = lora_io.read_lora(args.prior) if args.init != "none" else None
    for index in range(args.first_clip, args.first_clip + args.clips):
        clip_id = f"toy100-{index:02d}"
        if clip_id in set(done["clip_id"]):
            continue
        work = out.parent / "work" / f"{out.stem}-{clip_id}"
        rows = clip_curve(
            args.model,
            index,
            args.init,
            prior,
            sorted(args.steps),
            args.seeds,
            train_cfg,
            infer_cfg,
            work,
            Path(args.save_loras) if args.save_loras else None,
            args.method,
        )
        done = pd.concat([done, pd.DataFrame(rows)], ignore_index=True) if len(done) else pd.DataFrame(rows)
        write_text(out, done.to_csv(index=False))
        print(f"{clip_id}: {len(rows)} rows -> {out}", flush=True)
    return out


def curve_table(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Means over clips and seeds per (start, steps): the curve."""
    rows = label_starts(pd.concat(frames, ignore_index=True))
    agg = {s: "mean" for s in SCORES} | {"clip_id": "nunique", "seed": "nunique", "train_seconds": "mean"}
    table = rows.groupby(["start", "steps"], sort=True).agg(agg).reset_index()
    return table.rename(columns={"clip_id": "clips", "seed": "seeds"})


def wins_over(rows: pd.DataFrame, reference: tuple[str, int], score: str = "edit_color_err") -> pd.DataFrame:
    """Per (start, steps): on how many clips the seed-mean `score` beats the `reference` (start, steps)
    run's (lower wins for errors, higher for PSNRs)."""
    per_clip = rows.groupby(["start", "steps", "clip_id"])[score].mean()
    ref = per_clip.loc[reference]
    lower = score.endswith("err")
    out = []
    for (start, steps), clips in per_clip.groupby(level=[0, 1]):
        clips = clips.droplevel([0, 1]).reindex(ref.index)
        beats = (clips < ref) if lower else (clips > ref)
        out.append({"start": start, "steps": steps, f"{score} wins vs {reference[0]} {reference[1]}": int(beats.sum())})
    return pd.DataFrame(out)


def label_starts(rows: pd.DataFrame) -> pd.DataFrame:
    """rows with a `start` column: "<method>, init <init>" (older files without `method` are mask runs)."""
    rows = rows.copy()
    method = rows["method"].fillna("mask") if "method" in rows else pd.Series("mask", index=rows.index)
    rows["start"] = method + ", init " + rows["init"]
    return rows


def plot_curve(table: pd.DataFrame, png: str | Path, references: dict | None = None) -> None:
    """One panel per score against per-clip steps, a line per start; `references` {name: {score: value}}
    as horizontal lines (the benchmark's cold 200 steps, naive)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 3.2))
    axes = fig.subplots(1, len(SCORES))
    for ax, score in zip(axes, SCORES):
        for start, curve in table.groupby("start"):
            ax.plot(curve["steps"], curve[score], marker="o", label=start)
        for (name, values), style in zip((references or {}).items(), ("--", ":", "-.")):
            if score in values and np.isfinite(values[score]):
                ax.axhline(values[score], color="grey", ls=style, lw=0.8, label=name)
        ax.set_xscale("symlog", linthresh=10)
        ax.set_xlabel("per-clip steps")
        ax.set_title(score + (" (lower is better)" if score.endswith("err") else " (dB)"))
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(png) as tmp:
        fig.savefig(tmp, dpi=100, format="png")


def main(argv: list[str] | None = None) -> int:
    ap = command_parser(
        "loraedit toy curve",
        __doc__.split("\n")[0],
        "loraedit toy curve --init none --out results/prior_curve/cold.csv --save-loras results/prior_curve/loras",
        "loraedit toy curve --init prior --prior models/toy-mask-prior --out results/prior_curve/prior.csv",
        "loraedit toy curve --plot docs/toy-prior-curve.png --table docs/toy-prior-curve.csv results/prior_curve/*.csv",
    )
    ap.add_argument("csvs", nargs="*", help="with --plot: the per-start CSVs to draw")
    ap.add_argument("--init", choices=tr.INITS, default="none")
    ap.add_argument("--method", choices=["mask", "naive"], default="mask")
    ap.add_argument("--lr", type=float, default=None, help="per-clip lr (default: the benchmark's)")
    ap.add_argument("--first-clip", type=int, default=0, help="start at this clip index")
    ap.add_argument("--prior", default=None, help="the mask prior's LoRA folder (init prior | prior-merged)")
    ap.add_argument("--model", default=TOY_MODEL)
    ap.add_argument("--workflow", default=".", help="the checkout whose config/ gives the benchmark's settings")
    ap.add_argument("--clips", type=int, default=16)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--steps", type=int, nargs="+", default=list(STEPS))
    ap.add_argument("--out", default="results/prior_curve/curve.csv", help="rows per clip x steps x seed (resumed)")
    ap.add_argument("--save-loras", default=None, help="keep each clip's LoRA at the last step here (<clip_id>.pt)")
    ap.add_argument("--plot", default=None, help="draw the CSVs' curve into this PNG")
    ap.add_argument("--table", default=None, help="with --plot: write the curve's means here")
    args = ap.parse_args(argv)
    if args.plot:
        frames = [pd.read_csv(p) for p in args.csvs]
        table = curve_table(frames)
        plot_curve(table, args.plot)
        if args.table:
            write_text(args.table, table.to_csv(index=False, float_format="%.3f"))
        print(table.to_string(index=False))
        rows = label_starts(pd.concat(frames, ignore_index=True))
        if "naive, init none" in set(rows["start"]):
            print(wins_over(rows, ("naive, init none", int(rows[rows["start"] == "naive, init none"]["steps"].max()))))
        return 0
    if args.init != "none" and not args.prior:
        ap.error(f"--init {args.init} needs --prior")
    print(run(args))
    return 0
