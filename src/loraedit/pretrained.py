"""Load a transformers model + processor from a local folder or a hub id, with a one-line error."""

from __future__ import annotations

import os

import torch


def load_pretrained(
    model_cls, proc_cls, spec: str | os.PathLike, device: torch.device, dtype: torch.dtype, what: str, hint: str
):
    """``(model in eval mode on device, processor)``; RuntimeError "cannot load <what> from ... ; <hint>"."""
    try:
        model = model_cls.from_pretrained(str(spec), dtype=dtype)
        proc = proc_cls.from_pretrained(str(spec))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise RuntimeError(f"cannot load {what} from {str(spec)!r} ({exc}); {hint}") from exc
    return model.to(device).eval(), proc
