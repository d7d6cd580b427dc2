"""Generate the procedural demo dataset and its sample sheet."""
from pathlib import Path

from loraedit.demo_data import make_demo_dataset
from loraedit.logs import snakemake_log

with snakemake_log(snakemake) as log:
    demo = snakemake.params.demo
    sheet = Path(snakemake.output.sheet)
    made = make_demo_dataset(sheet.parent, num_clips=demo.get("num_clips", 3),
                             num_frames=demo.get("num_frames", 17), seed=demo.get("seed", 0))
    if Path(made).resolve() != sheet.resolve():
        Path(made).replace(sheet)
    log.info("demo dataset: %s", sheet)
