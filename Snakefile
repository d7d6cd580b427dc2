# loraedit: LoRA-Edit (mask-aware LoRA on Wan2.1-I2V) over a whole clip dataset.
import os

from snakemake.utils import min_version

min_version("9.0")


configfile: os.path.join(workflow.basedir, "config", "config.yaml")


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/prepare.smk"
include: "rules/caption.smk"
include: "rules/masks.smk"
include: "rules/prior.smk"
include: "rules/train.smk"
include: "rules/infer.smk"
include: "rules/score.smk"
include: "rules/report.smk"


rule all:
    default_target: True
    input:
        all_outputs,
