"""A benchmark sheet of toy-world clips with true edits (the miniature of the paper's evaluation).

Even clips edit a two-sided card; odd clips are any scene (some edit a card too; the benchmark's
mix), or, with ``odd_clips="object"`` (the demo's: one clip of each case), a one-sided object. Every clip whose
edited card shows its back has an extra edited frame in its sheet row (the frame that shows most
of the back, whose new colour frame 1 cannot tell; Sec. 3.3.2), so `mask+ref` runs on it. Each
clip folder also holds ``toy.json`` (seed, index, kind, size), from which `toy_benchmark`
re-renders the exact truth (edited video, keep mask, back-side mask). Videos and ground truth are
PNG folders (lossless), the true keep mask is in the sheet.

CLI: ``python -m loraedit.toy_data OUT_DIR [--num-clips 16] [--seed 100] [--num-frames 17] [--size 64] [--odd-clips any]``
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pandas as pd

from . import toyworld
from .atomic import atomic_path, write_json, write_text
from .demo_data import write_clip


SCENES = {"card": toyworld.two_sided_scene_for, "object": toyworld.one_sided_scene_for, "any": toyworld.scene_for}
ODD_CLIPS = ("any", "object")


def clip_kind(index: int, odd_clips: str = "any") -> str:
    return "card" if index % 2 == 0 else odd_clips


def truth_for(info: dict) -> toyworld.ToyClip:
    """Re-render a clip from its toy.json (``kind`` absent: a sheet from before kinds were recorded)."""
    scene = SCENES[info.get("kind", clip_kind(info["index"]))](info["seed"], info["index"])
    return toyworld.render_clip(scene, info["num_frames"], (info["size"], info["size"]))


def make_toy_dataset(out_dir: str | os.PathLike, num_clips: int = 16, seed: int = 100, num_frames: int = 17,
                     size: int = 64, odd_clips: str = "any") -> Path:
    """Write the clips and ``samples.tsv`` into ``out_dir`` (replaced atomically); returns the sheet path."""
    if odd_clips not in ODD_CLIPS:
        raise ValueError(f"odd_clips {odd_clips!r}: expected one of {', '.join(ODD_CLIPS)}")
    out_dir = Path(out_dir)
    rows = []
    with atomic_path(out_dir, is_dir=True) as tmp:
        for i in range(num_clips):
            info = {"seed": seed, "index": i, "kind": clip_kind(i, odd_clips), "num_frames": num_frames, "size": size}
            clip = truth_for(info)
            clip_id = f"toy{seed}-{i:02d}"
            extra = {clip.extra_frames[0]: clip.edited[clip.extra_frames[0]]} if clip.extra_frames else {}
            rows.append(write_clip(Path(tmp), clip_id, clip.video, clip.edited, clip.keep, extra, as_folder=True,
                                   give_mask=True, prompt=f"p3rs0n, {clip.edit_caption}",
                                   source_prompt=clip.caption, gt_as_folder=True))
            write_json(Path(tmp) / clip_id / "toy.json", info)
        write_text(Path(tmp) / "samples.tsv", pd.DataFrame(rows).to_csv(sep="\t", index=False))
    return out_dir / "samples.tsv"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m loraedit.toy_data", description=__doc__.split("\n")[0])
    ap.add_argument("out_dir")
    ap.add_argument("--num-clips", type=int, default=16)
    ap.add_argument("--seed", type=int, default=100)
    ap.add_argument("--num-frames", type=int, default=17)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--odd-clips", choices=ODD_CLIPS, default="any")
    args = ap.parse_args(argv)
    print(make_toy_dataset(args.out_dir, args.num_clips, args.seed, args.num_frames, args.size, args.odd_clips))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
