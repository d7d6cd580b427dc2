"""Train the per-clip LoRA for one variant."""

from loraedit.gpu_slots import gpu_slot
from loraedit.logs import snakemake_log
from loraedit.stages import run_train

with snakemake_log(snakemake) as log, gpu_slot(n=1):
    history = run_train(
        snakemake.input.prepared,
        snakemake.input.masks,
        snakemake.input.caption,
        snakemake.wildcards.method,
        snakemake.params.model,
        snakemake.params.train,
        snakemake.output.lora,
        snakemake.output.loss_csv,
        snakemake.output.loss_png,
        snakemake.params.work_dir,
        init_lora_dir=snakemake.input.get("init_lora"),
        prior_dir=snakemake.input.get("prior"),
        clip_id=snakemake.wildcards.clip,
    )
    log.info("trained %d steps; loss %.4f -> %.4f", len(history), history[0]["loss"], history[-1]["loss"])
    log.info("memory mode that ran, why, and any fallback: %s/memory.json", snakemake.output.lora)
