"""Per-frame edit masks (SAM2 / SAM3 from the sheet, a given file, or optical flow) and their contact sheet."""

import contextlib

from loraedit.gpu_slots import gpu_slot
from loraedit.logs import snakemake_log
from loraedit.masks import make_masks

slot = gpu_slot(n=1) if snakemake.params.gpu else contextlib.nullcontext()  # SAM clips only
with snakemake_log(snakemake) as log, slot:
    row = snakemake.params.row
    masks = make_masks(
        snakemake.input.prepared,
        snakemake.output.masks,
        snakemake.params.cfg,
        given_mask_path=row.get("mask"),
        clip_id=row["clip_id"],
        row=row,
        contact_sheet_png=snakemake.output.contact_sheet,
    )
    log.info("masks %s: edit region %.1f%% of frames 2..T", row["clip_id"], 100 * (1 - masks[1:].mean()))
