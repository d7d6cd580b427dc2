"""Put a memory plan onto a transformer (training), compile for inference, park an idle expert.

`setup_training` is what `stages.prepare_for_training` calls after the LoRA is attached: it
plans (`plan.choose`, logged with its reason), places the model on the device (frozen weights
of streamed blocks stay in host masters), installs the checkpoint function (streamer, activation
offload, kept attention outputs), the attention backend and torch.compile.
"""

from __future__ import annotations

import dataclasses
import logging

import torch

from . import attention, fp8
from .activations import ActivationOffload
from .checkpointing import BlockCheckpoint
from .plan import MemoryPlan, ModelSizes, choose
from .streamer import BlockWeightStreamer

log = logging.getLogger(__name__)
GB = 1e9


@dataclasses.dataclass
class Applied:
    plan: MemoryPlan | None
    streamer: BlockWeightStreamer | None
    offload: ActivationOffload | None


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
    return max((s["latents"].shape[2] // pt) * (s["latents"].shape[3] // ph) * (s["latents"].shape[4] // pw)
               for s in samples)


def free_gpu_bytes(train_cfg: dict, device: torch.device) -> float | None:
    """`train.gpu_memory_gb` when set (a budget on a shared GPU), else what CUDA reports free."""
    if train_cfg.get("gpu_memory_gb"):
        return float(train_cfg["gpu_memory_gb"]) * GB
    if device.type == "cuda":
        return float(torch.cuda.mem_get_info(device)[0])
    return None


def plan_training(transformer, train_cfg: dict, device: torch.device, tokens: int) -> MemoryPlan:
    backend, why = attention.pick_backend(device)
    if train_cfg.get("attention_backend") not in (None, "auto"):
        why = "asked for"
    plan = choose(train_cfg, ModelSizes.of(transformer), tokens, device, free_gpu_bytes(train_cfg, device), backend)
    log.info("%s; attention: %s", plan.describe(), why)
    return plan


def place(transformer: torch.nn.Module, device: torch.device, skip: set[int] = frozenset()) -> None:
    """Move every parameter and buffer to `device`, except the parameters whose id is in `skip`."""
    for p in transformer.parameters():
        if id(p) not in skip:
            p.data = p.data.to(device)
    for module in transformer.modules():
        for name, buffer in module._buffers.items():
            if buffer is not None:
                module._buffers[name] = buffer.to(device)


def apply_plan(transformer, plan: MemoryPlan, device: torch.device) -> Applied:
    n = len(transformer.blocks)
    streamer = None
    if plan.streams(n):
        streamer = BlockWeightStreamer(transformer.blocks, device, plan.resident_blocks, plan.stream_slots).attach()
        log.info("streaming %d of %d blocks: %.2f GB host masters, %.2f GB device slots", n - plan.resident_blocks, n,
                 streamer.host_bytes() / GB, streamer.device_bytes() / GB)
    place(transformer, device, streamer.managed_parameters() if streamer else set())
    offload = ActivationOffload() if plan.offload_activations else None
    if plan.gradient_checkpointing:
        transformer.enable_gradient_checkpointing(BlockCheckpoint(streamer, offload, plan.save_attention))
    if plan.attention_backend:
        transformer.set_attention_backend(plan.attention_backend)
    if plan.compile:
        if streamer is not None:
            log.warning("train.compile: not with streamed blocks (their weights move between calls); not compiling")
        else:
            transformer.compile_repeated_blocks(fullgraph=not plan.save_attention, dynamic=False)
    return Applied(plan, streamer, offload)


def setup_training(transformer, train_cfg: dict, device: torch.device, tokens: int | None) -> Applied:
    """Plan for `tokens` (None: the plan ignores the activation size) and apply; a transformer
    without Wan's `blocks` (HunyuanVideo) is only placed on the device."""
    if not hasattr(transformer, "blocks"):
        log.info("train.memory: %s has no `blocks`; plain placement on %s", type(transformer).__name__, device)
        place(transformer, device)
        return Applied(None, None, None)
    if train_cfg.get("fp8_matmul"):  # before planning and streaming: the blocks' frozen weights become fp8
        if train_cfg.get("fp8_weights"):
            raise ValueError("train.fp8_matmul and train.fp8_weights exclude each other (both store fp8 weights)")
        log.info("train.fp8_matmul: %d frozen block Linear layers run fp8 matmuls", fp8.enable_fp8_matmuls(transformer.blocks))
    plan = plan_training(transformer, train_cfg, device, tokens or 0)
    return apply_plan(transformer, plan, device)


def park(transformer) -> None:
    """Detach the streamer (if any) and move the whole model to the CPU (the idle Wan2.2 expert)."""
    fn = getattr(transformer, "_gradient_checkpointing_func", None)
    if isinstance(fn, BlockCheckpoint) and fn.streamer is not None:
        fn.streamer.detach()
        fn.streamer = None
    place(transformer, torch.device("cpu"))
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def prepare_for_inference(transformers: list, infer_cfg: dict, device: torch.device) -> None:
    """`infer.compile` (auto: on CUDA) and `infer.attention_backend` (auto: `attention.pick_backend`)."""
    compile_ = infer_cfg.get("compile", "auto")
    compile_ = device.type == "cuda" if compile_ in (None, "auto") else bool(compile_)
    backend = infer_cfg.get("attention_backend", "auto")
    backend = attention.pick_backend(device)[0] if backend in (None, "auto") else backend
    for transformer in transformers:
        if backend:
            transformer.set_attention_backend(backend)
        if compile_ and getattr(transformer, "_repeated_blocks", None):
            transformer.compile_repeated_blocks(fullgraph=True, dynamic=False)
        elif compile_:
            log.info("inference: %s declares no repeated blocks; not compiled", type(transformer).__name__)
    log.info("inference: compile %s, attention %s", compile_, backend or "default")
