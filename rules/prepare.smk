# Stage 1: decode, orient, resize + center-crop, resample to num_frames (and the demo dataset).


checkpoint demo_data:
    output:
        sheet=f"{OUT}/demo_data/samples.tsv",
    log:
        f"{OUT}/logs/demo_data.log",
    conda:
        "../envs/loraedit.yaml"
    params:
        demo=config.get("demo", {}),
    script:
        "../scripts/demo_data.py"


rule prepare:
    input:
        unpack(prepare_inputs),
    output:
        directory(f"{OUT}/{{clip}}/prepared"),
    log:
        f"{OUT}/logs/prepare/{{clip}}.log",
    benchmark:
        f"{OUT}/benchmarks/prepare/{{clip}}.tsv"
    retries: retries_for("prepare")
    conda:
        "../envs/loraedit.yaml"
    threads: threads_for("prepare")
    resources:
        mem_mb=res("prepare", "mem_mb"),
        runtime=res("prepare", "runtime"),
        gpu=res("prepare", "gpu"),
    params:
        row=row,
        cfg=config["prepare"],
    script:
        "../scripts/prepare.py"
