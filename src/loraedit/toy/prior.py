"""The toy mask prior: `loraedit.prior` trained on toy-world clips for the pretrained toy model.

Its clips come from world seed 5000, apart from the benchmark's (100), the demo's (0), the
held-out evaluation's (7) and the pretraining streams; no edited frame is used. With
``--benchmark-clips`` it trains instead on the toy benchmark's own 16 source clips (transductive:
the clips to be edited, their masks, never their edits). The folder it writes holds the LoRA
(stock diffusers format), ``recipe.json`` (these settings, the clips, the command, the commit),
``loss.csv`` / ``loss.png``. Resumable: a killed run continues from ``<out>/../<name>-work/``.

CLI: ``loraedit toy prior models/toy-mask-prior``
"""

from __future__ import annotations

import datetime
import os
import platform
import sys
from pathlib import Path

from ..atomic import write_json
from ..caption import DEFAULT_SPECIAL_TOKEN, make_prompt
from ..commands import command_parser
from ..manifest import git_info
from ..prior import REGIONS, PriorClip
from ..stages import run_train_prior
from .data import clip_kind, truth_for
from .eval import TOY_MODEL, model_config

PRIOR_SEED = 5000
TOY_PRIOR = "models/toy-mask-prior"  # the committed prior, relative to the checkout
# The committed prior's recipe (TrainSettings keys + regions); `loraedit toy prior` defaults to it.
RECIPE = {
    "rank": 16,
    "alpha": 16.0,
    "lr": 1.0e-3,
    "lr_schedule": "cosine",
    "lr_min_ratio": 0.1,
    "steps": 6000,
    "checkpoint_every": 250,
    "edit_region_weight": 3.0,  # the region is ~5 % of the pixels: the kept part would dominate the MSE
    "recolor_copies": 2,  # each clip x region also with the region moved to 2 random colours
    "seed": 0,
    "mask_downsample": "nearest",
    "regions": list(REGIONS),
}


def toy_prior_clips(seed: int, count: int, num_frames: int = 17, size: int = 64) -> list[PriorClip]:
    """`count` toy clips of world `seed` (the benchmark's mix of kinds) with their true object masks."""
    clips = []
    for i in range(count):
        clip = truth_for({"seed": seed, "index": i, "kind": clip_kind(i), "num_frames": num_frames, "size": size})
        prompt = make_prompt(DEFAULT_SPECIAL_TOKEN, clip.caption)
        clips.append(PriorClip(f"toy{seed}-{i:02d}", clip.video, clip.keep, prompt))
    return clips


def main(argv: list[str] | None = None) -> int:
    ap = command_parser(
        "loraedit toy prior",
        __doc__.split("\n")[0],
        "loraedit toy prior models/toy-mask-prior",
        "loraedit toy prior results/prior_curve/prior-transductive --benchmark-clips --steps 2000",
    )
    ap.add_argument("out", nargs="?", default=TOY_PRIOR)
    ap.add_argument("--model", default=TOY_MODEL)
    ap.add_argument("--clips", type=int, default=64)
    ap.add_argument("--seed", type=int, default=PRIOR_SEED, help="the toy world seed of the prior's clips")
    ap.add_argument("--benchmark-clips", action="store_true", help="the benchmark's 16 clips (seed 100), no edits")
    ap.add_argument("--steps", type=int, default=RECIPE["steps"])
    ap.add_argument("--regions", nargs="+", choices=REGIONS, default=RECIPE["regions"])
    args = ap.parse_args(argv)
    seed, count = (100, 16) if args.benchmark_clips else (args.seed, args.clips)
    recipe = {**RECIPE, "steps": args.steps, "regions": args.regions}
    out = Path(args.out)
    # The code that trains it: {commit, dirty} of the checkout (None outside git), read before training.
    started = {**(git_info() or {"commit": None}), "date": datetime.date.today().isoformat()}
    clips = toy_prior_clips(seed, count)
    history = run_train_prior(
        clips,
        model_config(args.model),
        recipe,
        out,
        out / "loss.csv",
        out / "loss.png",
        out.parent / f"{out.name}-work",
    )
    write_json(
        out / "recipe.json",
        {
            "recipe": recipe,
            "clips": {"world_seed": seed, "count": count, "num_frames": 17, "size": 64},
            "model": args.model,
            "command": "loraedit toy prior " + " ".join(argv if argv is not None else sys.argv[1:]),
            **started,
            "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, no GPU",
            "final_loss_mean_last_100": sum(h["loss"] for h in history[-100:]) / max(1, len(history[-100:])),
        },
    )
    print(out)
    return 0
