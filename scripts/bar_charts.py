"""One bar chart per metric across methods."""

from loraedit.atomic import atomic_path
from loraedit.logs import snakemake_log
from loraedit.report_assets import bar_charts

with snakemake_log(snakemake) as log:
    with atomic_path(snakemake.output[0], is_dir=True) as tmp:
        charts = bar_charts(snakemake.input[0], tmp)
    log.info("%d charts", len(charts))
