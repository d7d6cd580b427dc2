"""Sec. 3.3.1 of LoRA-Edit on HunyuanVideo-I2V (33-channel `latent_concat` release, paper Sec. 4.4).

The transformer input per latent voxel is cat([latents (16), image latents (16), mask (1)]).
The stock `HunyuanVideoImageToVideoPipeline` fills the image-latent slot with the VAE latent of the
first frame on latent frame 0 (zeros after it) and the mask with 1 on latent frame 0 only.
LoRA-Edit puts the condition video there instead:

- image latents = VAE(condition video) * mask, where the condition video is frame 1 = the (edited)
  first frame and later frames the originals with the edit region greyed (`conditioning.grey_out`).
  Multiplying by the latent mask keeps the stock convention "unknown = latent 0": with the stock
  mask (latent frame 0 only) this is exactly the stock input (oracle test);
- mask = the keep mask per latent frame (1 = keep, 0 = generate). Latent frame 0 is pixel frame 0;
  latent frame k >= 1 folds pixel frames 4k-3 .. 4k with `min`: a latent frame counts as kept only
  where all four of its frames are kept, so no pixel that must change is ever marked as given.
  Wan has 4 mask channels (one per folded frame: sub-frame timing survives); Hunyuan has 1, so
  that timing is lost and the LoRA has to learn the extended mask from the single channel.

Text goes through the Llava-Llama-3 encoder with the image tokens of the condition image, and the
CLIP text encoder's pooled output, by the stock pipeline's own `encode_prompt`.
"""

from __future__ import annotations

import numpy as np
import torch
from diffusers import AutoencoderKLHunyuanVideo, HunyuanVideoTransformer3DModel
from PIL import Image

from ... import conditioning as cond
from .loader import HunyuanEncoders

# The stock pipeline starts from 0.999 noise + 0.001 first-frame image latent (all latent frames).
IMAGE_NOISE_MIX = 0.001
# What the transformer gets besides the latents: keys of a training sample / of `encode_text`.
TEXT_KEYS = ("prompt_embeds", "prompt_attention_mask", "pooled_prompt_embeds")


