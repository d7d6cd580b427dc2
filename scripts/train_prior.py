"""Train the mask prior on every clip of the run."""

from loraedit.gpu_slots import gpu_slot
from loraedit.logs import snakemake_log
from loraedit.stages import read_prior_clips, run_train_prior

with snakemake_log(snakemake) as log, gpu_slot(n=1):
    clips = read_prior_clips(
        snakemake.input.prepared, snakemake.input.masks, snakemake.input.caption, snakemake.params.clips
    )
    history = run_train_prior(
        clips,
        snakemake.params.model,
        snakemake.params.prior,
        snakemake.output.lora,
        snakemake.output.loss_csv,
        snakemake.output.loss_png,
        snakemake.params.work_dir,
    )
    log.info(
        "mask prior: %d clips, %d steps; loss %.4f -> %.4f",
        len(clips),
        len(history),
        history[0]["loss"],
        history[-1]["loss"],
    )
