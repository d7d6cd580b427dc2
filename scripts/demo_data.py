"""Generate the procedural demo dataset and its sample sheet."""

from pathlib import Path

from loraedit.logs import snakemake_log
from loraedit.toy.data import make_toy_dataset
from loraedit.toy.demo import make_demo_dataset

with snakemake_log(snakemake) as log:
    demo = snakemake.params.demo
    sheet = Path(snakemake.output.sheet)
    num_clips, num_frames, seed = demo.get("num_clips", 3), demo.get("num_frames", 17), demo.get("seed", 0)
    if demo.get("world", "toy") == "toy":  # the pretrained toy model's world, with true edits
        made = make_toy_dataset(
            sheet.parent,
            num_clips,
            seed,
            num_frames,
            size=demo.get("size", 64),
            odd_clips=demo.get("odd_clips", "object"),
        )
    else:  # shapes: mixed orientations and input formats, flow masks (plumbing)
        made = make_demo_dataset(sheet.parent, num_clips, num_frames, seed)
    if Path(made).resolve() != sheet.resolve():
        Path(made).replace(sheet)
    log.info("demo dataset (%s world): %s", demo.get("world", "toy"), sheet)
