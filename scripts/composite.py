"""Paste the kept background back into a method's output (beyond the paper)."""

from loraedit.logs import snakemake_log
from loraedit.stages import run_composite

with snakemake_log(snakemake):
    run_composite(
        snakemake.input.prepared,
        snakemake.input.masks,
        snakemake.input.output,
        snakemake.output[0],
        feather_px=snakemake.params.feather_px,
        clip_id=snakemake.wildcards.clip,
    )
