"""Per-clip comparison video: input | edited first frame | truth (if known) | each method | edit region."""

from pathlib import Path

from loraedit.logs import snakemake_log
from loraedit.report_assets import comparison_panels, side_by_side
from loraedit.stages import read_prepared, read_truth
from loraedit.video_io import read_frames

with snakemake_log(snakemake):
    clip = snakemake.wildcards.clip
    meta, frames, keep, edited = read_prepared(snakemake.input.prepared, snakemake.input.masks, clip)
    truth = read_truth(snakemake.input.prepared, clip)
    outputs = [
        (method, read_frames(Path(out) / "frames", clip))
        for method, out in zip(snakemake.params.methods, snakemake.input.outputs)
    ]
    panels = comparison_panels(frames, edited[0], keep, outputs, truth)
    side_by_side(panels, snakemake.output[0], meta.get("fps", 8.0))
