"""Per-frame edit masks from given files or optical flow."""
from loraedit.logs import snakemake_log
from loraedit.masks import make_masks

with snakemake_log(snakemake) as log:
    row = snakemake.params.row
    masks = make_masks(snakemake.input.prepared, snakemake.output[0], snakemake.params.cfg,
                       given_mask_path=row.get("mask"), clip_id=row["clip_id"])
    log.info("masks %s: edit region %.1f%% of frames 2..T", row["clip_id"], 100 * (1 - masks[1:].mean()))
