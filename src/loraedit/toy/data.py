"""A benchmark sheet of toy-world clips with true edits (the miniature of the paper's evaluation).

Even clips edit a two-sided card; odd clips are any scene (some edit a card too; the benchmark's
mix), or, with ``odd_clips="object"`` (the demo's: one clip of each case), a one-sided object. Every clip whose
edited card shows its back has an extra edited frame in its sheet row (the frame that shows most
of the back, whose new colour frame 1 cannot tell; Sec. 3.3.2), so `mask+ref` runs on it. Each
clip folder also holds ``toy.json`` (seed, index, kind, size), from which `toy.benchmark`
re-renders the exact truth (edited video, keep mask, back-side mask). Videos and ground truth are
PNG folders (lossless), the true keep mask is in the sheet.

CLI: ``loraedit toy data OUT_DIR [--num-clips 16] [--seed 100] [--num-frames 17] [--size 64] [--odd-clips any]``
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from ..atomic import atomic_path, write_json, write_text
from ..commands import command_parser
from ..video_io import write_frames, write_mask_frames, write_mp4, write_png
from . import world as toyworld

FPS = 8.0


def write_clip(
    root: Path,
    clip_id: str,
    video: np.ndarray,
    gt: np.ndarray,
    keep: np.ndarray,
    extra: dict[int, np.ndarray],
    as_folder: bool,
    give_mask: bool,
    prompt: str,
    source_prompt: str,
    gt_as_folder: bool = False,
) -> dict:
    """Write one clip's files under ``root/clip_id`` and return its sample-sheet row (paths relative to root).

    video, gt uint8 (T, H, W, 3); keep uint8 (T, H, W) 1 = keep; extra {t: edited frame t} (stage-2 edits).
    """
    d = root / clip_id
    d.mkdir()
    if as_folder:
        write_frames(d / "frames", video)
        video_rel = f"{clip_id}/frames"
    else:
        write_mp4(d / "video.mp4", video, FPS, crf=10)
        video_rel = f"{clip_id}/video.mp4"
    write_png(d / "edited_first_frame.png", gt[0])
    write_mask_frames(d / "mask", keep)
    if gt_as_folder:
        write_frames(d / "gt", gt)
    else:
        write_mp4(d / "gt.mp4", gt, FPS, crf=10)
    for t, frame in sorted(extra.items()):
        write_png(d / f"edited_{t:05d}.png", frame)
    return {
        "clip_id": clip_id,
        "video": video_rel,
        "edited_first_frame": f"{clip_id}/edited_first_frame.png",
        "mask": f"{clip_id}/mask" if give_mask else "",
        "prompt": prompt,
        "source_prompt": source_prompt,
        "extra_edits": ";".join(f"{t}:{clip_id}/edited_{t:05d}.png" for t in sorted(extra)),
        "gt_video": f"{clip_id}/gt" if gt_as_folder else f"{clip_id}/gt.mp4",
    }


def write_dataset(out_dir: str | os.PathLike, num_clips: int, write: Callable[[Path, int], dict]) -> Path:
    """Clip i's files by `write(root, i)` (which returns its sheet row) and ``samples.tsv`` into
    ``out_dir``, replaced atomically; returns the sheet path."""
    out_dir = Path(out_dir)
    with atomic_path(out_dir, is_dir=True) as tmp:
        rows = [write(Path(tmp), i) for i in range(num_clips)]
        write_text(Path(tmp) / "samples.tsv", pd.DataFrame(rows).to_csv(sep="\t", index=False))
    return out_dir / "samples.tsv"


SCENES = {"card": toyworld.two_sided_scene_for, "object": toyworld.one_sided_scene_for, "any": toyworld.scene_for}
ODD_CLIPS = ("any", "object")


def clip_kind(index: int, odd_clips: str = "any") -> str:
    return "card" if index % 2 == 0 else odd_clips


def truth_for(info: dict) -> toyworld.ToyClip:
    """Re-render a clip from its toy.json (``kind`` absent: a sheet from before kinds were recorded)."""
    scene = SCENES[info.get("kind", clip_kind(info["index"]))](info["seed"], info["index"])
    return toyworld.render_clip(scene, info["num_frames"], (info["size"], info["size"]))


def make_toy_dataset(
    out_dir: str | os.PathLike,
    num_clips: int = 16,
    seed: int = 100,
    num_frames: int = 17,
    size: int = 64,
    odd_clips: str = "any",
) -> Path:
    """Write the clips and ``samples.tsv`` into ``out_dir`` (replaced atomically); returns the sheet path."""
    if odd_clips not in ODD_CLIPS:
        raise ValueError(f"odd_clips {odd_clips!r}: expected one of {', '.join(ODD_CLIPS)}")

    def write(root: Path, i: int) -> dict:
        info = {"seed": seed, "index": i, "kind": clip_kind(i, odd_clips), "num_frames": num_frames, "size": size}
        clip = truth_for(info)
        clip_id = f"toy{seed}-{i:02d}"
        extra = {clip.extra_frames[0]: clip.edited[clip.extra_frames[0]]} if clip.extra_frames else {}
        row = write_clip(
            root,
            clip_id,
            clip.video,
            clip.edited,
            clip.keep,
            extra,
            as_folder=True,
            give_mask=True,
            prompt=f"p3rs0n, {clip.edit_caption}",
            source_prompt=clip.caption,
            gt_as_folder=True,
        )
        write_json(root / clip_id / "toy.json", info)
        return row

    return write_dataset(out_dir, num_clips, write)


def main(argv: list[str] | None = None) -> int:
    ap = command_parser(
        "loraedit toy data",
        __doc__.split("\n")[0],
        "loraedit toy data results/toy_benchmark/data --num-clips 16 --seed 100",
    )
    ap.add_argument("out_dir")
    ap.add_argument("--num-clips", type=int, default=16)
    ap.add_argument("--seed", type=int, default=100)
    ap.add_argument("--num-frames", type=int, default=17)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--odd-clips", choices=ODD_CLIPS, default="any")
    args = ap.parse_args(argv)
    print(make_toy_dataset(args.out_dir, args.num_clips, args.seed, args.num_frames, args.size, args.odd_clips))
    return 0
