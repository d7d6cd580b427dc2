# Report assets: bar charts per metric and per-clip side-by-side videos for `snakemake --report`.


rule bar_charts:
    input:
        f"{OUT}/tables/metrics.csv",
    output:
        report(
            directory(f"{OUT}/tables/charts"),
            patterns=["{metric}.png"],
            caption="../report/bar_chart.rst",
            category="Metrics",
        ),
    log:
        f"{OUT}/logs/bar_charts.log",
    conda:
        "../envs/loraedit.yaml"
    script:
        "../scripts/bar_charts.py"


rule side_by_side:
    input:
        unpack(side_by_side_inputs),
    output:
        report(
            f"{OUT}/{{clip}}/side_by_side.mp4",
            caption="../report/side_by_side.rst",
            category="Videos",
            labels={"clip": "{clip}"},
        ),
    log:
        f"{OUT}/logs/side_by_side/{{clip}}.log",
    conda:
        "../envs/loraedit.yaml"
    params:
        methods=lambda wc: [
            m for m in methods_for(wc.clip) if not m.startswith("baseline-")
        ],
    script:
        "../scripts/side_by_side.py"
