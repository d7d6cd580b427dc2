"""Wan image-to-video loaders: the real diffusers checkpoints and the tiny offline build.

A backend gives two things:
- the *encoders* (tokenizer + UMT5 text encoder, CLIP image encoder, VAE) wrapped in a stock
  `WanImageToVideoPipeline` with no transformer, so prompt/image encoding is diffusers' own code;
- the *transformer(s)*: one for Wan2.1, two experts split by timestep for Wan2.2-I2V-A14B.
Training loads the encoders, caches their outputs and frees them before the transformer is loaded.
"""

from __future__ import annotations

import torch
from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanImageToVideoPipeline, WanTransformer3DModel

from ..base import BackendSpec, cast_like_from_pretrained, checkpoint_path, tiny_sizes
from . import tiny

PIPELINE_CLS = WanImageToVideoPipeline


def load_encoders(
    spec: BackendSpec, model_cfg: dict, device: torch.device, dtype: torch.dtype
) -> WanImageToVideoPipeline:
    """Tokenizer, text encoder, image encoder and VAE in a transformer-less stock pipeline.

    The VAE stays in float32 (as the diffusers Wan examples recommend); the encoders use `dtype`.
    """
    if spec.tiny:
        seed, sizes = tiny_sizes(model_cfg)
        tokenizer = tiny.build_tiny_tokenizer()
        image_encoder, image_processor = (
            tiny.build_tiny_image_encoder(seed, **sizes) if spec.has_image_encoder else (None, None)
        )
        pipe = WanImageToVideoPipeline(
            tokenizer=tokenizer,
            text_encoder=tiny.build_tiny_text_encoder(seed, vocab_size=len(tokenizer), **sizes),
            vae=tiny.build_tiny_vae(seed, **sizes),
            scheduler=FlowMatchEulerDiscreteScheduler(shift=5.0),
            transformer=None,
            image_encoder=image_encoder,
            image_processor=image_processor,
        )
    else:
        path = checkpoint_path(model_cfg, spec)
        vae = AutoencoderKLWan.from_pretrained(path, subfolder="vae", torch_dtype=torch.float32)
        pipe = WanImageToVideoPipeline.from_pretrained(
            path, vae=vae, transformer=None, transformer_2=None, torch_dtype=dtype
        )
    pipe.text_encoder.to(device, dtype)
    if pipe.image_encoder is not None:
        pipe.image_encoder.to(device, dtype)
    pipe.vae.to(device, torch.float32)
    return pipe


def load_transformers(
    spec: BackendSpec, model_cfg: dict, device: torch.device | None, dtype: torch.dtype
) -> list[WanTransformer3DModel]:
    """The backend's transformer(s), in `dtype`; `device=None` leaves them on the CPU (offloading)."""
    if spec.tiny:
        seed, sizes = tiny_sizes(model_cfg)
        models = [
            tiny.build_tiny_transformer(seed + 7 * i, with_image=spec.has_image_encoder, **sizes)
            for i in range(len(spec.experts))
        ]
        return [cast_like_from_pretrained(m, device, dtype) for m in models]
    path = checkpoint_path(model_cfg, spec)
    models = [WanTransformer3DModel.from_pretrained(path, subfolder=name, torch_dtype=dtype) for name in spec.experts]
    return [m.to(device) if device is not None else m for m in models]  # from_pretrained kept fp32 modules


def assemble_pipeline(
    encoders: WanImageToVideoPipeline, transformers: list[WanTransformer3DModel], spec: BackendSpec
) -> WanImageToVideoPipeline:
    """A stock pipeline over the given components (used to load LoRAs and for oracle checks)."""
    return WanImageToVideoPipeline(
        tokenizer=encoders.tokenizer,
        text_encoder=encoders.text_encoder,
        vae=encoders.vae,
        scheduler=encoders.scheduler,
        transformer=transformers[0],
        transformer_2=transformers[1] if len(transformers) > 1 else None,
        image_encoder=encoders.image_encoder,
        image_processor=encoders.image_processor,
        boundary_ratio=spec.boundary_ratio,
    )
