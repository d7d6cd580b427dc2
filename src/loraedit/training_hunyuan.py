"""Training samples on HunyuanVideo-I2V: the same variants and windows as `training.encode_samples`.

Only the encoding differs from Wan: the Llava text encoder reads the condition image together with
the prompt, so text is encoded per sample (with that sample's image) rather than once per clip, and
the condition is the 17-channel `conditioning_hunyuan.build_condition`. The training loop itself
(`training.train`, `training.flow_matching_loss`) is shared.
"""

from __future__ import annotations

import numpy as np
import torch

from . import conditioning as cond
from . import conditioning_hunyuan as hy
from . import training as tr
from .models.hunyuan import HunyuanEncoders


@torch.no_grad()
def _sample(encoders: HunyuanEncoders, target: np.ndarray, source: np.ndarray, keep: np.ndarray, prompt: str,
            image: np.ndarray, name: str, kind: str, weight: float, mask_mode: str, device: torch.device) -> dict:
    """target/source uint8 (T, H, W, 3), keep (T, H, W): latents of target, condition of source greyed by keep."""
    keep_t = torch.from_numpy(keep.astype(np.float32)).unsqueeze(0)  # (1, T, H, W)
    text, _ = hy.encode_prompts(encoders, prompt, image, device=device)
    return {
        "name": name,
        "kind": kind,
        "weight": weight,
        "latents": hy.encode_video(encoders.vae, cond.frames_to_video(target)).cpu(),  # (1, 16, T_lat, h, w)
        "condition": hy.build_condition(encoders.vae, cond.frames_to_video(source), keep_t, mask_mode).cpu(),  # (1, 17, ...)
        **{k: v.cpu() for k, v in text.items()},  # prompt_embeds (1, L, D), prompt_attention_mask (1, L), pooled (1, D_pool)
    }


@torch.no_grad()
def encode_samples(encoders: HunyuanEncoders, frames: np.ndarray, keep: np.ndarray, edit_region: np.ndarray,
                   train_prompt: str, settings: tr.TrainSettings, device: torch.device, with_refs: bool,
                   extra_refs: dict | None = None, edited_first: np.ndarray | None = None,
                   mask_mode: str = "nearest") -> list[dict]:
    """`training.encode_samples` for this backend; `keep` is already the variant's stage-1 mask,
    `edit_region` (T, H, W) bool the user's edit region (`train.recolor_copies`).

    Clip (or low-cost windows, each conditioned on its own first frame, image = that frame) and, for
    mask+ref, one sample per extra edited frame (target = the edited frame, condition = the unedited
    frame greyed by its own mask, image = `train.ref_clip_image`).
    """
    samples = [_sample(encoders, win, win, win_keep, train_prompt, win[0], name, "clip", weight, mask_mode, device)
               for name, win, win_keep, weight in tr.clip_parts(frames, keep, edit_region, settings)]
    if not with_refs:
        return samples
    if not extra_refs:
        raise ValueError("mask+ref needs extra edited frames (sheet column extra_edits)")
    weight = settings.ref_weight / len(extra_refs)
    for t, (edited, prompt) in sorted(extra_refs.items()):
        image = tr.reference_clip_image(frames, t, edited_first, settings)
        samples.append(_sample(encoders, edited[None], frames[t:t + 1], keep[t:t + 1], prompt, image, f"ref{t}", "ref",
                               weight, mask_mode, device))
    return samples
