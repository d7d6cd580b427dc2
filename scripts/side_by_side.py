"""Per-clip comparison video: input | edited first frame | each method | mask overlay."""
from pathlib import Path

import numpy as np

from loraedit.logs import snakemake_log
from loraedit.masks import overlay
from loraedit.report_assets import side_by_side
from loraedit.stages import read_prepared
from loraedit.video_io import read_frames

with snakemake_log(snakemake):
    clip = snakemake.wildcards.clip
    meta, frames, keep, edited = read_prepared(snakemake.input.prepared, snakemake.input.masks, clip)
    panels = [("input", frames), ("edited frame 1", np.repeat(edited[0][None], len(frames), axis=0))]
    for method, out in zip(snakemake.params.methods, snakemake.input.outputs):
        panels.append((method, read_frames(Path(out) / "frames", clip)))
    panels.append(("mask", overlay(frames, keep)))
    side_by_side(panels, snakemake.output[0], meta.get("fps", 8.0))
