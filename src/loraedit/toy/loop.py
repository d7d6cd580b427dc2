"""A resumable, seeded training loop for the toy model's stages (VAE, transformer).

Batches are a function of the step number alone (see `toy_vae.batch_at`, `toy_i2v.batch_at`), and
the checkpoint holds the weights, the optimizer state and the loss log, so a run stopped after any
checkpoint and started again ends with bit-identical weights (same thread count, same machine).
Worker processes may build the batches ahead (`workers`: on a GPU the VAE stage would otherwise
wait on the CPU renderer); they build the same batches in the same order, so the weights do not
depend on their number. Batches go to the model's device; the log records that device.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from ..atomic import atomic_path

log = logging.getLogger(__name__)


def lr_at(step: int, base: float, warmup: int, total: int, min_ratio: float) -> float:
    """Linear warm-up, then cosine decay to base * min_ratio at `total`."""
    if step < warmup:
        return base * (step + 1) / warmup
    frac = min(1.0, (step - warmup) / max(1, total - warmup))
    return base * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * frac)))


def load_checkpoint(path: Path) -> dict | None:
    return torch.load(path, map_location="cpu", weights_only=False) if path.exists() else None


class _StepBatches(torch.utils.data.Dataset):
    """Steps start..stop-1 as a map-style dataset: item i is batch_at(start + i)."""

    def __init__(self, batch_at: Callable[[int], Any], start: int, stop: int):
        self.batch_at, self.start, self.stop = batch_at, start, stop

    def __len__(self) -> int:
        return self.stop - self.start

    def __getitem__(self, i: int):
        return self.batch_at(self.start + i)


def _as_built(batch):
    return batch  # not DataLoader's default conversion (it would turn numpy arrays into tensors)


def step_batches(batch_at: Callable[[int], Any], start: int, stop: int, workers: int = 0) -> Iterator:
    """batch_at(start), ..., batch_at(stop - 1), in order; with workers > 0 built ahead in that many processes."""
    if workers <= 0:
        return (batch_at(step) for step in range(start, stop))
    loader = torch.utils.data.DataLoader(
        _StepBatches(batch_at, start, stop),
        batch_size=None,
        shuffle=False,
        num_workers=workers,
        prefetch_factor=4,
        collate_fn=_as_built,
        multiprocessing_context="fork",
    )  # fork: batch_at may be a closure
    return iter(loader)


def to_device(batch, device: torch.device):
    """A tensor, or a tuple/list of tensors (None kept), on `device`."""
    if isinstance(batch, (tuple, list)):
        return type(batch)(to_device(b, device) for b in batch)
    return batch.to(device) if isinstance(batch, torch.Tensor) else batch


LOG_COLUMNS = ["step", "loss", "lr", "seconds", "threads", "device"]


def train_loop(
    model: torch.nn.Module,
    loss_of: Callable[[Any], torch.Tensor],
    batch_at: Callable[[int], Any],
    *,
    steps: int,
    lr: float,
    warmup: int,
    min_lr_ratio: float,
    ckpt: Path,
    log_csv: Path,
    every: int = 50,
    grad_clip: float = 1.0,
    deadline: float | None = None,
    workers: int = 0,
) -> bool:
    """Train `model` on loss_of(batch_at(step)) to `steps`, resuming from `ckpt`; True when finished,
    False when `deadline` (a time.time() value) stopped it early (after writing a checkpoint). The log
    CSV has step, loss, lr, seconds, threads (torch's thread count: a resumed run is bit-identical only
    at the same count) and device (the model's: cpu, cuda)."""
    device = next(model.parameters()).device
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.99), weight_decay=0.0)
    state = load_checkpoint(ckpt)
    rows: list[dict] = []
    start = 0
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        rows, start = state["log"], state["step"]
        if any("threads" not in row for row in rows):  # fail now, not at export after hours of steps
            raise ValueError(
                f"{ckpt}: its loss log has no per-step 'threads' (a checkpoint from before thread "
                "counts were logged); start a new --work folder"
            )
        log.info("%s: resuming at step %d", ckpt.name, start)

    def save(step: int) -> None:
        with atomic_path(ckpt) as tmp:
            torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "log": rows, "step": step}, tmp)
        with atomic_path(log_csv) as tmp:
            pd.DataFrame(rows, columns=LOG_COLUMNS).to_csv(tmp, index=False)

    model.train()
    batches = step_batches(batch_at, start, steps, workers)
    for step in range(start, steps):
        t0 = time.perf_counter()
        current = lr_at(step, lr, warmup, steps, min_lr_ratio)
        for group in opt.param_groups:
            group["lr"] = current
        loss = loss_of(to_device(next(batches), device))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        value = float(loss.detach())
        if not math.isfinite(value):
            raise FloatingPointError(f"{ckpt.name}: loss became {value} at step {step + 1}")
        rows.append(
            {
                "step": step + 1,
                "loss": value,
                "lr": current,
                "seconds": round(time.perf_counter() - t0, 4),
                "threads": torch.get_num_threads(),
                "device": device.type,
            }
        )
        if (step + 1) % 10 == 0:
            log.info("%s step %d loss %.5f lr %.2e %.2fs", ckpt.stem, step + 1, value, current, rows[-1]["seconds"])
        if (step + 1) % every == 0 or step + 1 == steps:
            save(step + 1)
        if deadline is not None and time.time() > deadline and step + 1 < steps:
            save(step + 1)
            model.eval()
            return False
    if start >= steps and state is not None:
        model.load_state_dict(state["model"])
    model.eval()
    return True
