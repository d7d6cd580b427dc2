"""Sec. 3.3.1 on Wan2.1/2.2-I2V: the 36-channel transformer input.

Wan2.1-I2V feeds its transformer 36 channels per latent voxel: 16 noisy latent + 4 mask + 16
condition latent. Stock diffusers builds the 4 mask channels from "keep frame 1" only
(`WanImageToVideoPipeline.prepare_latents`). Here they are built from the per-pixel keep mask
(`conditioning.latent_keep_mask`) and the condition latent is the VAE latent of the greyed video.
With the stock mask everything below reduces exactly to the stock pipeline (oracle test).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKLWan, WanImageToVideoPipeline, WanTransformer3DModel
from PIL import Image

from ... import conditioning as cond

MAX_SEQUENCE_LENGTH = 512  # Wan pads text to 512 tokens; image tokens are split off by that length
# Every Linear of each transformer block (self- and cross-attention q/k/v/o and the FFN), but not
# the image key/value projections (add_k_proj, add_v_proj), as the official code (diffusion-pipe).
LORA_TARGET_REGEX = r".*blocks\.\d+\.(attn1\.(to_q|to_k|to_v|to_out\.0)|attn2\.(to_q|to_k|to_v|to_out\.0)|ffn\.net\.0\.proj|ffn\.net\.2)"


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


def build_condition(
    vae: AutoencoderKLWan, video: torch.Tensor, keep: torch.Tensor, mask_mode: str = "nearest"
) -> torch.Tensor:
    """The 20 conditioning channels: mask (4) + VAE latent of the greyed video (16).

    video (B, 3, T, H, W) in [-1, 1]; keep (B, T, H, W), 1 = keep -> (B, 20, T_lat, H/8, W/8) float32.
    """
    latents = encode_video(vae, cond.grey_out(video, keep), dtype=torch.float32)
    mask = cond.latent_keep_mask(keep, latents.shape[-2:], mode=mask_mode).to(latents.device, latents.dtype)
    return torch.cat([mask, latents], dim=1)


@torch.no_grad()
def encode_prompts(
    pipe: WanImageToVideoPipeline,
    prompt: str,
    negative_prompt: str | None = None,
    device: torch.device | None = None,
    dtype: torch.dtype | None = None,
):
    """UMT5 embeddings padded to 512 tokens, by diffusers' own `encode_prompt`.

    Returns (prompt_embeds (1, 512, D), negative_embeds (1, 512, D) or None).
    """
    cfg = negative_prompt is not None
    return pipe.encode_prompt(
        prompt,
        negative_prompt=negative_prompt,
        do_classifier_free_guidance=cfg,
        max_sequence_length=MAX_SEQUENCE_LENGTH,
        device=device,
        dtype=dtype,
    )


IMAGE_PREPROCESS = ("resize", "center_crop")


def resize_for_image_encoder(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The whole frame squeezed to the encoder's (height, width), as the original Wan code and the
    official LoRA-Edit inference do (bicubic, align_corners=False). uint8 (H, W, 3) -> float (h, w, 3) in [0, 1]."""
    x = torch.from_numpy(image.astype(np.float32) / 255.0).permute(2, 0, 1).unsqueeze(0)  # (1, 3, H, W)
    x = F.interpolate(x, size=size, mode="bicubic", align_corners=False).clamp(0, 1)
    return x[0].permute(1, 2, 0).numpy()


@torch.no_grad()
def encode_image(
    pipe: WanImageToVideoPipeline, image: np.ndarray, device: torch.device | None = None, preprocess: str = "resize"
):
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


def encode_text(
    encoders: WanImageToVideoPipeline,
    prompt: str,
    image: np.ndarray,
    negative_prompt: str | None,
    device: torch.device | None,
    image_preprocess: str = "resize",
) -> tuple[dict, dict | None]:
    """The transformer's text and image context: umT5 `prompt_embeds` (1, 512, D) and CLIP
    `image_embeds` (1, N, D_img), or None without an image encoder (Wan2.2). The negative prompt
    shares the image embedding, as the stock pipeline."""
    prompt_embeds, negative_embeds = encode_prompts(encoders, prompt, negative_prompt, device=device)
    image_embeds = encode_image(encoders, image, device, image_preprocess)
    text = {"prompt_embeds": prompt_embeds, "image_embeds": image_embeds}
    if negative_embeds is None:
        return text, None
    return text, {"prompt_embeds": negative_embeds, "image_embeds": image_embeds}


def keep_channel(condition: torch.Tensor) -> torch.Tensor:
    """(B, 20, T_lat, h, w) -> the first mask channel (B, 1, T_lat, h, w), 1 = kept."""
    return condition[:, 0:1]


def initial_latents(noise: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
    """Wan starts from pure noise (B, 16, T_lat, h, w)."""
    return noise


def predict(
    transformer: WanTransformer3DModel,
    latent_input: torch.Tensor,
    timestep: torch.Tensor,
    text: dict,
    device: torch.device,
) -> torch.Tensor:
    """One pass. latent_input (B, 36, T_lat, h, w), timestep (B,) in [0, 1000] -> (B, 16, T_lat, h, w)."""
    dtype = transformer.dtype
    image_embeds = text["image_embeds"]
    return transformer(
        hidden_states=latent_input,
        timestep=timestep,
        encoder_hidden_states=text["prompt_embeds"].to(device, dtype),
        encoder_hidden_states_image=None if image_embeds is None else image_embeds.to(device, dtype),
        return_dict=False,
    )[0]
