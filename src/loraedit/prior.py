"""The mask prior (beyond the paper): one LoRA trained once with the mask-aware objective of Sec.
3.3.1 over many clips and many masks, so a clip's LoRA need not first re-learn what the spatial
mask means.

A stock I2V model has only seen the "keep frame 1" mask. The prior learns the rest: keep every
pixel whose mask is 1, and generate the 0-region of later frames from frame 1's appearance. Its
samples are Sec. 3.3.1's (condition = the clip with the region greyed, mask = keep / generate,
target = the clip, prompt = p* + the caption of frame 1), with no edited frame, so it can be
trained on the very clips to be edited. The regions:
- "dataset": the clip's own edit mask (SAM / file / flow, or the toy world's true object);
- "blob" / "box": a random ellipse / rectangle that moves across the clip;
each with `recolor_copies` copies whose region (frame 1 included) is moved to a random colour, so
the prior must carry the region's appearance from frame 1 rather than from the greyed input.

Per-clip training then starts from it (`training.start_lora`, `train.init`), or the `prior`
method edits with it alone (zero per-clip steps).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import numpy as np
import torch

from . import training as tr
from .backends.base import Family

REGIONS = ("dataset", "blob", "box")


@dataclasses.dataclass
class PriorClip:
    """One clip the prior learns from: frames uint8 (T, H, W, 3), its edit mask keep (T, H, W) 1 = keep
    (None: random regions only) and its training prompt (p* + caption of frame 1)."""

    clip_id: str
    frames: np.ndarray
    keep: np.ndarray | None
    prompt: str


def moving_region(rng: np.random.Generator, num_frames: int, height: int, width: int, shape: str) -> np.ndarray:
    """A random ellipse ("blob") or rectangle ("box") that moves and grows or shrinks linearly over the
    clip: bool (T, H, W), True inside. Its half-sizes are 10-30 % of the frame, its centre may leave
    the frame by a little (regions that enter and exit)."""
    half = rng.uniform(0.1, 0.3, 2) * (height, width)  # (half height, half width) at frame 1
    growth = rng.uniform(0.7, 1.4)  # half-size ratio last / first frame
    start = rng.uniform(0.15, 0.85, 2) * (height, width)
    end = np.clip(start + rng.normal(0, 0.25, 2) * (height, width), -0.1 * height, 1.1 * height)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    region = np.zeros((num_frames, height, width), bool)
    for t in range(num_frames):
        a = t / max(num_frames - 1, 1)
        cy, cx = (1 - a) * start + a * end
        hy, hx = half * (1 + (growth - 1) * a)
        dy, dx = (yy - cy) / hy, (xx - cx) / hx
        region[t] = (dy**2 + dx**2 <= 1) if shape == "blob" else (np.abs(dy) <= 1) & (np.abs(dx) <= 1)
    return region


def clip_regions(clip: PriorClip, regions: Iterable[str], rng: np.random.Generator) -> list[tuple[str, np.ndarray]]:
    """The edit regions the prior trains this clip with: [(name, bool (T, H, W))], empty ones dropped."""
    num_frames, height, width = clip.frames.shape[:3]
    out = []
    for name in regions:
        if name not in REGIONS:
            raise ValueError(f"prior.regions: unknown {name!r} (choose {'|'.join(REGIONS)})")
        if name == "dataset":
            if clip.keep is None:
                continue
            region = clip.keep < 0.5
        else:
            region = moving_region(rng, num_frames, height, width, name)
        if region[1:].any():
            out.append((name, region))
    return out


@torch.no_grad()
def prior_samples(
    family: Family,
    encoders,
    clips: list[PriorClip],
    settings: tr.TrainSettings,
    device: torch.device,
    regions: Iterable[str] = REGIONS,
    mask_mode: str = "nearest",
) -> list[dict]:
    """The prior's training samples, encoded: per clip and region, the clip and `recolor_copies`
    copies with the region recoloured to random colours (drawn per clip, region and copy from
    `settings.seed`). Names are "<clip_id>/<region>[~recolor<i>]", unique across clips, weights equal."""
    samples = []
    for index, clip in enumerate(clips):
        rng = np.random.default_rng([settings.seed, index])
        for name, region in clip_regions(clip, regions, rng):
            keep = tr.stage1_keep("mask", (~region).astype(np.uint8))  # frame 1 always kept
            versions = [clip.frames] + [
                tr.shift_region_color(clip.frames, region, np.random.default_rng([settings.seed, index, i, 7]))
                for i in range(settings.recolor_copies)
            ]
            for i, frames in enumerate(versions):
                part = f"{clip.clip_id}/{name}" + (f"~recolor{i - 1}" if i else "")
                samples.append(
                    tr.encode_sample(
                        family,
                        encoders,
                        frames,
                        frames,
                        keep,
                        clip.prompt,
                        frames[0],
                        part,
                        "clip",
                        1.0,
                        mask_mode,
                        device,
                        settings.image_preprocess,
                    )
                )
    if not samples:
        raise ValueError("prior: no training samples (no clip has a non-empty region after frame 1)")
    return samples
