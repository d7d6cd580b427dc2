# The mask prior (beyond the paper): one LoRA with the mask-aware objective (Sec. 3.3.1) over all of
# the run's clips and random moving masks, no edits seen. Trained only when prior.path is null and
# the run uses it (the `prior` method, or train.init: prior | prior-merged).


rule train_prior:
    input:
        unpack(prior_inputs),
    output:
        lora=directory(f"{OUT}/prior/lora"),
        loss_csv=f"{OUT}/prior/loss.csv",
        loss_png=report(
            f"{OUT}/prior/loss.png",
            caption="../report/loss_curve.rst",
            category="Training",
            labels={"clip": "all", "method": "prior"},
        ),
    log:
        f"{OUT}/logs/train_prior.log",
    benchmark:
        f"{OUT}/benchmarks/train_prior.tsv"
    retries: retries_for("train_prior")
    conda:
        "../envs/loraedit.yaml"
    threads: threads_for("train_prior")
    resources:
        mem_mb=res("train_prior", "mem_mb"),
        runtime=res("train_prior", "runtime"),
        gpu=res("train_prior", "gpu"),
    params:
        model=config["model"],
        prior=prior_settings(),
        clips=lambda wc: list(samples().index),
        work_dir=f"{OUT}/prior/work",
    script:
        "../scripts/train_prior.py"
