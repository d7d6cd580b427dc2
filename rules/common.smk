# Config and sample-sheet validation, and the input functions every rule shares.
import json
import os

from snakemake.utils import validate

from loraedit.masks import choose_source, sheet_source_problems
from loraedit.resources import retries, rule_resources
from loraedit.sheet.samples import load_samples, sample_row
from loraedit import variants
from loraedit.variants import clip_methods, mask_mode_problems

validate(config, schema="../config/config.schema.yaml")

# Training and sampling must build the LoRA's mask channels alike (variants.mask_mode_problems).
_mask_problems = mask_mode_problems(config)
if _mask_problems:
    raise ValueError("\n".join(_mask_problems))

# The pretrained toy model ships inside the workflow (models/toy-wan2.1-i2v): a relative model.path
# that is not found in the working directory but is a folder of the workflow is taken from there,
# so the default config runs from any --directory.
_model_path = config["model"].get("path")
if _model_path and not os.path.isabs(_model_path) and not os.path.exists(_model_path):
    if os.path.isdir(os.path.join(workflow.basedir, _model_path)):
        config["model"]["path"] = os.path.join(workflow.basedir, _model_path)

# The GPU verification records `train.memory: auto` picks from ship with the workflow: a relative
# train.verified_modes is a folder of the workflow, whatever the working directory.
_verified = config["train"].get("verified_modes")
if _verified and not os.path.isabs(_verified):
    config["train"]["verified_modes"] = os.path.join(workflow.basedir, _verified)

# The mask prior: a relative prior.path not in the working directory is taken from the workflow
# (the bundled toy prior); with no path, the train_prior rule trains one on this run's clips.
_prior_path = (config.get("prior") or {}).get("path")
if _prior_path and not os.path.isabs(_prior_path) and not os.path.exists(_prior_path):
    if os.path.isdir(os.path.join(workflow.basedir, _prior_path)):
        config["prior"]["path"] = os.path.join(workflow.basedir, _prior_path)

OUT = "results"
PRIOR = (config.get("prior") or {}).get("path") or f"{OUT}/prior/lora"
# A named prior that the run uses must hold its LoRA: one line before the DAG, not a missing input later.
_prior_weights = os.path.join(PRIOR, "pytorch_lora_weights.safetensors")
if _prior_path and variants.uses_prior(config) and not os.path.isfile(_prior_weights):
    raise ValueError(
        f"prior.path: {_prior_path}: no pytorch_lora_weights.safetensors (train one: set prior.path: null)"
    )
# A plain-JSON copy of the config for scripts that record it (the live object may hold
# non-picklable Snakemake values when run through the Python API).
CONFIG_SNAPSHOT = json.loads(json.dumps(config, default=str))
DEMO = bool(config.get("demo", {}).get("enabled", False))


wildcard_constraints:
    clip=r"[A-Za-z0-9][A-Za-z0-9._-]*",
    method=r"[A-Za-z0-9][A-Za-z0-9+_-]*",


def sheet_path(wildcards):
    """The sample sheet; for the demo it exists only after the demo_data checkpoint ran.

    Rules whose params read the sheet list it as an input too, so that a job running on another
    host (SLURM) knows the checkpoint it depends on.
    """
    if DEMO:
        return checkpoints.demo_data.get().output.sheet
    return config["samples"]


_SHEETS = {}


def samples():
    """The validated sheet, loaded once per version of the file.

    Input functions call this for every job; validating (and checking every file named in) a
    whole benchmark sheet each time would make DAG building quadratic in the number of clips.
    """
    path = os.fspath(sheet_path(None))
    # A missing sheet gets load_samples' own one-line error.
    key = (path, os.stat(path).st_mtime_ns if os.path.exists(path) else None)
    if key not in _SHEETS:
        _SHEETS[key] = load_samples(path)
    return _SHEETS[key]


# A user sheet is validated at parse time, before the DAG starts: every bad row at once, and
# every row whose masks the `masks` config cannot make (masks.allow_flow: false and no SAM input).
if not DEMO:
    _rows = [
        {**sample_row(samples(), clip), "clip_id": clip} for clip in samples().index
    ]
    _problems = sheet_source_problems(_rows, config.get("masks"))
    if _problems:
        raise ValueError("sample sheet: " + "\n".join(_problems))


def row(wildcards):
    return sample_row(samples(), wildcards.clip)


def has_extra_edits(clip):
    value = sample_row(samples(), clip).get("extra_edits")
    return bool(value)


def methods_for(clip):
    """Every method row of this clip (variants.clip_methods)."""
    return clip_methods(config, has_extra_edits(clip))