@torch.no_grad()
def encode_video(
    vae: AutoencoderKLHunyuanVideo, video: torch.Tensor, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """(B, 3, T, H, W) in [-1, 1] -> scaled posterior-mode latents (B, 16, T_lat, H/8, W/8)."""
    device = next(vae.parameters()).device
    latents = vae.encode(video.to(device=device, dtype=vae.dtype)).latent_dist.mode()
    return latents.to(dtype) * vae.config.scaling_factor


@torch.no_grad()
def decode_latents(vae: AutoencoderKLHunyuanVideo, latents: torch.Tensor) -> torch.Tensor:
    """Scaled latents (B, 16, T_lat, h, w) -> video (B, 3, 4 (T_lat - 1) + 1, H, W) in [-1, 1]: every frame
    (the stock pipeline drops the first 4; here frame 1 is the edited frame and all frames align with the input)."""
    return vae.decode(latents.to(vae.dtype) / vae.config.scaling_factor, return_dict=False)[0]


def latent_keep_mask(keep: torch.Tensor, latent_hw: tuple[int, int], mode: str = "nearest") -> torch.Tensor:
    """Pixel keep-mask (B, T, H, W) -> the transformer's one mask channel (B, 1, T_lat, h, w).

    Wan's four folded channels (`conditioning.latent_keep_mask`: latent frame 0 = pixel frame 0,
    latent frame k = pixel frames 4k-3..4k, same spatial modes), reduced by `min`.
    """
    return cond.latent_keep_mask(keep, latent_hw, mode).amin(dim=1, keepdim=True)


def build_condition(
    vae: AutoencoderKLHunyuanVideo, video: torch.Tensor, keep: torch.Tensor, mask_mode: str = "nearest"
) -> torch.Tensor:
    """The 17 conditioning channels: image latents of the greyed video (16) + mask (1).

    video (B, 3, T, H, W) in [-1, 1]; keep (B, T, H, W), 1 = keep -> (B, 17, T_lat, H/8, W/8) float32.
    """
    greyed = cond.grey_out(video, keep)
    latents = encode_video(vae, greyed)  # (B, 16, T_lat, h, w)
    if greyed.shape[2] > 1:
        # Frame 1 on its own, as the stock pipeline encodes the image: this VAE's GroupNorm spans
        # time, so latent frame 0 of a whole-video encode is not quite the image's latent.
        latents[:, :, :1] = encode_video(vae, greyed[:, :, :1])
    mask = latent_keep_mask(keep, latents.shape[-2:], mask_mode).to(latents.device, latents.dtype)
    return torch.cat([latents * mask, mask], dim=1)


def keep_channel(condition: torch.Tensor) -> torch.Tensor:
    """(B, 17, T_lat, h, w) -> the mask channel (B, 1, T_lat, h, w), 1 = kept."""
    return condition[:, -1:]


def initial_latents(noise: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
    """As the stock pipeline: 0.999 noise + 0.001 latent of frame 1 on every latent frame. (B, 16, T_lat, h, w)"""
    first = condition[:, :-1, :1]  # (B, 16, 1, h, w): frame 1 is always kept, so never masked
    return noise * (1 - IMAGE_NOISE_MIX) + first * IMAGE_NOISE_MIX


@torch.no_grad()
def encode_text(
    encoders: HunyuanEncoders,
    prompt: str,
    image: np.ndarray,
    negative_prompt: str | None = None,
    device: torch.device | None = None,
    image_preprocess: str = "resize",
) -> tuple[dict, dict | None]:
    """Llava-Llama-3 embeddings with the image tokens (and their mask) + the CLIP pooled embedding.

    image uint8 (H, W, 3): the condition image (the edited frame 1 at inference), through the stock
    image processor (`image_preprocess` is Wan's CLIP option and has no effect here). The negative
    prompt, when given, is encoded with a black image, as the stock pipeline does.
    Returns ({prompt_embeds (1, L, D), prompt_attention_mask (1, L), pooled_prompt_embeds (1, D_pool)}, same or None).
    """
    pipe = encoders.pipe
    device = device or next(pipe.text_encoder.parameters()).device

    def encode(text: str, picture: Image.Image) -> dict:
        embeds, pooled, mask = pipe.encode_prompt(
            image=picture,
            prompt=text,
            prompt_template=encoders.prompt_template,
            device=device,
            max_sequence_length=encoders.max_sequence_length,
        )
        return dict(zip(TEXT_KEYS, (embeds, mask, pooled)))

    positive = encode(prompt, Image.fromarray(image))
    if negative_prompt is None:
        return positive, None
    black = Image.new("RGB", (image.shape[1], image.shape[0]), 0)
    return positive, encode(negative_prompt, black)


def predict(
    transformer: HunyuanVideoTransformer3DModel,
    latent_input: torch.Tensor,
    timestep: torch.Tensor,
    text: dict,
    device: torch.device,
) -> torch.Tensor:
    """One transformer pass. latent_input (B, 33, T_lat, h, w), timestep (B,) in [0, 1000] -> (B, 16, T_lat, h, w).

    `text` holds TEXT_KEYS. A guidance-distilled checkpoint gets the stock default embedded guidance (1.0).
    """
    dtype = transformer.dtype
    guidance = None
    if transformer.config.guidance_embeds:
        guidance = torch.full((latent_input.shape[0],), 1000.0, device=device, dtype=dtype)
    return transformer(
        hidden_states=latent_input,
        timestep=timestep,
        encoder_hidden_states=text["prompt_embeds"].to(device, dtype),
        encoder_attention_mask=text["prompt_attention_mask"].to(device, dtype),
        pooled_projections=text["pooled_prompt_embeds"].to(device, dtype),
        guidance=guidance,
        return_dict=False,
    )[0]


def extra_lora_files(state: dict[str, torch.Tensor], alpha: float) -> dict[str, dict[str, torch.Tensor]]:
    """HunyuanVideo LoRAs are written in the diffusers format only."""
    return {}
