# Stage 4: the per-clip LoRA (naive Sec. 3.1, mask Sec. 3.3.1, mask+ref Sec. 3.3.2; low-cost Sec. 4.5).


rule train_lora:
    input:
        unpack(train_inputs),
    output:
        lora=directory(f"{OUT}/{{clip}}/{{method}}/lora"),
        loss_csv=f"{OUT}/{{clip}}/{{method}}/loss.csv",
        loss_png=report(
            f"{OUT}/{{clip}}/{{method}}/loss.png",
            caption="../report/loss_curve.rst",
            category="Training",
            labels={"clip": "{clip}", "method": "{method}"},
        ),
    log:
        f"{OUT}/logs/train_lora/{{clip}}.{{method}}.log",
    benchmark:
        f"{OUT}/benchmarks/train_lora/{{clip}}.{{method}}.tsv"
    wildcard_constraints:
        method=r"naive|mask|mask\+ref",
    retries: retries_for("train_lora")
    conda:
        "../envs/loraedit.yaml"
    threads: threads_for("train_lora")
    resources:
        mem_mb=res("train_lora", "mem_mb"),
        runtime=res("train_lora", "runtime"),
        gpu=res("train_lora", "gpu"),
    params:
        model=config["model"],
        train=lambda wc: train_settings(wc.method),
        work_dir=lambda wc: f"{OUT}/{wc.clip}/{wc.method}/work",
    script:
        "../scripts/train_lora.py"
