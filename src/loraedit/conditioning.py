"""Sec. 3.3.1 of LoRA-Edit, the part every model family shares: the I2V mask as a per-pixel,
per-frame edit mask.

A mask M (T, H, W) has 1 = keep, 0 = generate. The condition video is the input with the 0-region
greyed (`grey_out`); at inference its frame 1 is the edited first frame (`inference_condition`).
Each family turns the pixel mask into its transformer's mask channels from the same temporal fold
(`latent_keep_mask`: the VAEs of Wan and HunyuanVideo both put 4 frames into a latent frame after
the first) and encodes the condition video with its own VAE (`backends/<family>/conditioning.py`).
With M = "frame 1 only" every family reduces exactly to its stock I2V pipeline (oracle tests).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

VAE_TEMPORAL = 4  # the Wan and HunyuanVideo VAEs: 4 frames per latent frame (after the first)
VAE_SPATIAL = 8  # and 8x8 pixels per latent pixel


def latent_num_frames(num_frames: int) -> int:
    if (num_frames - 1) % VAE_TEMPORAL:
        raise ValueError(f"num_frames must be 4k+1, got {num_frames}")
    return (num_frames - 1) // VAE_TEMPORAL + 1


def frames_to_video(frames: np.ndarray) -> torch.Tensor:
    """uint8 (T, H, W, 3) -> float32 (1, 3, T, H, W) in [-1, 1], as diffusers' VideoProcessor does."""
    x = torch.from_numpy(frames.astype(np.float32) / 255.0)  # (T, H, W, 3) in [0, 1]
    x = 2.0 * x - 1.0
    return x.permute(3, 0, 1, 2).unsqueeze(0).contiguous()


def video_to_frames(video: torch.Tensor) -> np.ndarray:
    """float (1, 3, T, H, W) in [-1, 1] -> uint8 (T, H, W, 3), rounding as diffusers' postprocess."""
    x = (video[0].float().clamp(-1, 1) / 2 + 0.5).permute(1, 2, 3, 0).cpu().numpy()  # (T, H, W, 3)
    return (x * 255).round().astype(np.uint8)


def first_frame_keep_mask(num_frames: int, height: int, width: int) -> np.ndarray:
    """The stock I2V mask (Sec. 3.1, the naive variant): keep frame 1, generate everything else."""
    mask = np.zeros((num_frames, height, width), dtype=np.uint8)
    mask[0] = 1
    return mask


def latent_keep_mask(keep: torch.Tensor, latent_hw: tuple[int, int], mode: str = "nearest") -> torch.Tensor:
    """Pixel keep-mask (B, T, H, W) -> 4 folded mask channels (B, 4, T_lat, h, w), Wan's mask input.

    mode 'nearest' (official code) samples one pixel per 8x8 cell; 'conservative' min-pools, so
    a latent pixel counts as kept only if every pixel under it is kept (no edited pixel is 'kept').
    Then, exactly as `WanImageToVideoPipeline.prepare_latents`: frame 1 is repeated 4 times (the VAE
    encodes it alone), and the T+3 frames are folded into 4 channels per latent frame.
    """
    b, t, _, _ = keep.shape
    h, w = latent_hw
    keep = keep.float()
    if mode == "nearest":
        small = F.interpolate(keep, size=(h, w), mode="nearest")  # (B, T, h, w)
    elif mode == "conservative":
        small = -F.adaptive_max_pool2d(-keep, (h, w))
    else:
        raise ValueError(f"conditioning.mask_downsample: unknown mode {mode!r} (nearest|conservative)")
    small = small.unsqueeze(1)  # (B, 1, T, h, w)
    first = torch.repeat_interleave(small[:, :, 0:1], dim=2, repeats=VAE_TEMPORAL)  # (B, 1, 4, h, w)
    small = torch.cat([first, small[:, :, 1:]], dim=2)  # (B, 1, T + 3, h, w)
    small = small.view(b, -1, VAE_TEMPORAL, h, w)  # (B, T_lat, 4, h, w)
    return small.transpose(1, 2)  # (B, 4, T_lat, h, w)


def grey_out(video: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Fill the generate-region with grey (0 in [-1, 1]; the official code paints 128 grey).

    video (B, 3, T, H, W), keep (B, T, H, W) -> (B, 3, T, H, W)
    """
    return torch.where(keep.unsqueeze(1) > 0.5, video, torch.zeros_like(video))


def inference_condition(
    frames: np.ndarray, edited_first: np.ndarray, keep: np.ndarray
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sec. 3.3: the input video with frame 1 replaced by the edited first frame, and the keep mask.

    frames uint8 (T, H, W, 3), edited_first (H, W, 3), keep (T, H, W) -> (1, 3, T, H, W), (1, T, H, W)
    """
    video = frames.copy()
    video[0] = edited_first
    keep = keep.astype(np.float32).copy()
    keep[0] = 1.0  # the edited first frame is always kept
    return frames_to_video(video), torch.from_numpy(keep).unsqueeze(0)
