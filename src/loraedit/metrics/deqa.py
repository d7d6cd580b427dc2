"""DeQA-Score (You et al. 2025, zhiyuanyou/DeQA-Score-Mix3), run out of process.

The reference code needs transformers 4.36 and an mPLUG-Owl2 7B checkpoint, which
cannot share this environment. So DeQA runs per clip in a separately configured
interpreter (``score.deqa.python``, which runs ``deqa_runner.py``) or any
command (``score.deqa.command``); its stdout is parsed. Unconfigured, the
column says "n/a (no weights)" and scoring goes on.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from ..errors import ClipError
from ..video_io import write_png_sequence
from .base import NO_WEIGHTS, record

DEFAULT_MODEL = "zhiyuanyou/DeQA-Score-Mix3"
RUNNER = Path(__file__).with_name("deqa_runner.py")
DEFAULTS = {"python": None, "command": None, "model": DEFAULT_MODEL, "timeout_s": 3600}


def parse_scores(stdout: str) -> list[float]:
    """Per-frame scores from the last stdout line that parses.

    Accepted: ``{"scores": [..]}``, ``{"score": x}``, a JSON list, or a bare number.
    """
    for line in reversed([ln.strip() for ln in stdout.splitlines() if ln.strip()]):
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict):
            obj = obj.get("scores", obj.get("score"))
        if isinstance(obj, (int, float)) and not isinstance(obj, bool):
            return [float(obj)]
        if isinstance(obj, list) and obj and all(isinstance(v, (int, float)) for v in obj):
            return [float(v) for v in obj]
    raise ValueError('no score found in its output (expected a last line like {"scores": [..]})')


def _command(cfg: dict, frames_dir: Path) -> str:
    q = {
        k: shlex.quote(str(v))
        for k, v in (("frames", frames_dir), ("model", cfg["model"]), ("python", cfg["python"] or "python"))
    }
    if cfg.get("command"):
        cmd = str(cfg["command"])
        return cmd.format(**q) if "{frames}" in cmd else f"{cmd.format(**q)} {q['frames']}"
    return f"{q['python']} {shlex.quote(str(RUNNER))} --model {q['model']} {q['frames']}"


def deqa_metric(output: np.ndarray, cfg: dict | None = None, clip_id: str | None = None) -> dict:
    """DeQA-Score (1..5, per frame, averaged) of ``uint8 (T, H, W, 3)``, or n/a when not configured."""
    cfg = {**DEFAULTS, **(cfg or {})}
    impl = "DeQA-Score (external process)"
    if not cfg.get("python") and not cfg.get("command"):
        return record(None, True, impl, "not configured", cfg["model"], NO_WEIGHTS, "table1")
    with tempfile.TemporaryDirectory(prefix="deqa_") as tmp:
        write_png_sequence(tmp, output)
        cmd = _command(cfg, Path(tmp))
        try:
            proc = subprocess.run(
                cmd, shell=True, capture_output=True, text=True, timeout=cfg["timeout_s"], check=False
            )
        except subprocess.TimeoutExpired:
            raise ClipError(clip_id, cmd, f"DeQA did not finish in {cfg['timeout_s']} s") from None
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no stderr"])[-1][:200]
        raise ClipError(clip_id, cmd, f"DeQA command failed (exit {proc.returncode}): {tail}")
    try:
        scores = parse_scores(proc.stdout)
    except ValueError as e:
        raise ClipError(clip_id, cmd, f"DeQA: {e}") from None
    version = "deqa_runner" if not cfg.get("command") else "custom command"
    return record(
        float(np.mean(scores)),
        True,
        f"{impl}: {len(scores)} frame score(s), mean",
        version,
        cfg["model"],
        "",
        "table1",
    )
