"""Sec. 3.3.1 of LoRA-Edit: the I2V mask repurposed as a per-pixel, per-frame edit mask.

Wan2.1-I2V feeds its transformer 36 channels per latent voxel:
16 noisy latent + 4 mask + 16 condition latent. Stock diffusers builds the 4 mask channels from
"keep frame 1" only (`WanImageToVideoPipeline.prepare_latents`). Here they are built from a mask
M (T, H, W), 1 = keep, 0 = generate, and the condition video is the input with the 0-region greyed.
With M = "frame 1 only" everything below reduces exactly to the stock pipeline (oracle test).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKLWan, WanImageToVideoPipeline
from PIL import Image

VAE_TEMPORAL = 4  # Wan VAE: 4 frames per latent frame (after the first)
VAE_SPATIAL = 8  # and 8x8 pixels per latent pixel
MAX_SEQUENCE_LENGTH = 512  # Wan pads text to 512 tokens; image tokens are split off by that length


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
    """Pixel keep-mask (B, T, H, W) -> the transformer's 4 mask channels (B, 4, T_lat, h, w).

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


def _latent_stats(vae: AutoencoderKLWan, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    z = vae.config.z_dim
    mean = torch.tensor(vae.config.latents_mean).view(1, z, 1, 1, 1).to(like.device, like.dtype)
    inv_std = 1.0 / torch.tensor(vae.config.latents_std).view(1, z, 1, 1, 1).to(like.device, like.dtype)
    return mean, inv_std


@torch.no_grad()
def encode_video(vae: AutoencoderKLWan, video: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(B, 3, T, H, W) in [-1, 1] -> normalised posterior-mode latents (B, 16, T_lat, H/8, W/8)."""
    device = next(vae.parameters()).device
    latents = vae.encode(video.to(device=device, dtype=vae.dtype)).latent_dist.mode()
    latents = latents.to(dtype=dtype)
    mean, inv_std = _latent_stats(vae, latents)
    return (latents - mean) * inv_std


@torch.no_grad()
def decode_latents(vae: AutoencoderKLWan, latents: torch.Tensor) -> torch.Tensor:
    """Normalised latents (B, 16, T_lat, h, w) -> video (B, 3, T, H, W) in [-1, 1]."""
    latents = latents.to(vae.dtype)
    mean, inv_std = _latent_stats(vae, latents)
    return vae.decode(latents / inv_std + mean, return_dict=False)[0]


def build_condition(vae: AutoencoderKLWan, video: torch.Tensor, keep: torch.Tensor,
                    mask_mode: str = "nearest") -> torch.Tensor:
    """The 20 conditioning channels: mask (4) + VAE latent of the greyed video (16).

    video (B, 3, T, H, W) in [-1, 1]; keep (B, T, H, W), 1 = keep -> (B, 20, T_lat, H/8, W/8) float32.
    """
    latents = encode_video(vae, grey_out(video, keep), dtype=torch.float32)
    mask = latent_keep_mask(keep, latents.shape[-2:], mode=mask_mode).to(latents.device, latents.dtype)
    return torch.cat([mask, latents], dim=1)


@torch.no_grad()
def encode_prompts(pipe: WanImageToVideoPipeline, prompt: str, negative_prompt: str | None = None,
                   device: torch.device | None = None, dtype: torch.dtype | None = None):
    """UMT5 embeddings padded to 512 tokens, by diffusers' own `encode_prompt`.

    Returns (prompt_embeds (1, 512, D), negative_embeds (1, 512, D) or None).
    """
    cfg = negative_prompt is not None
    return pipe.encode_prompt(
        prompt, negative_prompt=negative_prompt, do_classifier_free_guidance=cfg,
        max_sequence_length=MAX_SEQUENCE_LENGTH, device=device, dtype=dtype,
    )


IMAGE_PREPROCESS = ("resize", "center_crop")


def resize_for_image_encoder(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The whole frame squeezed to the encoder's (height, width), as the original Wan code and the
    official LoRA-Edit inference do (bicubic, align_corners=False). uint8 (H, W, 3) -> float (h, w, 3) in [0, 1]."""
    x = torch.from_numpy(image.astype(np.float32) / 255.0).permute(2, 0, 1).unsqueeze(0)  # (1, 3, H, W)
    x = F.interpolate(x, size=size, mode="bicubic", align_corners=False).clamp(0, 1)
    return x[0].permute(1, 2, 0).numpy()


@torch.no_grad()
def encode_image(pipe: WanImageToVideoPipeline, image: np.ndarray, device: torch.device | None = None,
                 preprocess: str = "resize"):
    """CLIP vision hidden_states[-2] of one frame (1, N, D_img), or None for backends without CLIP.

    preprocess "resize" (official, default): the whole frame resized to the encoder's input size, so
    the sides of an 832x480 frame are seen; "center_crop": the stock diffusers pipeline
    (`CLIPImageProcessor`: short side to the input size, then a centre crop).
    """
    if pipe.image_encoder is None:
        return None
    if preprocess not in IMAGE_PREPROCESS:
        raise ValueError(f"image_preprocess: unknown {preprocess!r} (choose {'|'.join(IMAGE_PREPROCESS)})")
    device = device or next(pipe.image_encoder.parameters()).device
    if preprocess == "center_crop":
        return pipe.encode_image(Image.fromarray(image), device=device)
    processor = pipe.image_processor
    resized = resize_for_image_encoder(image, (processor.crop_size["height"], processor.crop_size["width"]))
    # Only the normalisation is left to the processor (no second resize, crop or rescale).
    inputs = processor(images=resized, do_resize=False, do_center_crop=False, do_rescale=False, return_tensors="pt")
    encoder_device = next(pipe.image_encoder.parameters()).device
    hidden = pipe.image_encoder(**inputs.to(encoder_device), output_hidden_states=True).hidden_states
    return hidden[-2].to(device)
