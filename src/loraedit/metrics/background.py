"""Background preservation: PSNR and SSIM between output and input on the kept region.

Only mask = 1 pixels of frames 2..T count: frame 1 is the edited first frame
the model was conditioned on, and the edit region is meant to change.
"""

from __future__ import annotations

import numpy as np

from .iqa import masked_psnr, psnr_record, ssim_per_frame, ssim_record


def background_metrics(output: np.ndarray, input: np.ndarray, masks: np.ndarray) -> dict[str, dict]:
    """``{"bg_psnr", "bg_ssim"}`` for ``uint8 (T, H, W, 3)`` videos and ``(T, H, W)`` keep masks."""
    out, inp, keep = output[1:], input[1:], np.asarray(masks)[1:]
    empty = "n/a (mask keeps no pixels in frames 2..T)"
    return {
        "bg_psnr": psnr_record(masked_psnr(out, inp, keep), "masked PSNR (mask=1, frames 2..T)", "background", empty),
        "bg_ssim": ssim_record(
            ssim_per_frame(out, inp, keep), "masked SSIM map (mask=1, frames 2..T)", "background", empty
        ),
    }
