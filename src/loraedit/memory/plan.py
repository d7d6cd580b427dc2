"""`train.memory: auto | fast | low`: which memory/speed mode to train in, and why.

A memory model estimates the peak GPU memory of a plan (bytes):

    weights      frozen weights outside the blocks + resident blocks (+ device slots when streaming)
    lora         trainable parameters x 16 (fp32 weight, gradient, two AdamW moments)
    checkpoints  one (tokens x dim) residual-stream tensor per block (2 in flight when offloaded)
    attention    one more per block when attention outputs are kept (selective checkpointing)
    working      the backward working set of one block: linear in tokens, fitted to the measured
                 H200 numbers in benchmarks/results (eager and compiled), scaled by model dim

and the host memory of the low mode (pinned masters of the streamed blocks + offloaded inputs).

`choose` walks the modes from the fastest to the leanest and takes the first one whose estimate
fits `memory_fraction` of the free GPU memory: fast with attention outputs kept; fast; low with
as many resident blocks as fit (all resident = only the activations offloaded). Explicit knobs
(`resident_blocks`, `offload_activations`, `selective_checkpointing`, `compile`,
`attention_backend`) override the choice. On a CPU device there is no limit to respect: the plan
is the plain model.

Given verification records (`verified.Verified`), `auto` only walks the plans whose accelerations
(beyond the explicit knobs) a passing record covers, plus the plain plan (bf16, checkpointing,
no compile, no streaming, PyTorch attention); an explicit `fast` or `low` is taken as asked.
When nothing fits, the plan says so (`fits` False) and `shortfall` is the one-line error.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch

from .verified import Verified

MODES = ("auto", "fast", "low")
GB = 1e9
LORA_BYTES_PER_PARAM = 16  # fp32 weight + fp32 gradient + AdamW exp_avg + exp_avg_sq


class GpuMemoryError(RuntimeError):
    """Training does not fit this GPU with these settings; the message says what to change."""


@dataclasses.dataclass(frozen=True)
class ModelSizes:
    """What the memory model needs to know about a transformer (after the LoRA is attached)."""

    num_blocks: int
    block_bytes: int  # frozen parameters of the largest block, as stored (bf16, fp8, ...)
    other_bytes: int  # frozen parameters and buffers outside the blocks
    trainable_params: int
    dim: int
    activation_bytes: int = 2  # bytes per element of the residual stream (bf16)

    @classmethod
    def of(cls, transformer: torch.nn.Module) -> ModelSizes:
        blocks = list(transformer.blocks)
        in_blocks = {id(p) for b in blocks for p in b.parameters()}

        def frozen_bytes(params) -> int:
            return sum(p.numel() * p.element_size() for p in params if not p.requires_grad)

        other = frozen_bytes(p for p in transformer.parameters() if id(p) not in in_blocks)
        other += sum(b.numel() * b.element_size() for b in transformer.buffers())
        floats = [p.dtype for p in transformer.parameters() if p.dtype.is_floating_point and not p.requires_grad]
        wide = torch.float32 in floats and torch.bfloat16 not in floats and torch.float16 not in floats
        return cls(
            num_blocks=len(blocks),
            block_bytes=max(frozen_bytes(b.parameters()) for b in blocks),
            other_bytes=other,
            trainable_params=sum(p.numel() for p in transformer.parameters() if p.requires_grad),
            dim=transformer.config.num_attention_heads * transformer.config.attention_head_dim,
            activation_bytes=4 if wide else 2,
        )


@dataclasses.dataclass(frozen=True)
class Calibration:
    """Backward working set of one block = intercept + slope x tokens (at `dim`), eager kernels;
    compiled kernels use `compiled_ratio` of it."""

    intercept_bytes: float
    bytes_per_token: float
    dim: int
    compiled_ratio: float
    source: str

    def working(self, tokens: int, dim: int, compiled: bool) -> float:
        eager = max(0.0, self.intercept_bytes + self.bytes_per_token * tokens) * dim / self.dim
        return eager * (self.compiled_ratio if compiled else 1.0)


# Fitted by `calibrate(benchmarks/results)` from h200-2026-11-28.json (Wan2.1-I2V-14B, rank 16:
# bf16 at 6,240 and 20,280 tokens, compile at 20,280); tests/test_memory_plan.py checks that the
# fit of the committed files still gives these numbers.
MEASURED = Calibration(
    intercept_bytes=-0.1092e9,
    bytes_per_token=0.4570e6,
    dim=5120,
    compiled_ratio=0.7045,
    source="benchmarks/results/h200-2026-11-28.json",
)


@dataclasses.dataclass(frozen=True)
class MemoryPlan:
    mode: str  # fast | low (what auto chose, or what was asked)
    resident_blocks: int  # 0..num_blocks; num_blocks: nothing is streamed
    offload_activations: bool
    gradient_checkpointing: bool
    save_attention: bool  # selective checkpointing: attention outputs kept, not recomputed
    compile: bool
    attention_backend: str | None  # a diffusers attention backend name; None: PyTorch's choice
    stream_slots: int = 2
    gpu_bytes: float | None = None  # the memory model's estimate of the peak
    host_bytes: float | None = None
    reason: str = ""
    fits: bool | None = None  # None: nothing to fit (not CUDA, or the free memory is unknown)
    free_bytes: float | None = None
    usable_bytes: float | None = None  # memory_fraction x free_bytes
    note: str = ""  # a warning for the log (auto took the plain plan: nothing verified)

    def streams(self, num_blocks: int) -> bool:
        return self.resident_blocks < num_blocks

    def describe(self) -> str:
        est = (
            ""
            if self.gpu_bytes is None
            else f"; estimated peak {self.gpu_bytes / GB:.1f} GB GPU, {self.host_bytes / GB:.1f} GB host"
        )
        return (
            f"train.memory -> {self.mode}: resident blocks {self.resident_blocks}, offload activations "
            f"{self.offload_activations}, checkpointing {self.gradient_checkpointing}, keep attention "
            f"{self.save_attention}, compile {self.compile}, attention {self.attention_backend or 'default'}"
            f"{est} ({self.reason})"
        )


def estimate(
    plan: MemoryPlan, sizes: ModelSizes, tokens: int, calibration: Calibration = MEASURED
) -> tuple[float, float]:
    """(peak GPU bytes, host bytes) of training with `plan` at `tokens` latent tokens."""
    n = sizes.num_blocks
    block_input = tokens * sizes.dim * sizes.activation_bytes  # (1, tokens, dim)
    streamed = n - plan.resident_blocks
    slots = min(plan.stream_slots, streamed)
    weights = sizes.other_bytes + (plan.resident_blocks + slots) * sizes.block_bytes
    lora = sizes.trainable_params * LORA_BYTES_PER_PARAM
    if plan.gradient_checkpointing:
        checkpoints = (min(2, n) if plan.offload_activations else n) * block_input
        attention = n * block_input if plan.save_attention else 0
        working = calibration.working(tokens, sizes.dim, plan.compile)
    else:  # every block's working set is kept for the backward pass
        checkpoints, attention = n * block_input, 0
        working = n * calibration.working(tokens, sizes.dim, plan.compile)
    host = streamed * sizes.block_bytes + (max(0, n - 1) * block_input if plan.offload_activations else 0)
    return weights + lora + checkpoints + attention + working, host


def _knob(cfg: dict, key: str):
    value = cfg.get(key)
    return None if value in (None, "auto") else value


def features(plan: MemoryPlan, num_blocks: int) -> frozenset[str]:
    """The accelerations a plan uses, as verification records name them (`verified.MODE_FEATURES`)."""
    out = {
        name
        for name, on in (
            ("compile", plan.compile),
            ("keep_attention", plan.save_attention),
            ("stream", plan.streams(num_blocks) or plan.offload_activations),
        )
        if on
    }
    if plan.attention_backend not in (None, "native"):
        out.add(f"attention:{plan.attention_backend}")
    return frozenset(out)


def explicit_features(cfg: dict) -> frozenset[str]:
    """The accelerations the `train:` knobs ask for by name: taken as asked, verified or not."""
    out = {
        name
        for name, key in (
            ("compile", "compile"),
            ("keep_attention", "selective_checkpointing"),
            ("stream", "offload_activations"),
        )
        if _knob(cfg, key)
    }
    if _knob(cfg, "resident_blocks") is not None:
        out.add("stream")
    if _knob(cfg, "attention_backend"):
        out.add(f"attention:{cfg['attention_backend']}")
    return frozenset(out)


def _with_estimate(
    plan: MemoryPlan, sizes: ModelSizes, tokens: int, calibration: Calibration, reason: str
) -> MemoryPlan:
    gpu, host = estimate(plan, sizes, tokens, calibration)
    return dataclasses.replace(plan, gpu_bytes=gpu, host_bytes=host, reason=reason)


def candidates(cfg: dict, sizes: ModelSizes, fast_backend: str | None) -> list[MemoryPlan]:
    """Plans from the fastest to the leanest, honouring the explicit knobs in `cfg` (train config)."""
    mode = cfg.get("memory") or "auto"
    if mode not in MODES:
        raise ValueError(f"train.memory: unknown mode {mode!r}; choose one of {', '.join(MODES)}")
    n = sizes.num_blocks
    slots = int(cfg.get("stream_slots") or 2)
    backend = _knob(cfg, "attention_backend") or fast_backend
    fast = [MemoryPlan("fast", n, False, True, keep, True, backend, slots) for keep in (True, False)]
    low = [MemoryPlan("low", r, True, True, False, False, backend, slots) for r in range(n, -1, -1)]
    plans = {"auto": fast + low, "fast": fast, "low": low}[mode]
    out = []
    for plan in plans:
        plan = _forced(plan, cfg, n)
        if plan not in out:
            out.append(plan)
    return out


def plain_plan(cfg: dict, sizes: ModelSizes) -> MemoryPlan:
    """bf16 with gradient checkpointing, nothing else (the measured baseline), with the explicit knobs."""
    n = sizes.num_blocks
    plan = MemoryPlan(
        "plain", n, False, True, False, False, _knob(cfg, "attention_backend"), int(cfg.get("stream_slots") or 2)
    )
    return _forced(plan, cfg, n, mode="plain")


def _forced(plan: MemoryPlan, cfg: dict, n: int, mode: str = "fast") -> MemoryPlan:
    """`plan` with the explicit knobs of `cfg` applied; streaming or offloading makes it `low`."""
    resident = _knob(cfg, "resident_blocks")
    forced = {
        "resident_blocks": None if resident is None else min(int(resident), n),
        "offload_activations": _knob(cfg, "offload_activations"),
        "save_attention": _knob(cfg, "selective_checkpointing"),
        "compile": _knob(cfg, "compile"),
    }
    plan = dataclasses.replace(plan, **{k: v for k, v in forced.items() if v is not None})
    lean = plan.resident_blocks < n or plan.offload_activations
    return dataclasses.replace(
        plan, mode="low" if lean else mode, gradient_checkpointing=plan.gradient_checkpointing or lean
    )


def verified_candidates(
    cfg: dict, sizes: ModelSizes, plans: list[MemoryPlan], verified: Verified
) -> tuple[list[MemoryPlan], list[str]]:
    """(auto's plans: the verified ones, the plain plan after the resident ones; the modes left out)."""
    n, explicit = sizes.num_blocks, explicit_features(cfg)
    kept = [p for p in plans if verified.covers(features(p, n) - explicit)]
    dropped = sorted({p.mode for p in plans if p not in kept})
    resident = [p for p in kept if not (p.streams(n) or p.offload_activations)]
    plain = plain_plan(cfg, sizes)
    if any(dataclasses.replace(p, mode="plain") == plain for p in kept):
        return kept, dropped  # the explicit knobs made a candidate the plain plan already
    return resident + [plain] + [p for p in kept if p not in resident], dropped


def choose(
    cfg: dict,
    sizes: ModelSizes,
    tokens: int,
    device: torch.device,
    free_bytes: float | None,
    fast_backend: str | None = None,
    calibration: Calibration = MEASURED,
    verified: Verified | None = None,
) -> MemoryPlan:
    """The plan for training at `tokens` tokens with `free_bytes` of free GPU memory (None: unknown).

    cfg: the `train:` config (memory, resident_blocks, offload_activations, selective_checkpointing,
    compile, attention_backend, stream_slots, memory_fraction, gradient_checkpointing).
    verified: the verification records of this GPU class; `auto` then walks only what they cover
    (None: every mode counts, the memory model alone decides, as for an estimate before a run).
    When nothing fits, the plan is the leanest one with `fits` False (see `shortfall`).
    """
    if device.type != "cuda":
        return _with_estimate(
            _off_gpu_plan(cfg, sizes),
            sizes,
            tokens,
            calibration,
            f"{device.type} device: no GPU memory limit; compile and attention kernels are CUDA-only",
        )
    plans, note = candidates(cfg, sizes, fast_backend), ""
    if verified is not None and (cfg.get("memory") or "auto") == "auto":
        plans, dropped = verified_candidates(cfg, sizes, plans, verified)
        note = verified.plain_note(dropped) if dropped else ""
    plan, reason, fits, usable = _fastest_fit(cfg, plans, sizes, tokens, free_bytes, calibration)
    note = note if plan.mode == "plain" else ""
    plan = dataclasses.replace(plan, fits=fits, free_bytes=free_bytes, usable_bytes=usable, note=note)
    return _with_estimate(plan, sizes, tokens, calibration, reason)


def _fastest_fit(
    cfg: dict,
    plans: list[MemoryPlan],
    sizes: ModelSizes,
    tokens: int,
    free_bytes: float | None,
    calibration: Calibration,
) -> tuple[MemoryPlan, str, bool | None, float | None]:
    """(plan, reason, fits, usable bytes): the first of `plans` that fits, else the leanest."""
    if free_bytes is None:
        return plans[0], "free GPU memory unknown: the fastest mode asked for", None, None
    usable = float(cfg.get("memory_fraction") or 0.9) * free_bytes
    room = f"{usable / GB:.1f} GB usable of {free_bytes / GB:.1f} GB free at {tokens} tokens"
    for plan in plans:
        if estimate(plan, sizes, tokens, calibration)[0] <= usable:
            return plan, f"fastest mode whose estimate fits {room}", True, usable
    lean = min(plans, key=lambda p: estimate(p, sizes, tokens, calibration)[0])
    return lean, f"no mode fits {room}", False, usable


def shortfall(plan: MemoryPlan, cfg: dict, tokens: int) -> str:
    """The one-line error of a plan that does not fit: what it needs, what there is, what to change."""
    return (
        f"train.memory: no mode fits: the leanest plan ({plan.mode}, {plan.resident_blocks} blocks resident) "
        f"needs an estimated {plan.gpu_bytes / GB:.1f} GB of GPU memory at {tokens} tokens, "
        f"{plan.usable_bytes / GB:.1f} GB is usable ({float(cfg.get('memory_fraction') or 0.9):g} x "
        f"{plan.free_bytes / GB:.1f} GB free); {fixes(cfg)}"
    )


def fixes(cfg: dict) -> str:
    """The settings that lower the peak (those not set already), or that raise the budget."""
    out = []
    if cfg.get("memory") != "low":
        out.append("train.memory: low")
    if _knob(cfg, "resident_blocks"):
        out.append(f"fewer train.resident_blocks (now {cfg['resident_blocks']})")
    if not cfg.get("fp8_weights"):
        out.append("train.fp8_weights: true")
    out.append(
        "fewer frames (prepare.num_frames)"
        if cfg.get("low_cost")
        else "train.low_cost: true or fewer frames (prepare.num_frames)"
    )
    return "try " + ", ".join(out) + "; or set train.gpu_memory_gb when CUDA's free figure is too low"


def _off_gpu_plan(cfg: dict, sizes: ModelSizes) -> MemoryPlan:
    """Off CUDA: the plain model unless `memory: low` or an explicit knob asks for more."""
    plans = candidates(cfg, sizes, None)
    plan = plans[-1] if cfg.get("memory") == "low" else plans[0]
    plan = dataclasses.replace(
        plan,
        compile=bool(_knob(cfg, "compile")),
        save_attention=bool(_knob(cfg, "selective_checkpointing")),
        attention_backend=None,
    )
    needs = plan.streams(sizes.num_blocks) or plan.offload_activations or plan.save_attention
    return dataclasses.replace(plan, gradient_checkpointing=bool(cfg.get("gradient_checkpointing")) or needs)


# ----------------------------------------------------------------------------- calibration


def calibrate(results_dir: str | Path, sizes: ModelSizes) -> Calibration:
    """Fit the working set to the measured training peaks in `results_dir` (gpu_scale.py JSON) of
    the model described by `sizes` (bf16, as benchmarked): eager from the bf16 mode (a line
    through its frame counts), compiled as a ratio at the largest token count."""
    eager, compiled, sources = {}, {}, []
    for path in sorted(Path(results_dir).glob("*.json")):
        result = json.loads(path.read_text())
        if result.get("settings", {}).get("config") != "wan14b" or result["device"]["type"] != "cuda":
            continue
        for r in result["records"]:
            if r["section"] != "train" or r.get("peak_allocated_gb") is None or not r.get("gradient_checkpointing"):
                continue
            plan = MemoryPlan("fast", sizes.num_blocks, False, True, False, False, None)
            fixed, _ = estimate(plan, sizes, r["tokens"], Calibration(0.0, 0.0, sizes.dim, 1.0, ""))
            working = r["peak_allocated_gb"] * GB - fixed
            if r["mode"] in ("bf16", "compile"):
                (eager if r["mode"] == "bf16" else compiled)[r["tokens"]] = working
                sources.append(path.name)
    if len(eager) < 2:
        raise ValueError(f"{results_dir}: need bf16 training peaks at two token counts to fit the working set")
    (t0, w0), (t1, w1) = min(eager.items()), max(eager.items())
    slope = (w1 - w0) / (t1 - t0)
    top = max(compiled) if compiled else None
    ratio = compiled[top] / (w0 + slope * (top - t0)) if top is not None else 1.0
    return Calibration(w0 - slope * t0, slope, sizes.dim, ratio, ", ".join(sorted(set(sources))))
