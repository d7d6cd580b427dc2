"""Put a memory plan onto a transformer (training), compile for inference, park an idle expert.

`setup_training` is what `stages.prepare_for_training` calls after the LoRA is attached: it
plans (`plan.choose`, logged with its reason; on CUDA `train.memory: auto` only takes what a
verification record covers for this GPU class), refuses a plan that does not fit before any
step (one line: what it needs, what there is, what to change), places the model on the device
(frozen weights of streamed blocks stay in host masters), installs the checkpoint function
(streamer, activation offload, kept attention outputs), the attention backend and torch.compile.
Then the caller's probe runs (one forward + backward, no optimizer step): each time it fails, the
failing acceleration is given up (`fallback`) and the probe runs again, so a card that refuses
one fails over to the plain path before the LoRA has changed.

`prepare_for_inference` + `run_inference` do the same for inference: a transformer call that fails
gives up compile or the attention kernel and the whole edit runs again from its seed.

Everything asked for, planned, given up and finally run is in the `MemoryRecord` returned.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import TypeVar

import torch

from . import attention, fallback, fp8
from .activations import ActivationOffload
from .checkpointing import BlockCheckpoint
from .placement import place
from .plan import GB, GpuMemoryError, MemoryPlan, ModelSizes, choose, estimate, fixes, shortfall
from .record import MemoryRecord, one_line
from .streamer import BlockWeightStreamer
from .verified import Verified, gpu_class

log = logging.getLogger(__name__)
T = TypeVar("T")

__all__ = ["Applied", "GpuMemoryError", "place", "setup_training", "prepare_for_inference", "run_inference"]


@dataclasses.dataclass
class Applied:
    plan: MemoryPlan | None
    streamer: BlockWeightStreamer | None
    offload: ActivationOffload | None
    record: MemoryRecord | None = None
    sizes: ModelSizes | None = None
    tokens: int = 0
    cfg: dict = dataclasses.field(default_factory=dict)  # the `train:` config


def patch_size_of(transformer) -> tuple[int, int, int]:
    """(t, h, w) patch of a Wan (`patch_size` tuple) or HunyuanVideo (`patch_size_t` + `patch_size`) transformer."""
    cfg = transformer.config
    if isinstance(cfg.patch_size, int):
        return cfg.get("patch_size_t", 1), cfg.patch_size, cfg.patch_size
    return tuple(cfg.patch_size)


def sample_tokens(samples: list[dict], patch_size: tuple[int, int, int]) -> int:
    """Largest latent token count among training samples (latents (1, C, T_lat, h, w)) for the
    transformer's (t, h, w) patch (`patch_size_of`; no default: the toy model's patch is not Wan's)."""
    pt, ph, pw = patch_size
    return max(
        (s["latents"].shape[2] // pt) * (s["latents"].shape[3] // ph) * (s["latents"].shape[4] // pw) for s in samples
    )


def free_gpu_bytes(train_cfg: dict, device: torch.device) -> float | None:
    """`train.gpu_memory_gb` when set (a budget on a shared GPU), else what CUDA reports free."""
    if train_cfg.get("gpu_memory_gb"):
        return float(train_cfg["gpu_memory_gb"]) * GB
    if device.type == "cuda":
        return float(torch.cuda.mem_get_info(device)[0])
    return None


def verified_for(train_cfg: dict, device: torch.device) -> Verified:
    """The verification records of this GPU's class, from the folder `train.verified_modes`."""
    return Verified.load(train_cfg.get("verified_modes"), gpu_class(torch.cuda.get_device_name(device)))


def plan_record(plan: MemoryPlan) -> dict:
    def gb(value):
        return None if value is None else round(value / GB, 2)

    return {
        "mode": plan.mode,
        "reason": plan.reason,
        "resident_blocks": plan.resident_blocks,
        "offload_activations": plan.offload_activations,
        "gradient_checkpointing": plan.gradient_checkpointing,
        "keep_attention": plan.save_attention,
        "compile": plan.compile,
        "attention_backend": plan.attention_backend,
        "estimated_peak_gb": gb(plan.gpu_bytes),
        "estimated_host_gb": gb(plan.host_bytes),
        "free_gb": gb(plan.free_bytes),
        "usable_gb": gb(plan.usable_bytes),
        "fits": plan.fits,
    }


def plan_training(
    transformer, train_cfg: dict, device: torch.device, tokens: int, record: MemoryRecord | None = None
) -> MemoryPlan:
    """`plan.choose` for this model and device (on CUDA: with its GPU class's verification records),
    logged with its reason and kept in `record`; auto's 'nothing verified' note is a warning."""
    backend, why = attention.pick_backend(device)
    if train_cfg.get("attention_backend") not in (None, "auto"):
        why = "asked for"
    verified = verified_for(train_cfg, device) if device.type == "cuda" else None
    plan = choose(
        train_cfg,
        ModelSizes.of(transformer),
        tokens,
        device,
        free_gpu_bytes(train_cfg, device),
        backend,
        verified=verified,
    )
    log.info("%s; attention: %s", plan.describe(), why)
    record = record or MemoryRecord.start("train", train_cfg, device)
    record.plan, record.verified = plan_record(plan), verified.describe() if verified else None
    if plan.note:
        record.warn(plan.note)
    return plan


def apply_plan(
    transformer,
    plan: MemoryPlan,
    device: torch.device,
    record: MemoryRecord | None = None,
    tokens: int = 0,
    cfg: dict | None = None,
) -> Applied:
    record = record or MemoryRecord.start("train", cfg or {}, device)
    applied = Applied(plan, None, None, record, ModelSizes.of(transformer), tokens, cfg or {})
    n = len(transformer.blocks)
    if plan.streams(n):
        applied.streamer = _start_streamer(transformer, applied, device)
    place(transformer, device, applied.streamer.managed_parameters() if applied.streamer else set())
    gave_up_streaming = plan.streams(n) and applied.streamer is None
    applied.offload = ActivationOffload() if plan.offload_activations and not gave_up_streaming else None
    if plan.gradient_checkpointing:
        transformer.enable_gradient_checkpointing(
            BlockCheckpoint(applied.streamer, applied.offload, plan.save_attention)
        )
    if plan.attention_backend:
        set_attention(transformer, plan.attention_backend, device, record)
    if plan.compile and applied.streamer is not None:
        record.warn("train.compile: not with streamed blocks (their weights move between calls); not compiling")
    elif plan.compile:
        compile_blocks(transformer, device, record, fullgraph=not plan.save_attention)
    return applied


def _start_streamer(transformer, applied: Applied, device: torch.device) -> BlockWeightStreamer | None:
    """The attached streamer, or None after falling back to every block resident (when that fits)."""
    plan, n, streamer = applied.plan, len(transformer.blocks), None
    try:
        streamer = BlockWeightStreamer(transformer.blocks, device, plan.resident_blocks, plan.stream_slots)
        streamer.attach()
    except Exception as e:  # noqa: BLE001 - any streamer failure: resident, if that fits
        if streamer is not None:
            streamer.detach()
        _check_resident_fits(applied, e)
        applied.record.fall_back("streaming", e, "at set-up", fallback.INSTEAD["streaming"])
        return None
    log.info(
        "streaming %d of %d blocks: %.2f GB host masters, %.2f GB device slots",
        n - plan.resident_blocks,
        n,
        streamer.host_bytes() / GB,
        streamer.device_bytes() / GB,
    )
    return streamer


def _check_resident_fits(applied: Applied, error: BaseException) -> None:
    """Streaming failed: every block resident is the way out only when the memory model says it fits."""
    plan = applied.plan
    if plan.usable_bytes is None:  # no limit known (CPU, free memory unknown)
        return
    resident = dataclasses.replace(plan, resident_blocks=applied.sizes.num_blocks, offload_activations=False)
    need = estimate(resident, applied.sizes, applied.tokens)[0]
    if need > plan.usable_bytes:
        raise GpuMemoryError(
            f"train.memory: streaming failed ({one_line(error)}) and every block resident needs an estimated "
            f"{need / GB:.1f} GB of the {plan.usable_bytes / GB:.1f} GB usable; {fixes({**applied.cfg, 'memory': 'low'})}"
        ) from error


def set_attention(transformer, backend: str, device: torch.device, record: MemoryRecord) -> bool:
    """Ask for the attention `backend`; a refusal falls back to PyTorch's choice (False)."""
    try:
        transformer.set_attention_backend(backend)
        return True
    except Exception as e:  # noqa: BLE001 - a missing or refused kernel: PyTorch's choice
        fallback.turn_off("attention", transformer, device)
        record.fall_back("attention", e, "at set-up", fallback.INSTEAD["attention"])
        return False


def compile_blocks(transformer, device: torch.device, record: MemoryRecord, fullgraph: bool) -> bool:
    """torch.compile of the repeated blocks; an error falls back to eager (False)."""
    try:
        transformer.compile_repeated_blocks(fullgraph=fullgraph, dynamic=False)
        return True
    except Exception as e:  # noqa: BLE001 - compile refused here: eager
        fallback.turn_off("compile", transformer, device)
        record.fall_back("compile", e, "at set-up", fallback.INSTEAD["compile"])
        return False


def fp8_storage(transformer, device: torch.device, record: MemoryRecord) -> bool:
    """`train.fp8_weights`: fp8 weight storage (diffusers layerwise casting, bf16 compute) where
    the device casts to fp8; else the weights stay bf16 (False, recorded)."""
    error = fp8.unsupported("storage", device)
    if error:
        record.fall_back("fp8_weights", error, "at set-up", "bf16 weights")
        return False
    transformer.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=torch.bfloat16)
    return True


