"""Turn off, one at a time, the accelerations that fail on this machine.

The accelerations a transformer may run with, in the order they are given up when an error does
not say which one failed (the most fragile first):

    compile         torch.compile of the repeated blocks          -> eager
    attention       a chosen diffusers attention backend           -> PyTorch's choice ("native")
    keep_attention  attention outputs kept by the checkpoint       -> recomputed
    fp8_matmul      fp8 matmuls of the frozen block Linears        -> plain matmuls (dequantized weights)
    streaming       streamed block weights / offloaded activations -> every block resident

`active` reads them back from the model itself, so the record says what really runs. `culprit`
blames the acceleration whose code raised (the innermost frame of the traceback that belongs to
one), else the first active one of the order above.
"""

from __future__ import annotations

import os
import traceback

import torch

from . import attention, fp8
from .checkpointing import BlockCheckpoint
from .placement import place

ORDER = ("compile", "attention", "keep_attention", "fp8_matmul", "streaming")
INSTEAD = {
    "compile": "eager",
    "attention": "PyTorch's attention choice",
    "keep_attention": "attention recomputed",
    "fp8_matmul": "bf16 matmuls",
    "streaming": "every block resident",
}
# Path fragments of the code each acceleration runs (forward slashes).
SIGNS = {
    "compile": ("/torch/_dynamo/", "/torch/_inductor/", "/torch/_functorch/"),
    "attention": ("/diffusers/models/attention_dispatch.py",),
    "fp8_matmul": ("/loraedit/memory/fp8.py",),
    "streaming": ("/loraedit/memory/streamer.py", "/loraedit/memory/activations.py"),
}


def checkpoint_fn(transformer) -> BlockCheckpoint | None:
    fn = getattr(transformer, "_gradient_checkpointing_func", None)
    return fn if isinstance(fn, BlockCheckpoint) else None


def compiled(transformer: torch.nn.Module) -> bool:
    return any(m._compiled_call_impl is not None for m in transformer.modules())


def active(transformer: torch.nn.Module) -> list[str]:
    """The accelerations `transformer` runs with now, in ORDER."""
    fn = checkpoint_fn(transformer)
    blocks = getattr(transformer, "blocks", None)
    on = {
        "compile": compiled(transformer),
        "attention": attention.active_backend(transformer) != "native",
        "keep_attention": bool(fn and fn.save_attention),
        "fp8_matmul": blocks is not None and bool(fp8.fp8_layers(blocks)),
        "streaming": bool(fn and (fn.streamer or fn.offload)),
    }
    return [name for name in ORDER if on[name]]


def state(transformer: torch.nn.Module) -> dict:
    """What runs (for the record): the mode and each acceleration's setting."""
    fn = checkpoint_fn(transformer)
    on = active(transformer)
    streamed = len(fn.streamer.streamed) if fn and fn.streamer else 0
    mode = "low" if "streaming" in on else ("fast" if on else "plain")
    blocks = getattr(transformer, "blocks", None)
    matmul_weights = {id(m.weight) for m in fp8.fp8_layers(blocks)} if blocks is not None else set()
    fp8_storage = any(p.dtype == torch.float8_e4m3fn and id(p) not in matmul_weights for p in transformer.parameters())
    return {
        "mode": mode,
        "compile": "compile" in on,
        "attention_backend": attention.active_backend(transformer),
        "keep_attention": "keep_attention" in on,
        "fp8_matmul": "fp8_matmul" in on,
        "fp8_weights": fp8_storage,
        "streamed_blocks": streamed,
        "offload_activations": bool(fn and fn.offload),
        "gradient_checkpointing": bool(getattr(transformer, "is_gradient_checkpointing", False)),
    }


def _frames(error: BaseException) -> list[str]:
    """Source files of the traceback, innermost first, the chained causes before the error itself."""
    chain, seen = [], set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        chain.append(error)
        error = error.__cause__ or error.__context__
    files = []
    for e in reversed(chain):  # the deepest cause first
        files += [f.filename.replace(os.sep, "/") for f in reversed(traceback.extract_tb(e.__traceback__))]
    return files


def culprit(error: BaseException, on: list[str]) -> str | None:
    """The active acceleration to give up for `error` (None: none is active)."""
    for filename in _frames(error):
        for name in on:
            if any(sign in filename for sign in SIGNS.get(name, ())):
                return name
    return on[0] if on else None


def turn_off(name: str, transformer: torch.nn.Module, device: torch.device) -> None:
    """Give up acceleration `name` on `transformer` (see the module docstring)."""
    fn = checkpoint_fn(transformer)
    if name == "compile":
        for module in transformer.modules():
            module._compiled_call_impl = None  # nn.Module.compile set it; None runs `_call_impl` (eager)
    elif name == "attention":
        transformer.set_attention_backend("native")  # the processors and the process-wide default
    elif name == "keep_attention":
        fn.save_attention = False
    elif name == "fp8_matmul":
        fp8.disable_fp8_matmuls(transformer.blocks)
    elif name == "streaming":
        if fn.streamer is not None:
            fn.streamer.detach()
        place(transformer, device)
        fn.streamer = fn.offload = None
    else:
        raise ValueError(f"unknown acceleration {name!r} (one of {', '.join(ORDER)})")
