"""Inference (Sec. 3.3): the stage-1 mask, condition frame 1 replaced by the edited first frame.

The denoising loop is the stock `WanImageToVideoPipeline.__call__` loop (same noise draw, same
dtype casts, same classifier-free guidance, same scheduler calls) with our own 36-channel input, so
with the stock "frame 1 only" mask it reproduces the stock pipeline (oracle test).
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import torch
from diffusers.utils.torch_utils import randn_tensor
from tqdm.auto import tqdm

from . import conditioning as cond
from .models.wan import WanModels, make_scheduler

# Wan's standard negative prompt (from the Wan2.1 reference configs).
WAN_NEGATIVE_PROMPT = (
    "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，低质量，"
    "JPEG压缩残留，丑陋的，残缺的，多余的手指，画得不好的手部，画得不好的脸部，畸形的，毁容的，形态畸形的肢体，"
    "手指融合，静止不动的画面，杂乱的背景，三条腿，背景人很多，倒着走"
)
# The official LoRA-Edit inference's English rendering of it (`inference.py` of the official code).
OFFICIAL_NEGATIVE_PROMPT = (
    "Overexposure, static, blurred details, subtitles, paintings, pictures, still, overall gray, worst quality, "
    "low quality, JPEG compression residue, ugly, mutilated, redundant fingers, poorly painted hands, poorly "
    "painted faces, deformed, disfigured, deformed limbs, fused fingers, cluttered background, three legs, a lot "
    "of people in the background, upside down"
)
# infer.negative_prompt: one of these names, or any other text used as given.
NEGATIVE_PROMPTS = {"wan": WAN_NEGATIVE_PROMPT, "official": OFFICIAL_NEGATIVE_PROMPT}
SCHEDULES = ("official", "diffusers")


def official_sigmas(num_steps: int, shift: float) -> np.ndarray:
    """The official code's sampler (DiffSynth `FlowMatchScheduler(shift, sigma_min=0, extra_one_step=True)`):
    sigma_i = shift s / (1 + (shift - 1) s) for s = linspace(1, 0, N + 1)[:-1]; the last step goes to 0.
    Shift 5, 30 steps ends ..., 0.357, 0.263, 0.147 -> 0 (diffusers' Euler: ..., 0.284, 0.170, 0.024 -> 0).
    Returns the N unshifted s (diffusers' Euler applies the same shift to custom sigmas)."""
    return np.linspace(1.0, 0.0, num_steps + 1)[:-1].astype(np.float32)


@dataclasses.dataclass
class InferSettings:
    num_steps: int = 30
    guidance_scale: float = 5.0
    guidance_scale_2: float | None = None  # Wan2.2 low-noise expert; defaults to guidance_scale
    shift: float = 5.0
    scheduler: str = "euler"
    schedule: str = "official"  # official (DiffSynth sigmas, the paper's numbers) | diffusers (stock Euler)
    seed: int = 0
    negative_prompt: str = WAN_NEGATIVE_PROMPT
    mask_downsample: str = "nearest"
    tiled_decode: bool = False
    image_preprocess: str = "resize"  # CLIP input: "resize" (official, whole frame) | "center_crop" (stock)

    @classmethod
    def from_config(cls, cfg: dict) -> "InferSettings":
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in (cfg or {}).items() if k in names and v is not None}
        if "negative_prompt" in values:
            values["negative_prompt"] = NEGATIVE_PROMPTS.get(values["negative_prompt"], values["negative_prompt"])
        return cls(**values)


def set_schedule(scheduler, settings: InferSettings, device: torch.device) -> None:
    if settings.schedule not in SCHEDULES:
        raise ValueError(f"infer.schedule: unknown {settings.schedule!r} (choose {'|'.join(SCHEDULES)})")
    if settings.schedule == "diffusers":
        scheduler.set_timesteps(settings.num_steps, device=device)
    elif settings.scheduler != "euler":
        raise ValueError(f"infer.schedule: official is the Euler sampler's schedule; infer.scheduler is "
                         f"{settings.scheduler!r} (use euler, or schedule: diffusers)")
    else:
        scheduler.set_timesteps(sigmas=official_sigmas(settings.num_steps, settings.shift).tolist(), device=device)


@torch.no_grad()
def denoise(models: WanModels, condition: torch.Tensor, prompt_embeds: torch.Tensor,
            negative_embeds: torch.Tensor | None, image_embeds: torch.Tensor | None,
            settings: InferSettings, device: torch.device, progress: bool = True) -> torch.Tensor:
    """Flow-matching sampling. condition (1, 20, T_lat, h, w) -> latents (1, 16, T_lat, h, w) float32."""
    scheduler = make_scheduler(settings.scheduler, settings.shift)
    set_schedule(scheduler, settings, device)
    transformer_dtype = models.transformers[0].dtype
    generator = torch.Generator(device=device).manual_seed(settings.seed)
    shape = (1, 16) + tuple(condition.shape[2:])
    latents = randn_tensor(shape, generator=generator, device=device, dtype=torch.float32)
    condition = condition.to(device=device, dtype=torch.float32)
    prompt_embeds = prompt_embeds.to(device, transformer_dtype)
    use_cfg = settings.guidance_scale > 1.0 and negative_embeds is not None
    if use_cfg:
        negative_embeds = negative_embeds.to(device, transformer_dtype)
    if image_embeds is not None:
        image_embeds = image_embeds.to(device, transformer_dtype)
    boundary = models.spec.boundary_ratio
    boundary_t = None if boundary is None else boundary * scheduler.config.num_train_timesteps

    for t in tqdm(scheduler.timesteps, desc="denoise", disable=not progress):
        if boundary_t is None or t >= boundary_t:
            model, scale = models.transformers[0], settings.guidance_scale
        else:  # Wan2.2: the low-noise expert
            model, scale = models.transformers[1], settings.guidance_scale_2 or settings.guidance_scale
        latent_input = torch.cat([latents, condition], dim=1).to(transformer_dtype)  # (1, 36, T_lat, h, w)
        timestep = t.expand(latents.shape[0])
        noise_pred = model(hidden_states=latent_input, timestep=timestep, encoder_hidden_states=prompt_embeds,
                           encoder_hidden_states_image=image_embeds, return_dict=False)[0]
        if use_cfg:
            noise_uncond = model(hidden_states=latent_input, timestep=timestep,
                                 encoder_hidden_states=negative_embeds, encoder_hidden_states_image=image_embeds,
                                 return_dict=False)[0]
            noise_pred = noise_uncond + scale * (noise_pred - noise_uncond)
        latents = scheduler.step(noise_pred, t, latents, return_dict=False)[0]
    return latents


def method_keep(method: str, keep: np.ndarray) -> np.ndarray:
    """The keep mask a variant infers with: the naive variant (Sec. 3.1) uses the stock I2V mask at
    inference too; every other one the per-pixel mask. keep (T, H, W) -> (T, H, W)."""
    return cond.first_frame_keep_mask(*keep.shape) if method == "naive" else keep


def inference_condition(frames: np.ndarray, edited_first: np.ndarray, keep: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Input video with frame 1 replaced by the edited first frame, and the keep mask.

    frames uint8 (T, H, W, 3), edited_first (H, W, 3), keep (T, H, W) -> (1, 3, T, H, W), (1, T, H, W)
    """
    video = frames.copy()
    video[0] = edited_first
    keep = keep.astype(np.float32).copy()
    keep[0] = 1.0  # the edited first frame is always kept
    return cond.frames_to_video(video), torch.from_numpy(keep).unsqueeze(0)


@torch.no_grad()
def edit_video(models: WanModels, frames: np.ndarray, edited_first: np.ndarray, keep: np.ndarray,
               prompt: str, settings: InferSettings, device: torch.device, progress: bool = True) -> np.ndarray:
    """Edit a clip: uint8 (T, H, W, 3) + edited frame 1 + keep mask (T, H, W) -> uint8 (T, H, W, 3)."""
    if models.spec.family == "hunyuan":  # HunyuanVideo-I2V: its own 33-channel loop
        from .inference_hunyuan import edit_video as edit_hunyuan

        return edit_hunyuan(models, frames, edited_first, keep, prompt, settings, device, progress)
    enc = models.encoders
    video, keep_t = inference_condition(frames, edited_first, keep)
    condition = cond.build_condition(enc.vae, video, keep_t, settings.mask_downsample)
    prompt_embeds, negative_embeds = cond.encode_prompts(
        enc, prompt, settings.negative_prompt if settings.guidance_scale > 1.0 else None, device=device)
    image_embeds = cond.encode_image(enc, edited_first, device, settings.image_preprocess)
    latents = denoise(models, condition, prompt_embeds, negative_embeds, image_embeds, settings, device, progress)
    if settings.tiled_decode:
        enc.vae.enable_tiling()
    return cond.video_to_frames(cond.decode_latents(enc.vae, latents))


def composite_background(output: np.ndarray, source: np.ndarray, keep: np.ndarray, feather_px: int = 5) -> np.ndarray:
    """Beyond the paper: paste the kept background back with a feathered mask (frames 2..T).

    output, source uint8 (T, H, W, 3); keep (T, H, W) 1 = keep -> uint8 (T, H, W, 3)
    """
    out = output.astype(np.float32)
    for t in range(1, len(out)):
        alpha = keep[t].astype(np.float32)
        if feather_px > 0:
            k = 2 * feather_px + 1
            # Erode first so the feather never bleeds background over the edited region.
            alpha = cv2.erode(alpha, np.ones((k, k), np.uint8))
            alpha = cv2.GaussianBlur(alpha, (k, k), feather_px / 2)
        out[t] = alpha[..., None] * source[t] + (1 - alpha[..., None]) * out[t]
    return np.clip(out.round(), 0, 255).astype(np.uint8)
