"""Device and dtype names from the config ("auto", "cuda:1", "bf16" ...) -> torch objects.

One place for every stage (captions, the Wan models, metrics), so "auto" means the same thing
everywhere: the first CUDA device when there is one, else the CPU.
"""

from __future__ import annotations

import torch

DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    if device is None or str(device) in ("", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(
    dtype: str | torch.dtype | None, device: torch.device, auto_gpu: torch.dtype = torch.bfloat16
) -> torch.dtype:
    """'auto'/None -> `auto_gpu` on CUDA, float32 on the CPU; else a name from DTYPES."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype is None or dtype == "auto":
        return auto_gpu if device.type == "cuda" else torch.float32
    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r}: expected one of auto, {', '.join(DTYPES)}")
    return DTYPES[dtype]


def device_and_dtype(
    device: str | torch.device | None = "auto", dtype: str | torch.dtype | None = "auto"
) -> tuple[torch.device, torch.dtype]:
    """A config section's `device` and `dtype` keys, resolved together ('auto' dtype: bf16 on CUDA)."""
    resolved = resolve_device(device)
    return resolved, resolve_dtype(dtype, resolved)
