# Stage 5: edit the clip with the stage-1 mask and the edited first frame (and the composite option).


rule infer:
    input:
        unpack(infer_inputs),
    output:
        directory(f"{OUT}/{{clip}}/{{method}}/output"),
    log:
        f"{OUT}/logs/infer/{{clip}}.{{method}}.log",
    benchmark:
        f"{OUT}/benchmarks/infer/{{clip}}.{{method}}.tsv"
    wildcard_constraints:
        method=r"naive|mask|mask\+ref|none|prior",
    retries: retries_for("infer")
    conda:
        "../envs/loraedit.yaml"
    threads: threads_for("infer")
    resources:
        mem_mb=res("infer", "mem_mb"),
        runtime=res("infer", "runtime"),
        gpu=res("infer", "gpu"),
    params:
        model=config["model"],
        infer=config["infer"],
    script:
        "../scripts/infer.py"


rule composite:
    input:
        prepared=f"{OUT}/{{clip}}/prepared",
        masks=f"{OUT}/{{clip}}/masks",
        output=f"{OUT}/{{clip}}/{{method}}/output",
    output:
        directory(f"{OUT}/{{clip}}/{{method}}+composite/output"),
    log:
        f"{OUT}/logs/composite/{{clip}}.{{method}}.log",
    wildcard_constraints:
        method=r"naive|mask|mask\+ref|none|prior",
    conda:
        "../envs/loraedit.yaml"
    params:
        feather_px=config["infer"].get("feather_px", 5),
    script:
        "../scripts/composite.py"
