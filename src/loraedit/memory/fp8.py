"""fp8 matmuls for the frozen base Linear layers of the transformer blocks (a benchmark mode).

`enable_fp8_matmuls` quantizes each frozen block Linear once: weight (out, in) -> float8_e4m3fn
with one fp32 scale per output channel (buffer `weight_scale`, shape (1, out)). Its forward
quantizes the input per token (scale per row, shape (N, 1)) and runs `torch._scaled_mm` (fp8
tensor cores on Hopper); the backward pass computes only the input gradient, in the compute
dtype, from the dequantized weight (the base is frozen: no weight gradient, and nothing but the
weight is saved). The LoRA branches are untouched (peft calls `base_layer(x)` and adds them).

Not a default: the LoRA it trains differs from the bf16 one by the quantization error, which the
benchmark's LoRA check reports (`--modes fp8mm`).
"""

from __future__ import annotations

import functools

import torch

E4M3_MAX = float(torch.finfo(torch.float8_e4m3fn).max)  # 448


def quantize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x (N, K) -> (fp8 (N, K), fp32 scale (N, 1)) with x ~= fp8 * scale."""
    # (N,) then unsqueeze: strides (1, 1); a keepdim amax may carry stride 0 on its size-1 dim,
    # which `.contiguous()` keeps and `_scaled_mm` rejects.
    scale = (x.detach().abs().amax(dim=1).float().clamp(min=1e-12) / E4M3_MAX).unsqueeze(1)
    return (x.float() / scale).to(torch.float8_e4m3fn).contiguous(), scale


class _Fp8Matmul(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, weight_scale, out_dtype):
        # x (N, K) compute dtype; weight (M, K) fp8; weight_scale (1, M) fp32 -> (N, M) out_dtype
        x8, x_scale = quantize_rows(x)
        ctx.save_for_backward(weight, weight_scale)
        ctx.x_dtype = x.dtype
        return torch._scaled_mm(x8, weight.t(), scale_a=x_scale, scale_b=weight_scale, out_dtype=out_dtype)

    @staticmethod
    def backward(ctx, grad):
        weight, weight_scale = ctx.saved_tensors
        dequant = weight.to(grad.dtype) * weight_scale.t().to(grad.dtype)  # (M, K)
        return (grad @ dequant).to(ctx.x_dtype), None, None, None


def _fp8_forward(module: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """x (..., K) -> (..., M), in the autocast dtype when autocast is on."""
    out_dtype = torch.get_autocast_dtype(x.device.type) if torch.is_autocast_enabled(x.device.type) else x.dtype
    x = x.to(out_dtype)
    y = _Fp8Matmul.apply(x.reshape(-1, x.shape[-1]), module.weight, module.weight_scale, out_dtype)
    if module.bias is not None:
        y = y + module.bias.to(out_dtype)
    return y.reshape(*x.shape[:-1], y.shape[-1])


@torch.no_grad()
def enable_fp8_matmuls(blocks: torch.nn.Module) -> int:
    """Quantize every frozen nn.Linear under `blocks` in place; returns how many."""
    count = 0
    for module in blocks.modules():
        if type(module) is not torch.nn.Linear or module.weight.requires_grad:
            continue
        w = module.weight.data
        if w.shape[0] % 16 or w.shape[1] % 16:
            continue  # _scaled_mm needs both dimensions divisible by 16
        w8, scale = quantize_rows(w)
        module.fp8_source_dtype = w.dtype  # what `disable_fp8_matmuls` dequantizes back to
        module.weight.data = w8  # (out, in) fp8
        module.register_buffer("weight_scale", scale.t().contiguous())  # (1, out) fp32
        module.forward = functools.partial(_fp8_forward, module)
        count += 1
    return count


def fp8_layers(blocks: torch.nn.Module) -> list[torch.nn.Linear]:
    return [
        m
        for m in blocks.modules()
        if isinstance(getattr(m, "forward", None), functools.partial) and m.forward.func is _fp8_forward
    ]


@torch.no_grad()
def disable_fp8_matmuls(blocks: torch.nn.Module) -> int:
    """Back to plain matmuls: each fp8 weight dequantized to its original dtype (the fp8 rounding
    stays: the weights are those the fp8 matmuls used, not the originals); returns how many."""
    layers = fp8_layers(blocks)
    for module in layers:
        module.weight.data = (module.weight.data.float() * module.weight_scale.t()).to(module.fp8_source_dtype)
        del module._buffers["weight_scale"], module.forward
    return len(layers)


def _cast_roundtrip(device: torch.device) -> None:
    torch.ones(16, 16, device=device, dtype=torch.bfloat16).to(torch.float8_e4m3fn).to(torch.bfloat16)


def _tiny_scaled_mm(device: torch.device) -> None:
    x8, x_scale = quantize_rows(torch.ones(16, 16, device=device))
    w8, w_scale = quantize_rows(torch.ones(16, 16, device=device))
    torch._scaled_mm(x8, w8.t(), scale_a=x_scale, scale_b=w_scale.t().contiguous(), out_dtype=torch.bfloat16)


# What each fp8 use needs from the device: fp8 storage a cast, fp8 matmuls `_scaled_mm` (sm89+ on CUDA).
_PROBES = {"storage": _cast_roundtrip, "matmul": _tiny_scaled_mm}


def unsupported(kind: str, device: torch.device) -> str | None:
    """None when fp8 `kind` ("storage" | "matmul") runs on `device`, else why not (one line)."""
    try:
        _PROBES[kind](device)
    except Exception as e:  # noqa: BLE001 - any refusal means: not on this device
        return f"{type(e).__name__}: {e}".splitlines()[0][:300]
    return None
