"""Inference on HunyuanVideo-I2V (paper Sec. 4.4): the project's own loop over the 33-channel input.

The loop is the stock `HunyuanVideoImageToVideoPipeline.__call__` loop for `latent_concat` (same
noise draw, 0.999 noise + 0.001 first-frame latent start, same sigmas, true classifier-free
guidance with the negative prompt encoded on a black image, same scheduler calls), with our
condition (image latents of the condition video + per-latent-frame keep mask). With the stock mask it
reproduces the stock pipeline (tests/test_hunyuan.py).

Decoding differs on purpose: the stock pipeline drops the first 4 decoded frames (9 requested ->
5 returned). Here all 4 (T_lat - 1) + 1 frames are kept: frame 1 is the edited first frame as the
model renders it and frame t of the output stays frame t of the input and its mask, which the
scores, composites and side-by-side videos rely on.
"""

from __future__ import annotations

import numpy as np
import torch
from diffusers.utils.torch_utils import randn_tensor
from tqdm.auto import tqdm

from . import conditioning as cond
from . import conditioning_hunyuan as hy
from .inference import InferSettings, inference_condition, set_schedule
from .models.wan import WanModels, make_scheduler


@torch.no_grad()
def denoise(models: WanModels, condition: torch.Tensor, text: dict, negative: dict | None, settings: InferSettings,
            device: torch.device, progress: bool = True) -> torch.Tensor:
    """Flow-matching sampling. condition (1, 17, T_lat, h, w) -> latents (1, 16, T_lat, h, w) float32.

    The default (`infer.schedule: official`) sigmas linspace(1, 0, N + 1)[:-1] are also the stock
    HunyuanVideo pipeline's; `infer.shift` is the scheduler shift (the 33ch checkpoint ships 7).
    """
    scheduler = make_scheduler(settings.scheduler, settings.shift)
    set_schedule(scheduler, settings, device)
    model = models.transformers[0]
    generator = torch.Generator(device=device).manual_seed(settings.seed)
    condition = condition.to(device=device, dtype=torch.float32)
    shape = (1, condition.shape[1] - 1) + tuple(condition.shape[2:])
    latents = hy.initial_latents(randn_tensor(shape, generator=generator, device=device, dtype=torch.float32),
                                 condition)
    use_cfg = settings.guidance_scale > 1.0 and negative is not None
    for t in tqdm(scheduler.timesteps, desc="denoise", disable=not progress):
        latent_input = torch.cat([latents, condition], dim=1).to(model.dtype)  # (1, 33, T_lat, h, w)
        timestep = t.expand(latents.shape[0]).to(latents.dtype)
        noise_pred = hy.predict(model, latent_input, timestep, text, device)
        if use_cfg:
            noise_uncond = hy.predict(model, latent_input, timestep, negative, device)
            noise_pred = noise_uncond + settings.guidance_scale * (noise_pred - noise_uncond)
        latents = scheduler.step(noise_pred, t, latents, return_dict=False)[0]
    return latents


@torch.no_grad()
def edit_video(models: WanModels, frames: np.ndarray, edited_first: np.ndarray, keep: np.ndarray,
               prompt: str, settings: InferSettings, device: torch.device, progress: bool = True) -> np.ndarray:
    """Edit a clip: uint8 (T, H, W, 3) + edited frame 1 + keep mask (T, H, W) -> uint8 (T, H, W, 3), all T frames."""
    enc = models.encoders
    video, keep_t = inference_condition(frames, edited_first, keep)
    condition = hy.build_condition(enc.vae, video, keep_t, settings.mask_downsample)
    negative_prompt = settings.negative_prompt if settings.guidance_scale > 1.0 else None
    text, negative = hy.encode_prompts(enc, prompt, edited_first, negative_prompt, device=device)
    latents = denoise(models, condition, text, negative, settings, device, progress)
    if settings.tiled_decode:
        enc.vae.enable_tiling()
    return cond.video_to_frames(hy.decode_latents(enc.vae, latents))
