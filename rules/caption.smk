# Stage 2: Florence-2 captions -> prompts p* + caption (frame 1 for training, edited frame for inference).


rule caption:
    input:
        f"{OUT}/{{clip}}/prepared",
    output:
        f"{OUT}/{{clip}}/caption.json",
    log:
        f"{OUT}/logs/caption/{{clip}}.log",
    benchmark:
        f"{OUT}/benchmarks/caption/{{clip}}.tsv"
    conda:
        "../envs/loraedit.yaml"
    resources:
        mem_mb=res("caption", "mem_mb"),
        runtime=res("caption", "runtime"),
        gpu=res("caption", "gpu"),
    params:
        row=row,
        cfg=config["caption"],
    script:
        "../scripts/caption.py"