def _fp8_matmuls(transformer, train_cfg: dict, device: torch.device, record: MemoryRecord) -> None:
    if train_cfg.get("fp8_weights"):
        raise ValueError("train.fp8_matmul and train.fp8_weights exclude each other (both store fp8 weights)")
    error = fp8.unsupported("matmul", device)
    if error:
        record.fall_back("fp8_matmul", error, "at set-up", fallback.INSTEAD["fp8_matmul"])
        return
    log.info(
        "train.fp8_matmul: %d frozen block Linear layers run fp8 matmuls", fp8.enable_fp8_matmuls(transformer.blocks)
    )


def setup_training(
    transformer,
    train_cfg: dict,
    device: torch.device,
    tokens: int | None,
    probe: Callable[[], None] | None = None,
    record: MemoryRecord | None = None,
) -> Applied:
    """Plan for `tokens` (None: the plan ignores the activation size), apply, then run `probe` (one
    training step without the optimizer step) until it passes; a transformer without Wan's
    `blocks` (HunyuanVideo) is only placed on the device. Raises GpuMemoryError when nothing fits."""
    record = record or MemoryRecord.start("train", train_cfg, device)
    if not hasattr(transformer, "blocks"):
        log.info("train.memory: %s has no `blocks`; plain placement on %s", type(transformer).__name__, device)
        place(transformer, device)
        applied = Applied(None, None, None, record, cfg=train_cfg)
    else:
        if train_cfg.get("fp8_matmul"):  # before planning and streaming: the blocks' frozen weights become fp8
            _fp8_matmuls(transformer, train_cfg, device, record)
        plan = plan_training(transformer, train_cfg, device, tokens or 0, record)
        if plan.fits is False:
            raise GpuMemoryError(shortfall(plan, train_cfg, tokens or 0))
        applied = apply_plan(transformer, plan, device, record, tokens or 0, train_cfg)
        if probe is not None and fallback.active(transformer):  # nothing to give up: the first step will tell
            probe_until_it_runs(transformer, applied, probe, device)
    record.ran = fallback.state(transformer)
    log.info("memory: %s", record.summary())
    return applied


