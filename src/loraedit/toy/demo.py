"""A small procedural demo dataset (nothing binary lives in git).

Each clip: a smooth-noise textured background panning slowly, one shape
(circle, square, triangle) moving over it. The "edit" recolours the shape, so
the ground truth is known exactly: ``gt.mp4`` is the same clip with the shape
recoloured in every frame, and the true mask is the shape's footprint.

Per clip folder ``OUT/<clip_id>/``: ``video.mp4`` (one clip: ``frames/`` PNG
folder instead), ``edited_first_frame.png``, ``mask/`` (white = keep, black =
shape), ``gt.mp4``, and for one clip an extra edited frame. ``OUT/samples.tsv``
lists them (paths relative to the sheet); only some clips get a ``mask``
column, the others get masks from optical flow.

CLI: ``loraedit toy demo-data OUT_DIR [--num-clips 3] [--num-frames 17] [--seed 0]``
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..commands import command_parser
from .data import write_clip, write_dataset

SUPERSAMPLE = 4  # shapes are drawn 4x larger, then averaged: anti-aliased edges


@dataclass(frozen=True)
class ClipSpec:
    shape: str
    size: tuple[int, int]  # (W, H)
    color: tuple[int, int, int]
    color_name: str
    edit_color: tuple[int, int, int]
    edit_color_name: str
    as_folder: bool = False  # write the video as a PNG folder
    give_mask: bool = False  # put the true mask in the sheet
    extra_edit: bool = False  # add an extra edited frame (stage-2 guidance)


SPECS = [
    ClipSpec("circle", (96, 64), (40, 170, 70), "green", (220, 40, 40), "red"),
    ClipSpec("square", (64, 96), (50, 80, 210), "blue", (240, 200, 30), "yellow", as_folder=True, give_mask=True),
    ClipSpec("triangle", (64, 64), (235, 135, 30), "orange", (150, 50, 210), "purple", extra_edit=True),
]


def _background(rng: np.random.Generator, w: int, h: int, margin: int) -> np.ndarray:
    """float32 (h + 2m, w + 2m, 3): a colour gradient plus smooth noise (texture for optical flow)."""
    big_w, big_h = w + 2 * margin, h + 2 * margin
    yy, xx = np.mgrid[0:big_h, 0:big_w].astype(np.float32)
    c0, c1 = rng.uniform(60, 190, 3), rng.uniform(60, 190, 3)
    ramp = (xx / big_w * 0.6 + yy / big_h * 0.4)[..., None]
    grad = c0 * (1 - ramp) + c1 * ramp
    coarse = rng.normal(0, 35, (big_h // 6 + 2, big_w // 6 + 2, 3)).astype(np.float32)
    fine = rng.normal(0, 12, (big_h // 2 + 2, big_w // 2 + 2, 3)).astype(np.float32)
    noise = cv2.resize(coarse, (big_w, big_h), interpolation=cv2.INTER_CUBIC)
    noise += cv2.resize(fine, (big_w, big_h), interpolation=cv2.INTER_CUBIC)
    return grad.astype(np.float32) + noise


def _shape_alpha(shape: str, w: int, h: int, cx: float, cy: float, r: float) -> np.ndarray:
    """float32 (h, w) coverage of the shape centred at (cx, cy) with half-size r."""
    s = SUPERSAMPLE
    canvas = np.zeros((h * s, w * s), np.uint8)
    c, rr = (int(cx * s), int(cy * s)), int(r * s)
    if shape == "circle":
        cv2.circle(canvas, c, rr, 255, -1)
    elif shape == "square":
        cv2.rectangle(canvas, (c[0] - rr, c[1] - rr), (c[0] + rr, c[1] + rr), 255, -1)
    else:  # triangle
        pts = np.array([[c[0], c[1] - rr], [c[0] - rr, c[1] + rr], [c[0] + rr, c[1] + rr]], np.int32)
        cv2.fillPoly(canvas, [pts], 255)
    return cv2.resize(canvas, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0


def render_clip(spec: ClipSpec, num_frames: int, rng: np.random.Generator):
    """``(video, gt, keep)``: uint8 (T, H, W, 3) source and recoloured clips, uint8 (T, H, W) true keep mask."""
    w, h = spec.size
    margin = 8
    bg = _background(rng, w, h, margin)
    r = 0.2 * min(w, h)
    # Path: across the frame with a gentle vertical wave; starts and ends inside.
    x0, x1 = rng.uniform(0.25, 0.35) * w, rng.uniform(0.65, 0.75) * w
    y_mid, amp = rng.uniform(0.4, 0.6) * h, 0.12 * h
    pan = rng.uniform(-0.5, 0.5, 2)  # background drift, px/frame
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    # The shape's own texture (moves with it; real objects are rarely flat, and optical flow needs texture).
    side = int(2 * r) + 4
    tex = cv2.resize(
        rng.normal(0, 1, (side // 4 + 2, side // 4 + 2)).astype(np.float32), (side, side), interpolation=cv2.INTER_CUBIC
    )
    tex = 1.0 + 0.3 * tex / (np.abs(tex).max() + 1e-6)

    video, gt, keep = [], [], []
    for t in range(num_frames):
        u = t / max(1, num_frames - 1)
        cx, cy = x0 + (x1 - x0) * u, y_mid + amp * np.sin(2 * np.pi * u)
        shift = np.float32([[1, 0, margin + pan[0] * t], [0, 1, margin + pan[1] * t]])
        frame_bg = cv2.warpAffine(bg, shift, (w, h), flags=cv2.WARP_INVERSE_MAP | cv2.INTER_LINEAR)
        alpha = _shape_alpha(spec.shape, w, h, cx, cy, r)[..., None]
        # Both maps float32: cy is a numpy float64, and cv2.remap misreads a float64 map2 (NaN pixels).
        map_x, map_y = (xx - cx + side / 2).astype(np.float32), (yy - cy + side / 2).astype(np.float32)
        shade = cv2.remap(tex, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=1.0)[
            ..., None
        ]
        noise = rng.normal(0, 2.0, (h, w, 3)).astype(np.float32)  # same sensor noise in source and gt
        for color, out in ((spec.color, video), (spec.edit_color, gt)):
            img = frame_bg * (1 - alpha) + np.float32(color) * shade * alpha + noise
            out.append(np.clip(img, 0, 255).round().astype(np.uint8))
        keep.append((alpha[..., 0] <= 0).astype(np.uint8))  # any coverage counts as the shape
    return np.stack(video), np.stack(gt), np.stack(keep)


def make_demo_dataset(out_dir: str | os.PathLike, num_clips: int = 3, num_frames: int = 17, seed: int = 0) -> Path:
    """Write the demo clips and ``samples.tsv`` into ``out_dir`` (replaced atomically); returns the sheet path."""

    def write(root: Path, i: int) -> dict:
        spec = SPECS[i % len(SPECS)]
        clip_id = f"demo{i}-{spec.shape}"
        video, gt, keep = render_clip(spec, num_frames, np.random.default_rng([seed, i]))
        extra = {num_frames // 2: gt[num_frames // 2]} if spec.extra_edit else {}
        scene = "moving over a textured background"
        return write_clip(
            root,
            clip_id,
            video,
            gt,
            keep,
            extra,
            as_folder=spec.as_folder,
            give_mask=spec.give_mask,
            prompt=f"p3rs0n, a {spec.edit_color_name} {spec.shape} {scene}",
            source_prompt=f"a {spec.color_name} {spec.shape} {scene}",
        )

    return write_dataset(out_dir, num_clips, write)


def main(argv: list[str] | None = None) -> int:
    ap = command_parser(
        "loraedit toy demo-data",
        "Write the procedural shapes dataset (plumbing demo).",
        "loraedit toy demo-data results/shapes --num-clips 3",
    )
    ap.add_argument("out_dir")
    ap.add_argument("--num-clips", type=int, default=3)
    ap.add_argument("--num-frames", type=int, default=17)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    sheet = make_demo_dataset(args.out_dir, args.num_clips, args.num_frames, args.seed)
    print(sheet)
    return 0
