# Stage 2: Florence-2 captions -> prompts p* + caption (frame 1 for training, edited frame for inference).


rule caption:
    input:
        prepared=f"{OUT}/{{clip}}/prepared",
        sheet=sheet_path,
    output:
        f"{OUT}/{{clip}}/caption.json",
    log:
        f"{OUT}/logs/caption/{{clip}}.log",
    benchmark:
        f"{OUT}/benchmarks/caption/{{clip}}.tsv"
    retries: retries_for("caption")
    conda:
        "../envs/loraedit.yaml"
    threads: threads_for("caption")
    resources:
        mem_mb=res("caption", "mem_mb"),
        runtime=res("caption", "runtime"),
        gpu=res("caption", "gpu"),
    params:
        row=row,
        cfg=config["caption"],
    script:
        "../scripts/caption.py"
