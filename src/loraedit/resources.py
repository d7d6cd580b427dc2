"""Per-rule compute resources (gpu, mem_mb, runtime, threads, gpu_model) from the config.

Snakemake rules read their resources from here, so that a workstation run
(`--resources gpu=N`) and a SLURM run (`--gpus`, `--mem`, `-t`) ask for what a
job really needs::

    resources:
        mem_mb=lambda wc, attempt: rule_resources(config, "train_lora", attempt)["mem_mb"]

Figures are given per backend at the reference video size (49 frames at
832x480, the paper's setting). The part of memory / runtime that depends on the
video (activations, VAE, decoding, per-frame work) scales with
frames x width x height; the rest (model weights, start-up) does not. Each retry
multiplies memory and runtime by ``retry_factor`` (default 1.5), so a job that
ran out of memory or time gets more on its next attempt.

Default figures (reference size; host RAM, not GPU memory):

``wan2.1-i2v-480p`` (Wan2.1-I2V-14B, bf16; also used for 720p and Wan2.2 A14B):
    caption     GPU  16 GB   10 min  Florence-2-large, two frames
    train_lora  GPU  64 GB  120 min  14B weights (~33 GB bf16) staged in RAM for
                                     block offloading. Runtime is an estimate, not a
                                     measurement: the official README reports 31.9 s/step
                                     (~53 min/100 steps) on an RTX 4090 with block swap;
                                     benchmarks/gpu_scale.py measures it on H100/H200
    train_prior GPU  64 GB  480 min  the mask prior: prior.steps (2000) LoRA steps, once per run
    infer       GPU  64 GB   45 min  30 guided steps + VAE decode
    score       GPU  32 GB   30 min  CLIP + DeQA-Score (7B) on every frame
    prepare     CPU   4 GB   10 min  ffmpeg decode, resize, PNG frames
    masks       CPU   4 GB   15 min  dense optical flow over the clip
    masks_sam   GPU  16 GB   15 min  the masks rule for a clip whose masks come from SAM2/SAM3
                                     (sheet clicks, box or phrase). Estimate, not measured: weights
                                     0.9 GB (SAM2.1-large) / 3.4 GB (SAM3) in fp32 on load, frames
                                     kept on the host at 1024x1024 float32 (0.6 GB for 49 frames)
    aggregate   CPU   2 GB    5 min  tables, manifest
    demo_data   CPU   2 GB    5 min  procedural clips
    composite, side_by_side  CPU 4 GB 10 min;  bar_charts  CPU 2 GB 5 min
``hunyuanvideo-i2v`` (HunyuanVideo-I2V-33ch, bf16): the Wan figures. Its weights are of the same
    size (13B transformer ~26 GB + Llava-Llama-3-8B text encoder ~16 GB, vs 14B ~28 GB + UMT5-XXL
    ~11 GB), its per-token cost too; its 624x368 clips have 0.57x the reference pixels, which the
    frames x pixels scaling applies.
``tiny`` / ``tiny-wan2.2`` / ``tiny-hunyuan`` (random tiny builds of the same classes, CPU-sized): 1-2 GB, minutes.
    GPU rules still ask for a GPU so a demo run schedules like a real one; set
    ``resources.rules.<rule>.gpu: 0`` to keep tiny runs off GPU nodes. A real backend whose
    ``model.path`` is a local folder with under 1 GiB of weights (the bundled toy model,
    models/toy-wan2.1-i2v: 9 MB) gets these figures too.

Config (all optional)::

    model: {backend: tiny}           # which default figures apply
    retries: 1                       # Snakemake `retries:` for every rule (or resources.retries)
    resources:
      retry_factor: 1.5              # memory/runtime growth per attempt
      gpu_model: null                # e.g. "a100": SLURM --gpus=a100:1 on GPU rules
      rules:                         # per rule, any backend
        train_lora: {mem_mb: 96000, runtime: 240, threads: 8, gpu_model: h100}
      backends:                      # per backend and rule (wins over `rules`)
        wan2.1-i2v-720p: {train_lora: {mem_mb: 80000}}
"""

from __future__ import annotations

import functools
import math
import os
from pathlib import Path

# Reference video size the base figures are given for (frames x width x height).
REFERENCE_FRAMES, REFERENCE_WIDTH, REFERENCE_HEIGHT = 49, 832, 480

GPU_RULES = ("caption", "train_prior", "train_lora", "infer", "score", "masks_sam")
CPU_RULES = ("prepare", "masks", "aggregate", "demo_data", "composite", "side_by_side", "bar_charts")

