"""Which LoRA-Edit variants a run makes of each clip, and with which training settings: the one
place the workflow (rules/common.smk) and the preflight check (`loraedit check`) read them from."""

from __future__ import annotations


def train_settings(config: dict, method: str) -> dict:
    """`train`, with `train_ref` on top for the stage-2 (mask+ref) variant. The naive variant (Sec.
    3.1, the stock first-frame mask) always starts fresh: the mask prior is a start for the mask
    variants only."""
    settings = dict(config["train"])
    if method == "mask+ref":
        settings.update(config.get("train_ref", {}))
    if method == "naive":
        settings["init"] = "none"
    return settings


def prior_settings(config: dict) -> dict:
    """The train_prior job's TrainSettings keys and regions: `prior` over `train`, a fresh start."""
    prior = {k: v for k, v in (config.get("prior") or {}).items() if k != "path"}
    return {**config["train"], **prior, "init": "none"}


def uses_prior(config: dict) -> bool:
    """Whether the run needs the mask prior: the `prior` method, or a clip LoRA started from it."""
    inits = {train_settings(config, m).get("init", "none") for m in config["methods"] if m in ("mask", "mask+ref")}
    return "prior" in config["methods"] or bool(inits - {"none"})


def clip_variants(config: dict, has_extra_edits: bool) -> list[str]:
    """The configured LoRA-Edit variants that apply to a clip (mask+ref needs extra edited frames)."""
    return [m for m in config["methods"] if m != "mask+ref" or has_extra_edits]


def clip_methods(config: dict, has_extra_edits: bool) -> list[str]:
    """Every row a clip gets in the tables: its variants, their background composites, the baselines."""
    methods = clip_variants(config, has_extra_edits)
    if config["infer"].get("composite_background"):
        methods += [f"{m}+composite" for m in list(methods)]
    return methods + [f"baseline-{name}" for name in config.get("baselines", {})]


def mask_mode_problems(config: dict) -> list[str]:
    """The LoRA learns the transformer's mask channels as training builds them (stage 2 on top of
    stage 1's settings): sampling must build them alike. One line per part that differs."""
    modes = {"train": config["train"].get("mask_downsample", "nearest")}
    modes["train_ref"] = config.get("train_ref", {}).get("mask_downsample", modes["train"])
    infer = config["infer"].get("mask_downsample", "nearest")
    return [
        f"config: {part}.mask_downsample ({mode}) and infer.mask_downsample ({infer}) differ: "
        "set both to nearest or both to conservative"
        for part, mode in modes.items()
        if mode != infer
    ]