def probe_until_it_runs(transformer, applied: Applied, probe: Callable[[], None], device: torch.device) -> None:
    """Run `probe`; each time it fails, give up the acceleration to blame and run it again. The
    error of the plain path (nothing left to give up) is raised as it is."""
    while True:
        try:
            probe()
            return
        except torch.OutOfMemoryError as e:
            raise GpuMemoryError(_out_of_memory(applied, e)) from e
        except Exception as e:
            name = fallback.culprit(e, fallback.active(transformer))
            if name is None:
                raise
            if name == "streaming":
                _check_resident_fits(applied, e)
                applied.streamer = applied.offload = None
            fallback.turn_off(name, transformer, device)
            applied.record.fall_back(name, e, "at the first step", fallback.INSTEAD[name])


def _out_of_memory(applied: Applied, error: BaseException) -> str:
    plan = applied.plan
    room = "" if plan.usable_bytes is None else f", {plan.usable_bytes / GB:.1f} GB usable"
    return (
        f"train.memory: the first step ran out of GPU memory in the {plan.mode} plan (estimated "
        f"{plan.gpu_bytes / GB:.1f} GB{room}; {one_line(error)}); {fixes(applied.cfg)}"
    )


def park(transformer) -> None:
    """Detach the streamer (if any) and move the whole model to the CPU (the idle Wan2.2 expert)."""
    fn = fallback.checkpoint_fn(transformer)
    if fn is not None and fn.streamer is not None:
        fn.streamer.detach()
        fn.streamer = None
    place(transformer, torch.device("cpu"))
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# ----------------------------------------------------------------------------- inference


