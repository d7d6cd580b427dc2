"""Stage ``prepare``: decode a clip, resample it in time, resize it to a Wan bucket.

Output (one folder, renamed into place at the end)::

    out_dir/frames/00000.png ...   the clip, W x H, num_frames files
    out_dir/edited/00000.png       the edited first frame, same size
    out_dir/edited/{t:05d}.png     extra edited frames (t = prepared frame index)
    out_dir/gt/00000.png ...       ground-truth edited video, when given
    out_dir/meta.json
    out_dir/preview.mp4
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from .atomic import atomic_path, write_json
from .errors import ClipError
from .frames import PAD_MODES, resample_indices, resize_center_crop
from .video_io import read_image, read_video, write_frames, write_mp4, write_png

DEFAULTS = {
    "num_frames": 49,
    "landscape": [832, 480],
    "portrait": [480, 832],
    # 624*624 tokens ~ 832*480 tokens: same compute bucket, multiples of 16.
    "square": [624, 624],
    "pad": "error",
    "allow_crop": False,
    "aspect_tolerance": 0.05,
}


def prepare_config(cfg: dict | None) -> dict:
    """The ``prepare`` config section with defaults filled in."""
    out = dict(DEFAULTS)
    out.update(cfg or {})
    return out


def check_num_frames(n) -> None:
    """Wan's VAE compresses time 4x after the first frame, so clips need 4k+1 frames."""
    if isinstance(n, (int, np.integer)) and not isinstance(n, bool) and n >= 5 and (n - 1) % 4 == 0:
        return
    try:
        below = 4 * ((int(n) - 1) // 4) + 1  # largest 4k+1 <= n
        nearest = "5" if below < 5 else f"{below} or {below + 4}"
    except (TypeError, ValueError):
        nearest = "an integer such as 17, 49 or 81"
    raise ValueError(f"prepare.num_frames = {n!r} is not 4k+1 (k >= 1); nearest valid: {nearest}")


def orientation(width: int, height: int, tolerance: float = DEFAULTS["aspect_tolerance"]) -> str:
    """``square`` when the aspect is within ``tolerance`` of 1, else ``landscape`` / ``portrait``."""
    if abs(width / height - 1.0) <= tolerance:
        return "square"
    return "landscape" if width > height else "portrait"


def choose_size(width: int, height: int, cfg: dict) -> tuple[int, int]:
    """The configured ``(W, H)`` bucket for a clip of ``width x height``."""
    cfg = prepare_config(cfg)
    key = orientation(width, height, cfg["aspect_tolerance"])
    size = cfg[key]
    if len(size) != 2 or any(int(s) != s or s <= 0 or s % 16 for s in size):
        # Wan: VAE downsamples 8x, then the transformer patchifies 2x2.
        raise ValueError(f"prepare.{key} = {list(size)}: sizes must be positive multiples of 16")
    return int(size[0]), int(size[1])


def _opt(row: dict, key: str):
    """A row's optional value, or None (pandas gives NaN for empty cells)."""
    v = row.get(key)
    if v is None or (isinstance(v, float) and math.isnan(v)) or (isinstance(v, str) and not v.strip()):
        return None
    return v


def _check_aspect(img: np.ndarray, ref_w: int, ref_h: int, cfg: dict, clip_id: str, path, what: str) -> None:
    h, w = img.shape[:2]
    a, ref = w / h, ref_w / ref_h
    if abs(a / ref - 1.0) > cfg["aspect_tolerance"] and not cfg["allow_crop"]:
        raise ClipError(
            clip_id,
            path,
            f"{what} is {w}x{h} (aspect {a:.3f}) but the video is {ref_w}x{ref_h} (aspect {ref:.3f}); "
            "give it the video's aspect or set prepare.allow_crop: true",
        )


def _map_extra_edits(extra: dict, indices: np.ndarray, n_src: int, clip_id: str) -> dict[int, tuple[int, str]]:
    """``{prepared t: (source frame, path)}``: each source frame goes to its nearest resampled frame."""
    out: dict[int, tuple[int, str]] = {}
    for f, p in sorted((int(k), v) for k, v in extra.items()):
        if not 0 <= f < n_src:
            raise ClipError(clip_id, p, f"extra edit at frame {f}, but the clip has frames 0..{n_src - 1}")
        t = int(np.argmin(np.abs(indices - f)))
        if t == 0:
            raise ClipError(clip_id, p, f"extra edit at frame {f} maps to prepared frame 0 (the edited first frame)")
        if t in out:
            raise ClipError(
                clip_id, p, f"extra edits at frames {out[t][0]} and {f} both map to prepared frame {t}; drop one"
            )
        out[t] = (f, str(p))
    return out


def prepare_clip(row: dict, cfg: dict, out_dir: str | os.PathLike) -> dict:
    """Prepare one sample-sheet row into ``out_dir``; returns the ``meta.json`` content.

    ``row``: clip_id, video, edited_first_frame, optional prompt, source_prompt,
    extra_edits ({source frame: path} or "12:a.png;24:b.png"), gt_video.
    ``cfg``: the config's ``prepare`` section.
    """
    from .sheet.samples import parse_extra_edits  # local: the sheet module is the heavier one (pandas)

    cfg = prepare_config(cfg)
    clip_id = str(row["clip_id"])
    try:
        check_num_frames(cfg["num_frames"])
        if cfg["pad"] not in PAD_MODES:
            raise ValueError(f"prepare.pad = {cfg['pad']!r}; choose one of {', '.join(PAD_MODES)}")
    except ValueError as e:
        raise ClipError(clip_id, "config", str(e)) from None
    n = int(cfg["num_frames"])

    video_path = row["video"]
    src, src_fps = read_video(video_path, clip_id)  # (T0, H0, W0, 3)
    n_src, h0, w0 = src.shape[:3]
    try:
        width, height = choose_size(w0, h0, cfg)
        indices = resample_indices(n_src, n, cfg["pad"])
    except ValueError as e:
        where = "config" if str(e).startswith("prepare.") else video_path
        raise ClipError(clip_id, where, str(e)) from None
    frames = np.stack([resize_center_crop(src[i], width, height) for i in indices])  # (T, H, W, 3)
    duration = n_src / src_fps
    fps = n / duration if n_src >= n else src_fps

    edited_path = row["edited_first_frame"]
    edited = read_image(edited_path, clip_id)
    _check_aspect(edited, w0, h0, cfg, clip_id, edited_path, "edited first frame")
    edited = resize_center_crop(edited, width, height)

    extra = _opt(row, "extra_edits") or {}
    if isinstance(extra, str):
        try:
            extra = parse_extra_edits(extra)
        except ValueError as e:
            raise ClipError(clip_id, "extra_edits", str(e)) from None
    extra_map = _map_extra_edits(extra, indices, n_src, clip_id)
    extra_imgs = {}
    for t, (_, p) in extra_map.items():
        img = read_image(p, clip_id)
        _check_aspect(img, w0, h0, cfg, clip_id, p, "extra edited frame")
        extra_imgs[t] = resize_center_crop(img, width, height)

    gt = None
    gt_path = _opt(row, "gt_video")
    if gt_path is not None:
        gt_src, _ = read_video(gt_path, clip_id)
        _check_aspect(gt_src[0], w0, h0, cfg, clip_id, gt_path, "ground-truth video")
        # Same frame count: use the clip's own indices so gt frame t matches frame t.
        try:
            gt_idx = indices if len(gt_src) == n_src else resample_indices(len(gt_src), n, cfg["pad"])
        except ValueError as e:
            raise ClipError(clip_id, gt_path, str(e)) from None
        gt = np.stack([resize_center_crop(gt_src[i], width, height) for i in gt_idx])

    meta = {
        "clip_id": clip_id,
        "width": width,
        "height": height,
        "num_frames": n,
        "fps": fps,
        "orientation": orientation(w0, h0, cfg["aspect_tolerance"]),
        "src_num_frames": int(n_src),
        "src_fps": float(src_fps),
        "src_size": [int(w0), int(h0)],
        "frame_indices": [int(i) for i in indices],
        "extra_edit_frames": sorted(extra_map),
        "extra_edit_source_frames": {str(t): f for t, (f, _) in sorted(extra_map.items())},
        "has_gt": gt is not None,
        "prompt": _opt(row, "prompt"),
        "source_prompt": _opt(row, "source_prompt"),
        "source": {
            "video": str(video_path),
            "edited_first_frame": str(edited_path),
            "mask": None if _opt(row, "mask") is None else str(row["mask"]),
            "gt_video": None if gt_path is None else str(gt_path),
            "extra_edits": {str(t): p for t, (_, p) in sorted(extra_map.items())},
        },
    }

    with atomic_path(out_dir, is_dir=True) as tmp:
        tmp = Path(tmp)
        write_frames(tmp / "frames", frames)
        (tmp / "edited").mkdir()
        write_png(tmp / "edited" / "00000.png", edited)
        for t, img in extra_imgs.items():
            write_png(tmp / "edited" / f"{t:05d}.png", img)
        if gt is not None:
            write_frames(tmp / "gt", gt)
        write_mp4(tmp / "preview.mp4", frames, fps)
        write_json(tmp / "meta.json", meta)
    return meta
