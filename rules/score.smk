# Stage 6: per-clip scores (the paper's Table 1 metrics + weight-free ones) for each method.


rule score:
    input:
        unpack(score_inputs),
    output:
        f"{OUT}/{{clip}}/{{method}}/scores.json",
    log:
        f"{OUT}/logs/score/{{clip}}.{{method}}.log",
    benchmark:
        f"{OUT}/benchmarks/score/{{clip}}.{{method}}.tsv"
    retries: retries_for("score")
    conda:
        "../envs/loraedit.yaml"
    threads: threads_for("score")
    resources:
        mem_mb=res("score", "mem_mb"),
        runtime=res("score", "runtime"),
        gpu=res("score", "gpu"),
    params:
        cfg=config.get("score", {}),
        baseline=lambda wc: config.get("baselines", {}).get(
            wc.method.removeprefix("baseline-")
        ),
    script:
        "../scripts/score.py"


rule aggregate:
    input:
        scores=all_scores,
        sheet=sheet_path,
        masks=lambda wc: [f"{OUT}/{clip}/masks" for clip in samples().index],
    output:
        csv=f"{OUT}/tables/metrics.csv",
        html=report(
            f"{OUT}/tables/metrics.html",
            caption="../report/metrics_table.rst",
            category="Metrics",
        ),
        per_clip=f"{OUT}/tables/per_clip.csv",
        md=f"{OUT}/tables/metrics.md",
        tex=f"{OUT}/tables/metrics.tex",
        manifest=f"{OUT}/tables/manifest.json",
    log:
        f"{OUT}/logs/aggregate.log",
    retries: retries_for("aggregate")
    conda:
        "../envs/loraedit.yaml"
    threads: threads_for("aggregate")
    resources:
        mem_mb=res("aggregate", "mem_mb"),
        runtime=res("aggregate", "runtime"),
        gpu=res("aggregate", "gpu"),
    params:
        methods=lambda wc: config["methods"],
        config=CONFIG_SNAPSHOT,
        benchmarks=f"{OUT}/benchmarks",
    script:
        "../scripts/aggregate.py"
