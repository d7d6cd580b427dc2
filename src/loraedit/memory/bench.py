"""The GPU benchmark's memory/speed modes (`benchmarks/gpu_scale.py --modes`) and its LoRA
correctness check: every mode trains the same LoRA as the plain bf16 mode, or it FAILED.

Each mode is the `train:` config a user would write (plus torch.compile, which the benchmark
applies itself so that `--compile-backend` is honoured).
"""

from __future__ import annotations

import torch

from .checkpointing import BlockCheckpoint
from .plan import MemoryPlan, ModelSizes, estimate

MODES = {
    "bf16": "bf16 weights, gradient checkpointing, PyTorch's own SDPA choice (the baseline)",
    "fp8": "fp8 weight storage (layerwise casting, bf16 compute), gradient checkpointing",
    "offload": "diffusers group offloading to CPU (CUDA streams), gradient checkpointing (the old mode)",
    "compile": "bf16 weights, gradient checkpointing, torch.compile of the transformer blocks",
    "attn": "bf16 + the attention kernel memory.attention.pick_backend chooses",
    "fast": "train.memory: fast: picked attention kernel + attention outputs kept + torch.compile",
    "low": "train.memory: low, every block streamed (--resident-blocks) + block inputs in host memory",
    "low20": "train.memory: low for a 20 GB budget: as many resident blocks as fit, the rest streamed",
    "auto": "train.memory: auto for the free memory of this GPU",
    "fp8mm": "bf16 + fp8 matmuls (rowwise-scaled torch._scaled_mm) for the frozen block Linears; not a default",
}
COMPILED = ("compile", "fast")
PLAIN = {"memory": "fast", "compile": False, "selective_checkpointing": False, "attention_backend": "native"}


def train_config(mode: str, offload_blocks: int = 1, resident_blocks: int = 0) -> dict:
    """The `train:` keys of `mode` (torch.compile excluded: see COMPILED)."""
    configs = {
        "bf16": PLAIN,
        "fp8": {**PLAIN, "fp8_weights": True},
        "offload": {**PLAIN, "offload_blocks_per_group": offload_blocks},
        "compile": PLAIN,
        "attn": {**PLAIN, "attention_backend": None},
        "fast": {"memory": "fast", "compile": False, "selective_checkpointing": True},
        "low": {"memory": "low", "resident_blocks": resident_blocks, "offload_activations": True},
        "low20": {"memory": "low", "gpu_memory_gb": 20.0 / 0.9, "memory_fraction": 0.9},
        "auto": {"memory": "auto"},
        "fp8mm": {**PLAIN, "fp8_matmul": True},
    }
    return dict(configs[mode])


def estimated_peak_gb(transformer, tokens: int, compiled: bool) -> float:
    """The memory model's peak for the set-up the transformer actually has (to compare with the
    measured peak): resident blocks, offload and kept attention read from its checkpoint function."""
    fn = getattr(transformer, "_gradient_checkpointing_func", None)
    ours = isinstance(fn, BlockCheckpoint)
    n = len(transformer.blocks)
    plan = MemoryPlan(
        "measured",
        fn.streamer.resident if ours and fn.streamer else n,
        ours and fn.offload is not None,
        transformer.is_gradient_checkpointing,
        ours and fn.save_attention,
        compiled,
        None,
    )
    return estimate(plan, ModelSizes.of(transformer), tokens)[0] / 1e9


def lora_update(after: dict[str, torch.Tensor], before: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """after - before, per LoRA tensor, in fp32 on the CPU."""
    return {k: after[k].float() - before[k].float() for k in before}


def _norm(tensors) -> float:
    return float(torch.sqrt(sum((t.double() ** 2).sum() for t in tensors)))


def compare_updates(update: dict[str, torch.Tensor], reference: dict[str, torch.Tensor], tolerance: float) -> dict:
    """||update - reference|| / ||reference|| over all LoRA tensors; FAILED when the LoRA did not
    move, or moved differently (relative difference above `tolerance`)."""
    if update.keys() != reference.keys():
        return {"status": "FAILED", "why": "different LoRA tensors than the reference"}
    ref_norm = _norm(reference.values())
    norm = _norm(update.values())
    diff = _norm(update[k] - reference[k] for k in reference)
    out = {
        "update_norm": norm,
        "reference_norm": ref_norm,
        "relative_difference": diff / ref_norm if ref_norm > 0 else None,
        "tolerance": tolerance,
    }
    if ref_norm == 0:
        return {**out, "status": "FAILED", "why": "the reference LoRA did not move"}
    if norm == 0:
        return {**out, "status": "FAILED", "why": "the LoRA did not move"}
    if diff / ref_norm > tolerance:
        return {**out, "status": "FAILED", "why": "the LoRA moved differently from the bf16 mode"}
    return {**out, "status": "ok", "why": ""}
