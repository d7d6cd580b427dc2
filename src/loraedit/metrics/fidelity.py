"""Edit fidelity: how closely the output reproduces the edited frame(s) it was given.

The first frame is the I2V condition; stage-2 extra edited frames (sheet
``extra_edits``) are references the output should also follow at their index.
"""

from __future__ import annotations

import numpy as np

from .iqa import masked_psnr, psnr_record, ssim_per_frame, ssim_record


def fidelity_metrics(output: np.ndarray, edited_frames: dict[int, np.ndarray]) -> dict[str, dict]:
    """PSNR/SSIM of ``output[t]`` vs ``edited_frames[t]``: first frame (t = 0) and the extra ones (mean)."""
    res = {}
    groups = {"first_frame": [t for t in edited_frames if t == 0], "extra_edit": [t for t in edited_frames if t != 0]}
    for prefix, ts in groups.items():
        ts = sorted(t for t in ts if 0 <= t < len(output))
        what = "edited first frame" if prefix == "first_frame" else "extra edited frames"
        empty = f"n/a (no {what})"
        if ts:
            out = output[ts]
            ref = np.stack([edited_frames[t] for t in ts])  # (n, H, W, 3)
            psnr, ssim = masked_psnr(out, ref), ssim_per_frame(out, ref)
        else:
            psnr, ssim = float("nan"), np.array([])
        res[f"{prefix}_psnr"] = psnr_record(psnr, f"PSNR vs {what}", "fidelity", empty)
        res[f"{prefix}_ssim"] = ssim_record(ssim, f"SSIM vs {what}", "fidelity", empty)
    return res
