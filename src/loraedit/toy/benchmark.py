"""Score the workflow's outputs on a toy benchmark sheet against the exact truth of each edit.

Per clip x method (frames 2..T; the truth re-rendered from the clip's toy.json):
- gt_psnr / gt_ssim: the output against the true edited video;
- bg_psnr: on the true kept region (pixels the edited object never touches);
- edit_psnr: inside the true edit region;
- edit_color_err: per frame, the RGB distance between the mean colour of the output and of the
  truth inside the edit region (a collapsed, grey or unchanged object shows here), mean over frames;
- back_color_err: the same on the side of the card only the extra edited frames show (clips whose
  edited object is two-sided; n/a otherwise; Sec. 3.3.2 / Fig. 7).
Records use the score format of `loraedit.metrics`, so `tables.aggregate` writes the tables
(metrics.csv with mean and std rows per method, metrics.md, ...).

CLI: ``loraedit toy benchmark SHEET --results results --out results/toy_benchmark/tables``;
``loraedit toy benchmark --reduced tests/data/toy_benchmark_reduced.csv`` remakes the table CI
checks (after the committed model changed).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from .. import tables
from ..atomic import write_json
from ..commands import command_parser
from ..metrics.base import record
from ..metrics.iqa import masked_psnr, ssim_per_frame
from ..sheet.samples import load_samples
from ..video_io import read_frames
from .data import make_toy_dataset, truth_for
from .world import ToyClip

METHODS = ("none", "naive", "mask", "mask+ref", "prior")
IMPL = "loraedit.toy.benchmark"
# The reduced size that CI reruns (tests/test_toy_benchmark.py), against tests/data/toy_benchmark_reduced.csv.
REDUCED = {
    "methods": ["none", "mask", "mask+ref"],
    "train": {"steps": 30, "checkpoint_every": 30},
    "train_ref": {"ref_epochs": 1},
    "infer": {"num_steps": 10},
    "score": {"pyiqa_metrics": ["psnr"], "qalign": False},
}


def mean_color_error(output: np.ndarray, truth: np.ndarray, region: np.ndarray) -> float:
    """Mean over frames with a non-empty region of |mean RGB(output) - mean RGB(truth)| (0..441); nan if none."""
    errs = []
    for out_t, ref_t, reg in zip(output, truth, region.astype(bool)):
        if reg.sum() >= 4:
            errs.append(float(np.linalg.norm(out_t[reg].mean(0) - ref_t[reg].astype(np.float64).mean(0))))
    return float(np.mean(errs)) if errs else float("nan")


def toy_scores(output: np.ndarray, truth: ToyClip) -> dict[str, dict]:
    """Score records for uint8 (T, H, W, 3) output against the clip's truth (frames 2..T)."""
    out, gt = output[1:], truth.edited[1:]
    keep, back = truth.keep[1:], truth.back[1:]
    edit = 1 - keep

    def rec(name, value, higher, family, note=""):
        return name, record(value, higher, IMPL, "", "", note if np.isnan(value) else "", family)

    items = [
        rec("gt_psnr", masked_psnr(out, gt), True, "ground_truth"),
        rec("gt_ssim", float(np.nanmean(ssim_per_frame(out, gt))), True, "ground_truth"),
        rec("bg_psnr", masked_psnr(out, gt, keep), True, "background", "n/a (nothing kept)"),
        rec("edit_psnr", masked_psnr(out, gt, edit), True, "fidelity", "n/a (empty edit region)"),
        rec("edit_color_err", mean_color_error(out, gt, edit), False, "fidelity", "n/a (empty edit region)"),
        rec("back_color_err", mean_color_error(out, gt, back), False, "fidelity", "n/a (no hidden side)"),
    ]
    return dict(items)


def score_results(
    sheet: str | Path, results: str | Path, out_dir: str | Path, methods=METHODS, num_clips: int | None = None
) -> Path:
    """Write one score file per clip x method under out_dir/scores/ and the tables into out_dir
    (the sheet's first `num_clips` clips; all by default)."""
    sheet, results, out_dir = Path(sheet), Path(results), Path(out_dir)
    files = []
    for clip_id, row in load_samples(sheet).iloc[:num_clips].iterrows():
        truth = truth_for(json.loads((sheet.parent / clip_id / "toy.json").read_text()))
        for method in methods:
            frames_dir = results / clip_id / method / "output" / "frames"
            if method == "mask+ref" and not row.get("extra_edits"):
                continue
            output = read_frames(frames_dir, clip_id)
            path = out_dir / "scores" / f"{clip_id}__{method.replace('+', '_')}.json"
            write_json(path, {"clip_id": clip_id, "method": method, "metrics": toy_scores(output, truth)})
            files.append(path)
    tables.aggregate(files, out_dir, method_order=list(methods))
    return out_dir / "metrics.csv"


