"""Florence-2 captions -> training and inference prompts."""

from loraedit.atomic import write_json
from loraedit.caption import caption_clip
from loraedit.gpu_slots import gpu_slot
from loraedit.logs import snakemake_log

with snakemake_log(snakemake) as log, gpu_slot(n=1):
    row = snakemake.params.row
    captions = caption_clip(
        snakemake.input.prepared,
        snakemake.params.cfg,
        sheet_prompt=row.get("prompt"),
        sheet_source_prompt=row.get("source_prompt"),
    )
    write_json(snakemake.output[0], captions)
    log.info("prompts (%s): train=%r infer=%r", captions["source"], captions["train_prompt"], captions["infer_prompt"])
