"""Mask source ``file``: a mask given in the sample sheet (video, folder or one image for all frames)."""

from __future__ import annotations

import cv2
import numpy as np

from ..errors import ClipError
from ..frames import resize_center_crop
from ..video_io import read_mask
from .base import MaskInputs


def file_mask(inputs: MaskInputs) -> np.ndarray:
    """The sheet's mask (video, folder or one image for all frames), matched to the prepared clip."""
    clip, path, meta = inputs.clip_id, inputs.mask_path, inputs.meta
    if path is None:
        raise ClipError(clip, None, "masks.source is 'file' but the sample sheet gives no mask")
    t, h, w = inputs.frames.shape[:3]
    m = read_mask(path, clip)  # (Tm, Hm, Wm) 0/1
    n_src = int(meta.get("src_num_frames", t))
    if len(m) == 1:
        m = np.repeat(m, t, axis=0)
    elif len(m) == t:
        pass
    elif len(m) == n_src:
        m = m[np.asarray(meta["frame_indices"])]  # same time resampling as prepare
    else:
        raise ClipError(
            clip,
            path,
            f"mask has {len(m)} frames but the prepared clip has {t} (source clip: {n_src}); give 1, {t} or {n_src} frames",
        )

    hm, wm = m.shape[1:]
    if (wm, hm) != (w, h):
        w0, h0 = meta.get("src_size", [w, h])
        aspect, ref = wm / hm, w0 / h0
        if abs(aspect / ref - 1.0) > inputs.cfg["aspect_tolerance"]:
            raise ClipError(
                clip,
                path,
                f"mask is {wm}x{hm} (aspect {aspect:.3f}) but the video is {w0}x{h0} (aspect {ref:.3f}); "
                "cannot resize it sensibly",
            )
        # Same geometry as prepare (cover, centre crop), nearest so it stays binary.
        m = np.stack([resize_center_crop(f, w, h, interpolation=cv2.INTER_NEAREST) for f in m])
    return m.astype(np.uint8)
