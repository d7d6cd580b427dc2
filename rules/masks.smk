# Stage 3: per-frame edit masks (1 = keep, 0 = regenerate) from mask files or optical flow.


rule masks:
    input:
        prepared=f"{OUT}/{{clip}}/prepared",
        sheet=sheet_path,
    output:
        directory(f"{OUT}/{{clip}}/masks"),
    log:
        f"{OUT}/logs/masks/{{clip}}.log",
    benchmark:
        f"{OUT}/benchmarks/masks/{{clip}}.tsv"
    retries: retries_for("masks")
    conda:
        "../envs/loraedit.yaml"
    threads: threads_for("masks")
    resources:
        mem_mb=res("masks", "mem_mb"),
        runtime=res("masks", "runtime"),
        gpu=res("masks", "gpu"),
    params:
        row=row,
        cfg=config["masks"],
    script:
        "../scripts/masks.py"
