"""The record every metric returns, and small helpers shared by the metric modules.

A record is JSON-safe: ``value`` is a finite float or None (never NaN/inf), and
``note`` says why a value is missing or was capped, so a table can print
"n/a (no weights)" instead of a made-up number.
"""

from __future__ import annotations

import functools
import importlib.metadata
import math

import numpy as np
import torch

NO_WEIGHTS = "n/a (no weights)"
PSNR_CAP_DB = 100.0  # identical images: PSNR is +inf; tables get a finite, marked number


@functools.cache
def pkg_version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def record(
    value: float | None,
    higher_is_better: bool,
    impl: str,
    version: str,
    model: str = "",
    note: str = "",
    family: str = "",
) -> dict:
    """One metric's result; non-finite values become None with a note."""
    if value is not None:
        value = float(value)
        if not math.isfinite(value):
            note = note or f"n/a (non-finite value {value})"
            value = None
    return {
        "value": value,
        "higher_is_better": bool(higher_is_better),
        "impl": impl,
        "version": version,
        "model": model,
        "note": note,
        "family": family,
    }


def not_available(higher_is_better: bool, impl: str, version: str, model: str, note: str, family: str) -> dict:
    return record(None, higher_is_better, impl, version, model, note, family)


def to_tensor01(frames: np.ndarray) -> torch.Tensor:
    """``uint8 (T, H, W, 3)`` -> ``float32 (T, 3, H, W)`` in [0, 1] (pyiqa's input convention)."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)
    return x.float().div_(255.0)


def loraedit_version() -> str:
    return f"loraedit {pkg_version('loraedit')}"
