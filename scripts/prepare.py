"""Decode, orient, resize + center-crop and resample one clip."""

from loraedit.logs import snakemake_log
from loraedit.prepare import prepare_clip

with snakemake_log(snakemake) as log:
    meta = prepare_clip(snakemake.params.row, snakemake.params.cfg, snakemake.output[0])
    log.info("prepared %s: %sx%s, %s frames", meta["clip_id"], meta["width"], meta["height"], meta["num_frames"])