# Keys of one rule's figures: gpu (count), mem_mb, runtime (minutes), threads, and the
# fractions of memory / runtime that scale with the video size (0 = fixed cost).
_REAL = {
    "caption": dict(gpu=1, mem_mb=16000, runtime=10, threads=4, mem_scale=0.0, runtime_scale=0.0),
    "train_lora": dict(gpu=1, mem_mb=64000, runtime=120, threads=8, mem_scale=0.3, runtime_scale=0.9),
    # The mask prior: a train_lora job of prior.steps steps (2000 at 5.7-7.0 s/step, 49 frames, H200:
    # 3.2-3.9 h; the runtime leaves room for a slower GPU).
    "train_prior": dict(gpu=1, mem_mb=64000, runtime=480, threads=8, mem_scale=0.3, runtime_scale=0.9),
    "infer": dict(gpu=1, mem_mb=64000, runtime=45, threads=8, mem_scale=0.2, runtime_scale=0.8),
    "score": dict(gpu=1, mem_mb=32000, runtime=30, threads=4, mem_scale=0.2, runtime_scale=0.9),
    "prepare": dict(gpu=0, mem_mb=4000, runtime=10, threads=2, mem_scale=0.8, runtime_scale=0.9),
    "masks": dict(gpu=0, mem_mb=4000, runtime=15, threads=2, mem_scale=0.8, runtime_scale=0.9),
    "masks_sam": dict(gpu=1, mem_mb=16000, runtime=15, threads=4, mem_scale=0.3, runtime_scale=0.8),
    "aggregate": dict(gpu=0, mem_mb=2000, runtime=5, threads=1, mem_scale=0.0, runtime_scale=0.0),
    "demo_data": dict(gpu=0, mem_mb=2000, runtime=5, threads=1, mem_scale=0.0, runtime_scale=0.0),
    "composite": dict(gpu=0, mem_mb=4000, runtime=10, threads=1, mem_scale=0.8, runtime_scale=0.9),
    "side_by_side": dict(gpu=0, mem_mb=4000, runtime=10, threads=1, mem_scale=0.8, runtime_scale=0.9),
    "bar_charts": dict(gpu=0, mem_mb=2000, runtime=5, threads=1, mem_scale=0.0, runtime_scale=0.0),
}
_TINY = {
    "caption": dict(gpu=1, mem_mb=2000, runtime=5, threads=1, mem_scale=0.0, runtime_scale=0.0),
    "train_lora": dict(gpu=1, mem_mb=2000, runtime=10, threads=1, mem_scale=0.5, runtime_scale=0.9),
    "train_prior": dict(gpu=1, mem_mb=4000, runtime=60, threads=1, mem_scale=0.5, runtime_scale=0.9),
    "infer": dict(gpu=1, mem_mb=2000, runtime=10, threads=1, mem_scale=0.5, runtime_scale=0.9),
    "score": dict(gpu=1, mem_mb=2000, runtime=10, threads=1, mem_scale=0.5, runtime_scale=0.9),
    "prepare": dict(gpu=0, mem_mb=1000, runtime=5, threads=1, mem_scale=0.8, runtime_scale=0.9),
    "masks": dict(gpu=0, mem_mb=1000, runtime=5, threads=1, mem_scale=0.8, runtime_scale=0.9),
    "masks_sam": dict(gpu=1, mem_mb=2000, runtime=5, threads=1, mem_scale=0.5, runtime_scale=0.9),
    "aggregate": dict(gpu=0, mem_mb=1000, runtime=5, threads=1, mem_scale=0.0, runtime_scale=0.0),
    "demo_data": dict(gpu=0, mem_mb=1000, runtime=5, threads=1, mem_scale=0.0, runtime_scale=0.0),
    "composite": dict(gpu=0, mem_mb=1000, runtime=5, threads=1, mem_scale=0.8, runtime_scale=0.9),
    "side_by_side": dict(gpu=0, mem_mb=1000, runtime=5, threads=1, mem_scale=0.8, runtime_scale=0.9),
    "bar_charts": dict(gpu=0, mem_mb=1000, runtime=5, threads=1, mem_scale=0.0, runtime_scale=0.0),
}
# Wan2.2-A14B holds two 14B experts, so its training/inference host memory is larger.
_A14B = {
    **_REAL,
    "train_lora": {**_REAL["train_lora"], "mem_mb": 96000},
    "train_prior": {**_REAL["train_prior"], "mem_mb": 96000},
    "infer": {**_REAL["infer"], "mem_mb": 96000},
}

DEFAULT_RESOURCES: dict[str, dict[str, dict]] = {
    "tiny": _TINY,
    "tiny-wan2.2": _TINY,
    "wan2.1-i2v-480p": _REAL,
    # Same model at a larger size: the frames x pixels scaling covers 1280x720.
    "wan2.1-i2v-720p": _REAL,
    "wan2.2-i2v-a14b": _A14B,
    "tiny-hunyuan": _TINY,
    "hunyuanvideo-i2v": _REAL,  # see the module docstring: same weight sizes, video-size scaling
}
DEFAULT_BACKEND = "tiny"  # as backends.registry.DEFAULT_BACKEND
DEFAULT_RETRIES = 1
DEFAULT_RETRY_FACTOR = 1.5