def prepare_inputs(wildcards):
    r = row(wildcards)
    inputs = {
        "sheet": sheet_path(wildcards),
        "video": r["video"],
        "edited": r["edited_first_frame"],
    }
    if r.get("gt_video"):
        inputs["gt"] = r["gt_video"]
    return inputs


def all_outputs(wildcards):
    clips = list(samples().index)
    outs = [
        f"{OUT}/tables/metrics.csv",
        f"{OUT}/tables/manifest.json",
        f"{OUT}/tables/charts",
    ]
    for clip in clips:
        outs += [f"{OUT}/{clip}/side_by_side.mp4"]
        for m in methods_for(clip):
            outs.append(f"{OUT}/{clip}/{m}/scores.json")
    return outs


def res(rule_name, key):
    """Resources from config (loraedit.resources), growing with the retry attempt."""
    num_frames = config["prepare"]["num_frames"]
    width, height = config["prepare"]["landscape"]

    def value(wildcards, attempt):
        return rule_resources(config, rule_name, attempt, num_frames, width, height)[
            key
        ]

    return value


def threads_for(rule_name):
    return rule_resources(config, rule_name)["threads"]


def retries_for(rule_name):
    return retries(config, rule_name)


def train_settings(method):
    """`train`, with `train_ref` on top for mask+ref (variants.train_settings)."""
    return variants.train_settings(config, method)


def train_inputs(wildcards):
    inputs = {
        "prepared": f"{OUT}/{wildcards.clip}/prepared",
        "masks": f"{OUT}/{wildcards.clip}/masks",
        "caption": f"{OUT}/{wildcards.clip}/caption.json",
    }
    if wildcards.method == "mask+ref":  # stage 2 continues from the stage-1 LoRA
        inputs["init_lora"] = f"{OUT}/{wildcards.clip}/mask/lora"
    if train_settings(wildcards.method).get("init", "none") != "none":
        inputs["prior"] = PRIOR
    return inputs


def prior_settings():
    """The train_prior job's settings: `prior` over `train` (variants.prior_settings)."""
    return variants.prior_settings(config)


def prior_inputs(wildcards):
    """Every clip's prepared frames, masks and caption: the train_prior job learns from them all."""
    clips = list(samples().index)
    return {
        "prepared": [f"{OUT}/{clip}/prepared" for clip in clips],
        "masks": [f"{OUT}/{clip}/masks" for clip in clips],
        "caption": [f"{OUT}/{clip}/caption.json" for clip in clips],
    }


def infer_inputs(wildcards):
    inputs = {
        "prepared": f"{OUT}/{wildcards.clip}/prepared",
        "masks": f"{OUT}/{wildcards.clip}/masks",
        "caption": f"{OUT}/{wildcards.clip}/caption.json",
    }
    if wildcards.method == "prior":  # the mask prior alone, no per-clip steps
        inputs["lora"] = PRIOR
    elif wildcards.method != "none":
        inputs["lora"] = f"{OUT}/{wildcards.clip}/{wildcards.method}/lora"
    return inputs


def score_inputs(wildcards):
    inputs = {
        "prepared": f"{OUT}/{wildcards.clip}/prepared",
        "masks": f"{OUT}/{wildcards.clip}/masks",
    }
    if not wildcards.method.startswith("baseline-"):
        inputs["output"] = f"{OUT}/{wildcards.clip}/{wildcards.method}/output"
    return inputs


def all_scores(wildcards):
    return [
        f"{OUT}/{clip}/{m}/scores.json"
        for clip in samples().index
        for m in methods_for(clip)
    ]


def side_by_side_inputs(wildcards):
    clip = wildcards.clip
    return {
        "sheet": sheet_path(wildcards),
        "prepared": f"{OUT}/{clip}/prepared",
        "masks": f"{OUT}/{clip}/masks",
        "outputs": [
            f"{OUT}/{clip}/{m}/output"
            for m in methods_for(clip)
            if not m.startswith("baseline-")
        ],
    }


def uses_sam(wildcards):
    """Whether the clip's masks come from SAM2/SAM3 (the sheet's clicks, box or phrase)."""
    r = row(wildcards)
    source = choose_source(
        config["masks"].get("source", "auto"),
        r,
        r.get("mask"),
        allow_flow=config["masks"].get("allow_flow", True),
    )
    return source in ("sam2", "sam3")


def masks_res(key):
    """The `masks` figures (CPU), or `masks_sam` (one GPU) for a clip whose masks come from SAM."""
    cpu, sam = res("masks", key), res("masks_sam", key)
    return lambda wc, attempt: (sam if uses_sam(wc) else cpu)(wc, attempt)