def edit_in_memory(
    models,
    truth: ToyClip,
    work_dir: str | Path,
    method: str = "mask",
    steps: int = 30,
    lr: float = 1e-3,
    keep: np.ndarray | None = None,
    infer: dict | None = None,
    train: dict | None = None,
) -> np.ndarray:
    """One toy clip through stage 1 and inference in memory, by the calls the workflow's stages make
    (`training.encode_samples`, `add_lora`, `train`, `inference.edit_video`), for checks that break
    one part on purpose: steps=0 is a LoRA that never trains, `keep` another keep mask (T, H, W) than
    the truth's (an inverted one); `train` / `infer` override other TrainSettings / InferSettings
    fields. `models` gets the LoRA attached (load fresh ones per call).
    Returns the edited clip, uint8 (T, H, W, 3)."""
    import torch

    from .. import inference as inf
    from .. import training as tr
    from ..caption import DEFAULT_SPECIAL_TOKEN, make_prompt
    from .eval import EVAL_INFER

    cpu = torch.device("cpu")
    settings = tr.TrainSettings.from_config({**(train or {}), "lr": lr, "steps": steps, "checkpoint_every": 0})
    keep = truth.keep if keep is None else keep
    train_prompt = make_prompt(DEFAULT_SPECIAL_TOKEN, truth.caption)  # as the caption stage builds it
    samples = tr.encode_samples(
        models.encoders,
        truth.video,
        keep,
        method,
        train_prompt,
        settings,
        cpu,
        mask_mode=(train or {}).get("mask_downsample", "nearest"),
        family=models.family,
    )  # as stages.run_train
    transformer = models.transformers[0]
    tr.add_lora(transformer, settings, models.family)
    tr.train(transformer, samples, settings, cpu, work_dir, progress=False, family=models.family)
    return inf.edit_video(
        models,
        truth.video,
        truth.edited[0],
        inf.method_keep(method, keep),
        make_prompt(DEFAULT_SPECIAL_TOKEN, truth.edit_caption),
        inf.InferSettings.from_config({**EVAL_INFER, **(infer or {})}),
        cpu,
        progress=False,
    )


def run_reduced(
    workdir: str | Path, num_clips: int = 1, overrides: dict | None = None, workflow_dir: str | Path = "."
) -> pd.DataFrame:
    """The benchmark at reduced size through the normal workflow (Snakemake API) in `workdir`.

    `workflow_dir`: the checkout (its Snakefile and config/toy-benchmark.yaml). The config + REDUCED
    + `overrides` (one level deep); returns metrics.csv as a frame.
    """
    workflow_dir = Path(workflow_dir).resolve()
    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import (
        ConfigSettings,
        DAGSettings,
        OutputSettings,
        ResourceSettings,
    )

    workdir = Path(workdir)
    sheet = make_toy_dataset(workdir / "data", num_clips=num_clips)
    # The model is config/toy-benchmark.yaml's (rules/common.smk finds its relative path from any workdir).
    config = {**REDUCED, "samples": str(sheet)}
    for key, value in (overrides or {}).items():
        config[key] = {**config.get(key, {}), **value} if isinstance(value, dict) else value
    with SnakemakeApi(OutputSettings(quiet=None)) as api:
        workflow = api.workflow(
            resource_settings=ResourceSettings(cores=2),
            config_settings=ConfigSettings(configfiles=[workflow_dir / "config" / "toy-benchmark.yaml"], config=config),
            snakefile=workflow_dir / "Snakefile",
            workdir=workdir,
        )
        workflow.dag(dag_settings=DAGSettings()).execute_workflow(executor="local")
    return pd.read_csv(score_results(sheet, workdir / "results", workdir / "tables", config["methods"]))


def main(argv: list[str] | None = None) -> int:
    ap = command_parser(
        "loraedit toy benchmark",
        __doc__.split("\n")[0],
        "loraedit toy benchmark results/toy_benchmark/data/samples.tsv --out results/toy_benchmark/tables",
        "loraedit toy benchmark --reduced tests/data/toy_benchmark_reduced.csv",
    )
    ap.add_argument("sheet", nargs="?", help="the benchmark sheet to score (not with --reduced)")
    ap.add_argument("--results", default="results")
    ap.add_argument("--out", default="results/toy_benchmark/tables")
    ap.add_argument("--methods", nargs="+", default=list(METHODS))
    ap.add_argument("--num-clips", type=int, default=None, help="score only the sheet's first N clips")
    ap.add_argument(
        "--reduced",
        metavar="CSV",
        default=None,
        help="run the reduced benchmark CI checks (in a temp dir) and write its table here "
        "(tests/data/toy_benchmark_reduced.csv)",
    )
    ap.add_argument("--workflow", default=".", help="the checkout whose Snakefile --reduced runs (default: .)")
    args = ap.parse_args(argv)
    if args.reduced:
        import tempfile

        from ..atomic import write_text

        with tempfile.TemporaryDirectory() as tmp:
            write_text(args.reduced, run_reduced(tmp, workflow_dir=args.workflow).to_csv(index=False))
        print(args.reduced)
        return 0
    if not args.sheet:
        ap.error("give the sheet to score, or --reduced CSV")
    print(score_results(args.sheet, args.results, args.out, args.methods, args.num_clips))
    return 0
