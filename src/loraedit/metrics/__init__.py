"""Per-clip scores: the paper's Table 1 plus metrics that need no weights.

:func:`score_clip` is the entry point the ``score`` rule calls, once per
clip x method (external baselines included, via :func:`load_baseline_video`).
Every metric is a record ``{value, higher_is_better, impl, version, model,
note, family}``; a metric whose weights or inputs are missing has value None
and a note such as "n/a (no weights)", never a made-up number.

Families: ``table1`` (CLIP Score, Input Similarity, DeQA-Score, Q-Align),
``background`` (masked PSNR/SSIM vs input), ``fidelity`` (vs the edited
frames), ``temporal`` (warping error, frame difference), ``ground_truth``
(pyiqa full-reference vs a ground-truth edited video) and ``no_reference``
(pyiqa no-reference).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import ClipError
from .background import background_metrics
from .base import NO_WEIGHTS, PSNR_CAP_DB, record
from .clip_sim import REAL_CLIP, TINY, clip_metrics, load_clip_embedder
from .deqa import DEFAULTS as DEQA_DEFAULTS
from .deqa import deqa_metric
from .fidelity import fidelity_metrics
from .iqa import WEIGHT_FREE_METRICS, WEIGHT_METRICS, check_names, pyiqa_metric, qalign_metric
from .temporal import FLOW_METHODS, temporal_metrics

__all__ = [
    "DEFAULTS",
    "NO_WEIGHTS",
    "PSNR_CAP_DB",
    "REAL_CLIP",
    "load_baseline_video",
    "record",
    "score_clip",
    "score_config",
]

# The config's ``score`` section; every key is optional.
DEFAULTS: dict = {
    "clip_model": TINY,  # "tiny" (offline random, demo/tests) | local folder | hub id, e.g. REAL_CLIP
    "device": "auto",
    "flow": "dis",  # warping-error flow: dis | farneback
    "deqa": dict(DEQA_DEFAULTS),
    "pyiqa_metrics": list(WEIGHT_FREE_METRICS),
    "pyiqa_weight_metrics": list(WEIGHT_METRICS),  # run only when their files are in pyiqa's cache
    "pyiqa_allow_download": False,  # True: let pyiqa download missing weights (needs internet)
    "qalign": True,  # run pyiqa's qalign when q-future/one-align is in the HF cache
}


def score_config(cfg: dict | None) -> dict:
    """The ``score`` section with defaults filled in (one level deep for ``deqa``)."""
    cfg = dict(cfg or {})
    out = {**DEFAULTS, **{k: v for k, v in cfg.items() if v is not None}}
    out["deqa"] = {**DEQA_DEFAULTS, **(cfg.get("deqa") or {})}
    return out


def _check_shapes(clip_id, input_frames, output_frames, masks, edited_frames, gt_frames) -> np.ndarray:
    def bad(what: str, problem: str):
        raise ClipError(clip_id, what, problem)

    if input_frames.ndim != 4 or input_frames.shape[-1] != 3:
        bad("input", f"expected (T, H, W, 3) frames, got shape {input_frames.shape}")
    if output_frames.shape != input_frames.shape:
        bad("output", f"shape {output_frames.shape} differs from the input's {input_frames.shape}")
    masks = np.asarray(masks)
    if masks.shape != input_frames.shape[:3]:
        bad("masks", f"shape {masks.shape} differs from the input's {input_frames.shape[:3]}")
    if gt_frames is not None and gt_frames.shape != input_frames.shape:
        bad("ground truth", f"shape {gt_frames.shape} differs from the input's {input_frames.shape}")
    if 0 not in edited_frames:
        bad("edited frames", "no edited first frame (key 0)")
    for t, f in edited_frames.items():
        if f.shape != input_frames.shape[1:]:
            bad(f"edited frame {t}", f"shape {f.shape} differs from the frames' {input_frames.shape[1:]}")
    # Float masks (soft, 0..1) and 0/255 files both become 1 = keep.
    thr = 127 if masks.dtype == np.uint8 and masks.max() > 1 else 0.5
    return (masks > thr).astype(np.uint8)


def score_clip(
    input_frames: np.ndarray,
    output_frames: np.ndarray,
    masks: np.ndarray,
    edited_frames: dict[int, np.ndarray],
    gt_frames: np.ndarray | None = None,
    cfg: dict | None = None,
    clip_id: str | None = None,
    method: str | None = None,
) -> dict:
    """Score one output video against its clip.

    ``input_frames``, ``output_frames``, ``gt_frames``: uint8 (T, H, W, 3);
    ``masks``: (T, H, W), 1 = keep; ``edited_frames``: {t: uint8 (H, W, 3)}
    with t = 0 the edited first frame. Returns a JSON-safe dict.
    """
    cfg = score_config(cfg)
    pyiqa_names = [*cfg["pyiqa_metrics"], *cfg["pyiqa_weight_metrics"]]
    check_names(pyiqa_names)
    if cfg["flow"] not in FLOW_METHODS:
        raise ValueError(f"score.flow = {cfg['flow']!r}; choose one of {', '.join(FLOW_METHODS)}")
    masks = _check_shapes(clip_id, input_frames, output_frames, masks, edited_frames, gt_frames)
    dev = cfg["device"]
    out = output_frames

    metrics: dict[str, dict] = {}
    metrics.update(
        clip_metrics(load_clip_embedder(str(cfg["clip_model"]), str(dev)), out, input_frames, edited_frames[0])
    )
    metrics["deqa"] = deqa_metric(out, cfg["deqa"], clip_id)
    metrics["qalign"] = qalign_metric(out, dev, enabled=bool(cfg["qalign"]))
    metrics.update(background_metrics(out, input_frames, masks))
    metrics.update(fidelity_metrics(out, edited_frames))
    metrics.update(temporal_metrics(out, input_frames, cfg["flow"]))

    # pyiqa: full-reference metrics against the ground-truth edit (when the sheet has one),
    # no-reference metrics on the output alone; those needing weight files only when cached.
    for name in dict.fromkeys(pyiqa_names):
        rec = pyiqa_metric(name, out, gt_frames, dev, allow_download=bool(cfg["pyiqa_allow_download"]))
        metrics[f"gt_{name}" if rec["family"] == "ground_truth" else name] = rec

    return {
        "clip_id": clip_id,
        "method": method,
        "num_frames": int(out.shape[0]),
        "width": int(out.shape[2]),
        "height": int(out.shape[1]),
        "metrics": metrics,
    }


def _find_baseline(folder: Path, clip_id: str) -> Path:
    if (folder / clip_id).is_dir():
        return folder / clip_id
    hits = sorted(p for p in folder.glob(f"{clip_id}.*") if p.is_file() and not p.name.startswith("."))
    if not hits:
        raise ClipError(clip_id, folder, f"no baseline video named {clip_id}.<ext> or folder {clip_id}/")
    if len(hits) > 1:
        raise ClipError(clip_id, folder, f"several baseline videos for this clip: {', '.join(p.name for p in hits)}")
    return hits[0]


def load_baseline_video(
    folder: str | os.PathLike, clip_id: str, num_frames: int, width: int, height: int, pad: str = "hold"
) -> np.ndarray:
    """An external method's output for ``clip_id`` as ``uint8 (num_frames, height, width, 3)``.

    ``folder`` holds ``<clip_id>.<ext>`` (anything ffmpeg reads) or ``<clip_id>/``
    (frames). Frames are resampled uniformly over the video to ``num_frames``
    (a shorter video repeats its last frame with ``pad="hold"``, e.g. AnyV2V's 16
    frames against a 17-frame clip), then resized and centre-cropped.
    """
    from ..frames import resample_indices, resize_center_crop
    from ..video_io import read_video

    path = _find_baseline(Path(folder), clip_id)
    frames, _fps = read_video(path, clip_id)
    try:
        idx = resample_indices(len(frames), num_frames, pad)
    except ValueError as e:
        raise ClipError(clip_id, path, str(e)) from None
    return np.stack([resize_center_crop(frames[i], width, height) for i in idx])
