"""Edit one clip with its LoRA (or none) and the edited first frame."""

from loraedit.gpu_slots import gpu_slot
from loraedit.logs import snakemake_log
from loraedit.stages import run_infer

with snakemake_log(snakemake) as log, gpu_slot(n=1):
    run_infer(
        snakemake.input.prepared,
        snakemake.input.masks,
        snakemake.input.caption,
        snakemake.wildcards.method,
        snakemake.params.model,
        snakemake.params.infer,
        snakemake.output[0],
        lora_dir=snakemake.input.get("lora"),
        clip_id=snakemake.wildcards.clip,
    )
    log.info("wrote %s (what ran, and any fallback: memory.json)", snakemake.output[0])
