"""Tables (CSV, Markdown, LaTeX) over every clip x method, and the run manifest."""

from pathlib import Path

from loraedit.logs import snakemake_log
from loraedit.manifest import read_mask_sources, read_memory_records, write_manifest
from loraedit.sheet.samples import load_samples
from loraedit.tables import aggregate

with snakemake_log(snakemake) as log:
    out_dir = Path(snakemake.output.csv).parent
    sheet = load_samples(snakemake.input.sheet)
    instructions = sheet["edit_instruction"].to_dict() if "edit_instruction" in sheet else None
    aggregate(
        list(snakemake.input.scores), out_dir, method_order=snakemake.params.methods, edit_instructions=instructions
    )
    config = snakemake.params.config
    benchmarks = sorted(str(p) for p in Path(snakemake.params.benchmarks).rglob("*.tsv"))
    # The sheet and every file it names are hashed into the manifest.
    inputs = [snakemake.input.sheet] + [
        v
        for column in ("video", "edited_first_frame", "mask", "gt_video")
        if column in sheet
        for v in sheet[column]
        if isinstance(v, str)
    ]
    write_manifest(
        snakemake.output.manifest,
        config,
        model_ids={
            "backend": config["model"]["backend"],
            "model_path": config["model"].get("path"),
            "caption": config.get("caption", {}).get("model"),
            "clip": config.get("score", {}).get("clip_model"),
            "sam2": config.get("masks", {}).get("sam2_model"),
            "sam3": config.get("masks", {}).get("sam3_model"),
        },
        input_files=inputs,
        benchmark_files=benchmarks,
        seed=config["train"].get("seed", 0),
        mask_sources=read_mask_sources(snakemake.input.masks),
        # <clip>/<method>/scores.json: its folder holds the method's lora/ and output/ (and their memory.json)
        memory_modes=read_memory_records(sorted({str(Path(p).parent) for p in snakemake.input.scores})),
    )
    log.info("tables in %s", out_dir)
