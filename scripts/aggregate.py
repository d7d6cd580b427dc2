"""Tables (CSV, Markdown, LaTeX) over every clip x method, and the run manifest."""
from pathlib import Path

from loraedit.logs import snakemake_log
from loraedit.manifest import write_manifest
from loraedit.tables import aggregate

with snakemake_log(snakemake) as log:
    out_dir = Path(snakemake.output.csv).parent
    aggregate(list(snakemake.input.scores), out_dir, method_order=snakemake.params.methods)
    config = snakemake.params.config
    benchmarks = sorted(str(p) for p in Path(snakemake.params.benchmarks).rglob("*.tsv"))
    write_manifest(snakemake.output.manifest, config, model_ids={
        "backend": config["model"]["backend"], "model_path": config["model"].get("path"),
        "caption": config.get("caption", {}).get("model"), "clip": config.get("score", {}).get("clip_model"),
    }, input_files=list(snakemake.params.inputs), benchmark_files=benchmarks, seed=config["train"].get("seed", 0))
    log.info("tables in %s", out_dir)
