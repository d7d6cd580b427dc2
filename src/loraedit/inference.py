"""Inference (Sec. 3.3): the stage-1 mask, condition frame 1 replaced by the edited first frame.

One sampling loop for every model family: the stock I2V pipelines' loop (`WanImageToVideoPipeline`,
`HunyuanVideoImageToVideoPipeline`: same noise draw, dtype casts, classifier-free guidance and
scheduler calls) with the family's condition, starting latents and model call
(`backends.base.Family`). With the stock "frame 1 only" mask it reproduces each stock pipeline
(oracle tests).

`infer.cache` (`sampling_cache`): none (every call computed), teacache (the official inference's
TeaCache) or first_block (diffusers' FirstBlockCache); `denoise` / `edit_video` fill a `CacheStats`
when given one and log its summary.

Decoding differs from the stock HunyuanVideo pipeline on purpose: it drops the first 4 decoded
frames. Here all 4 (T_lat - 1) + 1 frames are kept, so frame t of the output is frame t of the
input and of its mask, which the scores, composites and side-by-side videos rely on.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import cv2
import numpy as np
import torch
from diffusers import FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler
from diffusers.utils.torch_utils import randn_tensor
from tqdm.auto import tqdm

from . import conditioning as cond
from . import sampling_cache
from .backends.base import Models
from .sampling_cache import CacheStats

log = logging.getLogger(__name__)

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
    cache: str = "none"  # none | teacache (the official inference's) | first_block (diffusers' FirstBlockCache)
    cache_threshold: float | None = None  # None: the method's default (teacache 0.275, first_block 0.05)
    teacache_coefficients: str = "Wan2.1-I2V-14B-480P"  # the family's fitted polynomial (the official code's)

    @classmethod
    def from_config(cls, cfg: dict) -> InferSettings:
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in (cfg or {}).items() if k in names and v is not None}
        if "negative_prompt" in values:
            values["negative_prompt"] = NEGATIVE_PROMPTS.get(values["negative_prompt"], values["negative_prompt"])
        return cls(**values)


def make_scheduler(kind: str = "euler", shift: float = 5.0, num_train_timesteps: int = 1000) -> Any:
    """Inference sampler: flow-matching Euler (the official default) or UniPC in flow mode."""
    if kind == "euler":
        return FlowMatchEulerDiscreteScheduler(shift=shift, num_train_timesteps=num_train_timesteps)
    if kind == "unipc":
        return UniPCMultistepScheduler(
            prediction_type="flow_prediction",
            use_flow_sigmas=True,
            flow_shift=shift,
            num_train_timesteps=num_train_timesteps,
        )
    raise ValueError(f"infer.scheduler: unknown sampler {kind!r}; choose 'euler' or 'unipc'")


def set_schedule(scheduler, settings: InferSettings, device: torch.device) -> None:
    if settings.schedule not in SCHEDULES:
        raise ValueError(f"infer.schedule: unknown {settings.schedule!r} (choose {'|'.join(SCHEDULES)})")
    if settings.schedule == "diffusers":
        scheduler.set_timesteps(settings.num_steps, device=device)
    elif settings.scheduler != "euler":
        raise ValueError(
            f"infer.schedule: official is the Euler sampler's schedule; infer.scheduler is "
            f"{settings.scheduler!r} (use euler, or schedule: diffusers)"
        )
    else:
        scheduler.set_timesteps(sigmas=official_sigmas(settings.num_steps, settings.shift).tolist(), device=device)


@torch.no_grad()
def denoise(
    models: Models,
    condition: torch.Tensor,
    text: dict,
    negative: dict | None,
    settings: InferSettings,
    device: torch.device,
    progress: bool = True,
    cache_stats: CacheStats | None = None,
) -> torch.Tensor:
    """Flow-matching sampling. condition (1, C_cond, T_lat, h, w) -> latents (1, 16, T_lat, h, w) float32.

    `text` / `negative`: the family's `encode_text` dicts (no negative: no guidance). Wan2.2's
    low-noise expert takes the steps below the boundary with `guidance_scale_2`. `cache_stats`:
    filled in with the transformer calls and those `settings.cache` skipped.
    """
    family = models.family
    # A family's optional TEACACHE (sampling_cache.TeaCacheSpec): Wan's; HunyuanVideo has none.
    teacache = getattr(family, "TEACACHE", None)
    if settings.cache == "teacache" and teacache is None:
        raise ValueError(
            f"infer.cache: teacache is fitted to Wan2.1 only, not the {family.NAME} family (use first_block or none)"
        )
    scheduler = make_scheduler(settings.scheduler, settings.shift)
    set_schedule(scheduler, settings, device)
    generator = torch.Generator(device=device).manual_seed(settings.seed)
    condition = condition.to(device=device, dtype=torch.float32)
    shape = (1, models.transformers[0].config.out_channels) + tuple(condition.shape[2:])
    noise = randn_tensor(shape, generator=generator, device=device, dtype=torch.float32)
    latents = family.initial_latents(noise, condition)
    use_cfg = settings.guidance_scale > 1.0 and negative is not None
    boundary = models.spec.boundary_ratio
    boundary_t = None if boundary is None else boundary * scheduler.config.num_train_timesteps

    num_steps = len(scheduler.timesteps)

    with sampling_cache.cached_sampling(
        models.transformers,
        settings.cache,
        settings.cache_threshold,
        teacache,
        settings.teacache_coefficients,
        cache_stats,
    ) as cache:
        for i, t in enumerate(tqdm(scheduler.timesteps, desc="denoise", disable=not progress)):
            if boundary_t is None or t >= boundary_t:
                model, scale = models.transformers[0], settings.guidance_scale
            else:  # Wan2.2: the low-noise expert
                model, scale = models.transformers[1], settings.guidance_scale_2 or settings.guidance_scale
            latent_input = torch.cat([latents, condition], dim=1).to(model.dtype)  # (1, 16 + C_cond, T_lat, h, w)
            timestep = t.expand(latents.shape[0]).to(latents.dtype)
            with cache.call(model, "cond", i, num_steps):
                noise_pred = family.predict(model, latent_input, timestep, text, device)
            if use_cfg:
                with cache.call(model, "uncond", i, num_steps):
                    noise_uncond = family.predict(model, latent_input, timestep, negative, device)
                noise_pred = noise_uncond + scale * (noise_pred - noise_uncond)
            latents = scheduler.step(noise_pred, t, latents, return_dict=False)[0]
    if settings.cache != "none":
        log.info("denoise: %s", cache.stats.summary())
    return latents


def method_keep(method: str, keep: np.ndarray) -> np.ndarray:
    """The keep mask a variant infers with: the naive variant (Sec. 3.1) uses the stock I2V mask at
    inference too; every other one the per-pixel mask. keep (T, H, W) -> (T, H, W)."""
    return cond.first_frame_keep_mask(*keep.shape) if method == "naive" else keep


@torch.no_grad()
def edit_video(
    models: Models,
    frames: np.ndarray,
    edited_first: np.ndarray,
    keep: np.ndarray,
    prompt: str,
    settings: InferSettings,
    device: torch.device,
    progress: bool = True,
    cache_stats: CacheStats | None = None,
) -> np.ndarray:
    """Edit a clip: uint8 (T, H, W, 3) + edited frame 1 + keep mask (T, H, W) -> uint8 (T, H, W, 3), all T frames.

    `cache_stats`: filled in by `denoise` (the transformer calls `settings.cache` skipped)."""
    family, enc = models.family, models.encoders
    video, keep_t = cond.inference_condition(frames, edited_first, keep)
    condition = family.build_condition(enc.vae, video, keep_t, settings.mask_downsample)
    negative_prompt = settings.negative_prompt if settings.guidance_scale > 1.0 else None
    text, negative = family.encode_text(enc, prompt, edited_first, negative_prompt, device, settings.image_preprocess)
    latents = denoise(models, condition, text, negative, settings, device, progress, cache_stats)
    if settings.tiled_decode:
        enc.vae.enable_tiling()
    return cond.video_to_frames(family.decode_latents(enc.vae, latents))


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
