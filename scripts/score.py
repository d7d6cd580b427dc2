"""Score one method's output (or an external baseline's video) against its clip."""

from pathlib import Path

from loraedit.atomic import write_json
from loraedit.gpu_slots import gpu_slot
from loraedit.logs import snakemake_log
from loraedit.metrics import load_baseline_video, score_clip
from loraedit.stages import read_prepared, read_truth
from loraedit.video_io import read_frames

with snakemake_log(snakemake) as log, gpu_slot(n=1):
    clip, method = snakemake.wildcards.clip, snakemake.wildcards.method
    meta, frames, keep, edited = read_prepared(snakemake.input.prepared, snakemake.input.masks, clip)
    if snakemake.params.baseline:
        output = load_baseline_video(snakemake.params.baseline, clip, len(frames), meta["width"], meta["height"])
    else:
        output = read_frames(Path(snakemake.input.output) / "frames", clip)
    gt = read_truth(snakemake.input.prepared, clip)
    scores = score_clip(frames, output, keep, edited, gt, snakemake.params.cfg, clip_id=clip, method=method)
    write_json(snakemake.output[0], scores)
    log.info("scored %s/%s: %d metrics", clip, method, len(scores["metrics"]))