def prepare_for_inference(transformers: list, infer_cfg: dict, device: torch.device) -> MemoryRecord:
    """`infer.compile` (auto: on CUDA) and `infer.attention_backend` (auto: `attention.pick_backend`);
    one that fails at set-up is given up for every transformer (recorded)."""
    record = MemoryRecord.start("infer", infer_cfg, device)
    compile_ = infer_cfg.get("compile", "auto")
    compile_ = device.type == "cuda" if compile_ in (None, "auto") else bool(compile_)
    backend = infer_cfg.get("attention_backend", "auto")
    backend = attention.pick_backend(device)[0] if backend in (None, "auto") else backend
    for transformer in transformers:
        if backend and not set_attention(transformer, backend, device, record):
            backend = None
        if compile_ and getattr(transformer, "_repeated_blocks", None):
            compile_ = compile_blocks(transformer, device, record, fullgraph=True)
        elif compile_:
            log.info("inference: %s declares no repeated blocks; not compiled", type(transformer).__name__)
    record.ran = inference_state(transformers)
    log.info("inference: compile %s, attention %s", record.ran["compile"], record.ran["attention_backend"])
    return record


def inference_state(transformers: list) -> dict:
    return {
        "compile": any(fallback.compiled(t) for t in transformers),
        "attention_backend": attention.active_backend(transformers[0]),
    }


class _CallWatch:
    """Counts the transformer calls begun and finished: a failure inside one is the kernels' to blame."""

    def __init__(self, modules: list):
        self.modules, self.begun, self.finished, self._handles = modules, 0, 0, []

    def __enter__(self) -> _CallWatch:
        for m in self.modules:
            self._handles += [m.register_forward_pre_hook(self._begin), m.register_forward_hook(self._finish)]
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()

    def _begin(self, *_) -> None:
        self.begun += 1

    def _finish(self, *_) -> None:
        self.finished += 1


def run_inference(edit: Callable[[], T], transformers: list, device: torch.device, record: MemoryRecord) -> T:
    """`edit()`; when it fails inside a transformer call, give up compile or the attention kernel
    (every transformer) and run the whole edit again. Nothing changes when nothing fails, and a
    rerun starts from the same seed: its output is the plain path's."""
    try:
        while True:
            calls = _CallWatch(transformers)
            try:
                with calls:
                    return edit()
            except torch.OutOfMemoryError:
                raise
            except Exception as e:
                on = [n for n in fallback.ORDER if any(n in fallback.active(t) for t in transformers)]
                name = fallback.culprit(e, on) if calls.begun > calls.finished else None
                if name is None:
                    raise
                for t in transformers:
                    if name in fallback.active(t):
                        fallback.turn_off(name, t, device)
                when = "at the first step" if calls.finished == 0 else f"after {calls.finished} transformer calls"
                record.fall_back(name, e, when, fallback.INSTEAD[name])
    finally:
        record.ran = inference_state(transformers)
