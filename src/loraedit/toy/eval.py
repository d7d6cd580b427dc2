"""Quality bars of the pretrained toy model, measured on clips of a held-out seed.

- VAE: reconstruction PSNR through the pipeline's own path (normalised posterior-mode latents,
  the family's `encode_video` / `decode_latents`, uint8 rounding).
- Plain image-to-video (method `none` with the stock first-frame mask, true first frame, the
  world's caption): PSNR / SSIM of frames 2..T against the true clip, next to the "repeat frame 1"
  baseline, over all pixels and over the moving pixels only (those that differ from frame 1).
Everything is loaded through the real loader (`backend: wan2.1-i2v-480p`, `model.path`).

CLI: ``loraedit toy eval models/toy-wan2.1-i2v [--clips 8] [--out eval.json]``
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import torch

from .. import conditioning as cond
from .. import inference as inf
from ..atomic import write_json
from ..backends import registry
from ..backends.base import Models
from ..commands import command_parser
from ..metrics.iqa import masked_psnr, ssim_per_frame
from . import world as toyworld

TOY_MODEL = "models/toy-wan2.1-i2v"  # the committed checkpoint, relative to the checkout
HELDOUT_SEED = 7  # never used in training (VAE: 1_000_000 + step, stats: 999_999, transformer: 2_000_000)
EVAL_INFER = {"num_steps": 20, "guidance_scale": 1.0, "shift": 3.0, "seed": 0}


def model_config(path: str) -> dict:
    """The `model:` config section that loads the toy checkpoint through the real Wan2.1 loader."""
    return {"backend": "wan2.1-i2v-480p", "path": str(path)}


def load_toy(path: str) -> Models:
    return registry.load_models(model_config(path), torch.device("cpu"), torch.float32)


def heldout_clips(count: int, seed: int = HELDOUT_SEED) -> list[toyworld.ToyClip]:
    return [toyworld.render_clip(toyworld.scene_for(seed, i)) for i in range(count)]


@torch.no_grad()
def vae_psnr(models: Models, clips: list[toyworld.ToyClip]) -> float:
    """Mean over clips of the reconstruction PSNR (dB) of the whole uint8 video."""
    vae, family = models.encoders.vae, models.family
    vals = []
    for c in clips:
        recon = cond.video_to_frames(
            family.decode_latents(vae, family.encode_video(vae, cond.frames_to_video(c.video)))
        )
        vals.append(masked_psnr(recon, c.video))
    return float(np.mean(vals))


def i2v_scores(output: np.ndarray, truth: np.ndarray) -> dict:
    """PSNR / SSIM of frames 2..T (all pixels, and pixels that move: truth[t] != truth[0])."""
    out, ref = output[1:], truth[1:]
    moving = (ref != truth[0:1]).any(-1)  # (T-1, H, W)
    return {
        "psnr": masked_psnr(out, ref),
        "ssim": float(np.nanmean(ssim_per_frame(out, ref))),
        "psnr_moving": masked_psnr(out, ref, moving),
    }


@torch.no_grad()
def i2v_quality(models: Models, clips: list[toyworld.ToyClip], infer: dict | None = None) -> dict:
    """Mean scores of plain I2V and of the repeat-frame-1 baseline."""
    settings = inf.InferSettings.from_config({**EVAL_INFER, **(infer or {})})
    rows = {"i2v": [], "repeat_frame_1": []}
    for c in clips:
        keep = cond.first_frame_keep_mask(*c.video.shape[:3])
        out = inf.edit_video(
            models, c.video, c.video[0], keep, c.caption, settings, torch.device("cpu"), progress=False
        )
        rows["i2v"].append(i2v_scores(out, c.video))
        rows["repeat_frame_1"].append(i2v_scores(np.repeat(c.video[:1], len(c.video), 0), c.video))
    return {name: {k: float(np.mean([r[k] for r in rs])) for k in rs[0]} for name, rs in rows.items()}


def evaluate(path: str, clips: int = 8, infer: dict | None = None) -> dict:
    models = load_toy(path)
    held = heldout_clips(clips)
    settings = inf.InferSettings.from_config({**EVAL_INFER, **(infer or {})})
    return {
        "heldout_seed": HELDOUT_SEED,
        "clips": clips,
        "infer": dataclasses.asdict(settings),
        "vae_psnr": vae_psnr(models, held),
        **i2v_quality(models, held, infer),
    }


def main(argv: list[str] | None = None) -> int:
    ap = command_parser(
        "loraedit toy eval", __doc__.split("\n")[0], "loraedit toy eval models/toy-wan2.1-i2v --clips 8 --out eval.json"
    )
    ap.add_argument("model", nargs="?", default=TOY_MODEL, help=f"an exported toy model (default {TOY_MODEL})")
    ap.add_argument("--clips", type=int, default=8)
    ap.add_argument("--infer", type=json.loads, default={}, help="InferSettings overrides, JSON")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    result = evaluate(args.model, args.clips, args.infer)
    print(json.dumps(result, indent=2))
    if args.out:
        write_json(args.out, result)
    return 0
