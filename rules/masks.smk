# Stage 3: per-frame edit masks (1 = keep, 0 = regenerate): SAM2 clicks/box or SAM3 phrase from
# the sheet (as the paper), a given mask file, or optical flow. `snakemake --until masks` builds
# them with their report items (overlay video, contact sheet) before any GPU hour is spent.


rule masks:
    input:
        prepared=f"{OUT}/{{clip}}/prepared",
        sheet=sheet_path,
    output:
        masks=report(
            directory(f"{OUT}/{{clip}}/masks"),
            patterns=["{name}.mp4"],
            caption="../report/mask_overlay.rst",
            category="Masks",
            labels={"clip": "{clip}", "view": "overlay video"},
        ),
        contact_sheet=report(
            f"{OUT}/{{clip}}/mask_check.png",
            caption="../report/mask_contact_sheet.rst",
            category="Masks",
            labels={"clip": "{clip}", "view": "contact sheet"},
        ),
    log:
        f"{OUT}/logs/masks/{{clip}}.log",
    benchmark:
        f"{OUT}/benchmarks/masks/{{clip}}.tsv"
    retries: retries_for("masks")
    conda:
        "../envs/loraedit.yaml"
    threads: threads_for("masks")
    resources:
        mem_mb=masks_res("mem_mb"),
        runtime=masks_res("runtime"),
        gpu=masks_res("gpu"),
    params:
        row=row,
        cfg=config["masks"],
        gpu=lambda wc: 1 if uses_sam(wc) else 0,
    script:
        "../scripts/masks.py"
