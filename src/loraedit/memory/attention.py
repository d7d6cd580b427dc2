"""Pick the attention kernel on purpose, and check with the profiler which one ran.

Order on CUDA: FlashAttention-3 (diffusers `_flash_3`) when `flash_attn_interface` is
installed; else cuDNN SDPA (`_native_cudnn`) when the bundled cuDNN is >= 9.15 (older cuDNN
versions had wrong results for sequence lengths not divisible by 128, and Wan's 20,280 tokens
are not: 20,280 mod 128 = 56); else PyTorch's FlashAttention-2 (`_native_flash`).
"""

from __future__ import annotations

import importlib.util
import re

import torch

CUDNN_MIN = 91500  # torch.backends.cudnn.version() of cuDNN 9.15

# Substrings of the CUDA kernel names each backend launches (case-insensitive regex).
KERNEL_PATTERNS = {
    "_native_cudnn": r"cudnn|sdpa_sm\d+|fmha_.*cudnn",
    "_native_flash": r"flash",
    "flash": r"flash",
    "_flash_3": r"flash",
    "_native_efficient": r"fmha|efficient|mem_eff",
}
ATTENTION_KERNEL = re.compile(r"flash|fmha|cudnn|sdpa|attention|mem_eff", re.IGNORECASE)


def pick_backend(device: torch.device) -> tuple[str | None, str]:
    """(diffusers attention backend or None for PyTorch's own choice, why)."""
    if device.type != "cuda":
        return None, "not CUDA: PyTorch SDPA"
    if importlib.util.find_spec("flash_attn_interface") is not None:
        return "_flash_3", "FlashAttention-3 is installed"
    version = torch.backends.cudnn.version() or 0
    if version >= CUDNN_MIN:
        return "_native_cudnn", f"cuDNN {version} >= {CUDNN_MIN}"
    return "_native_flash", f"cuDNN {version} < {CUDNN_MIN} (sequence lengths not divisible by 128)"


def active_backend(model: torch.nn.Module) -> str:
    """The diffusers attention backend `model`'s attention runs: its processors' own, else the
    process-wide active one (`set_attention_backend` sets both; "native" is PyTorch's choice)."""
    from diffusers.models.attention_dispatch import _AttentionBackendRegistry

    for module in model.modules():
        backend = getattr(getattr(module, "processor", None), "_attention_backend", None)
        if backend is not None:
            return getattr(backend, "value", str(backend))
    active = _AttentionBackendRegistry._active_backend
    return getattr(active, "value", str(active))


def attention_kernels(names: list[str]) -> list[str]:
    """The kernel names that look like attention."""
    return sorted({n for n in names if ATTENTION_KERNEL.search(n)})


def kernel_matches(backend: str | None, kernels: list[str]) -> bool | None:
    """Did the kernels of `backend` run? None when there is no expectation (default backend)."""
    pattern = KERNEL_PATTERNS.get(backend or "")
    if pattern is None:
        return None
    return any(re.search(pattern, k, re.IGNORECASE) for k in kernels)


def profile_kernels(fn) -> list[str]:
    """Names of the CUDA kernels launched by `fn()` (torch.profiler)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    return sorted({e.name for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA})