SMALL_CHECKPOINT_BYTES = 2**30
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")

_ALLOWED_KEYS = {"gpu", "mem_mb", "runtime", "threads", "mem_scale", "runtime_scale", "gpu_model", "retries"}


def _section(cfg: dict) -> dict:
    return (cfg or {}).get("resources") or {}


def backend_name(cfg: dict) -> str:
    return ((cfg or {}).get("model") or {}).get("backend", DEFAULT_BACKEND)


@functools.lru_cache(maxsize=16)
def checkpoint_bytes(path: str | None) -> int | None:
    """Total size of the weight files in a local model folder; None when `path` is not one."""
    if not path or not os.path.isdir(path):
        return None
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.suffix in WEIGHT_SUFFIXES)


def default_figures(cfg: dict) -> dict[str, dict]:
    """The backend's default table; the tiny one for a local checkpoint under SMALL_CHECKPOINT_BYTES."""
    backend = backend_name(cfg)
    size = checkpoint_bytes(((cfg or {}).get("model") or {}).get("path"))
    if backend in DEFAULT_RESOURCES and size is not None and size < SMALL_CHECKPOINT_BYTES:
        return _TINY
    return DEFAULT_RESOURCES.get(backend, {})


def rule_figures(cfg: dict, rule: str) -> dict:
    """Base figures of ``rule`` for the configured backend: defaults, then `rules`, then `backends`."""
    section = _section(cfg)
    backend = backend_name(cfg)
    overrides = [
        (section.get("rules") or {}).get(rule) or {},
        ((section.get("backends") or {}).get(backend) or {}).get(rule) or {},
    ]
    table = default_figures(cfg)
    base = table.get(rule)
    if base is None and not any(overrides):
        known = sorted(table or _REAL)
        raise KeyError(
            f"resources: no figures for rule {rule!r} (backend {backend!r}); "
            f"known rules: {known}; add resources.rules.{rule}"
        )
    figures = dict(base or {})
    for extra in overrides:
        unknown = set(extra) - _ALLOWED_KEYS
        if unknown:
            raise ValueError(f"resources.{rule}: unknown keys {sorted(unknown)}; allowed: {sorted(_ALLOWED_KEYS)}")
        figures.update(extra)
    missing = {"gpu", "mem_mb", "runtime", "threads"} - set(figures)
    if missing:
        raise ValueError(f"resources.{rule}: missing {sorted(missing)} (backend {backend!r} has no defaults)")
    return figures


def size_factor(frames: int, width: int, height: int) -> float:
    """frames x pixels relative to the reference 49 x 832 x 480."""
    if min(frames, width, height) <= 0:
        raise ValueError(f"video size must be positive, got {frames} frames at {width}x{height}")
    return (frames * width * height) / (REFERENCE_FRAMES * REFERENCE_WIDTH * REFERENCE_HEIGHT)


def _scaled(base: float, scale_fraction: float, size: float, growth: float) -> float:
    # fixed part + video-size part, then the retry growth
    return base * ((1.0 - scale_fraction) + scale_fraction * size) * growth


def rule_resources(
    cfg: dict, rule: str, attempt: int = 1, frames: int = 49, width: int = 832, height: int = 480
) -> dict:
    """Resources of one job of ``rule`` at Snakemake ``attempt`` (1-based) for a video of the given size.

    Returns {gpu, mem_mb, runtime (minutes), threads} plus gpu_model when set for a GPU rule.
    """
    if attempt < 1:
        raise ValueError(f"attempt is 1-based, got {attempt}")
    figures = rule_figures(cfg, rule)
    section = _section(cfg)
    growth = float(section.get("retry_factor", DEFAULT_RETRY_FACTOR)) ** (attempt - 1)
    size = size_factor(frames, width, height)
    out = {
        "gpu": int(figures["gpu"]),
        # Round memory up to 100 MB steps: never under the estimate, readable in squeue.
        "mem_mb": math.ceil(_scaled(figures["mem_mb"], figures.get("mem_scale", 0.0), size, growth) / 100) * 100,
        "runtime": math.ceil(_scaled(figures["runtime"], figures.get("runtime_scale", 0.0), size, growth)),
        "threads": int(figures["threads"]),
    }
    gpu_model = figures.get("gpu_model", section.get("gpu_model"))
    if gpu_model and out["gpu"] > 0:
        out["gpu_model"] = str(gpu_model)
    return out


def retries(cfg: dict, rule: str | None = None) -> int:
    """How often Snakemake retries a failed job of ``rule``.

    ``resources.rules.<rule>.retries``, else ``resources.retries``, else top-level ``retries``, else 1.
    """
    section = _section(cfg)
    value = section.get("retries", (cfg or {}).get("retries", DEFAULT_RETRIES))
    if rule is not None:
        value = rule_figures(cfg, rule).get("retries", value)
    value = int(value)
    if value < 0:
        raise ValueError(f"resources.retries must be >= 0, got {value}")
    return value
