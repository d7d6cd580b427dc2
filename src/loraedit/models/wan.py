"""Wan image-to-video backends behind one interface, shared by the train and infer stages.

A backend gives two things:
- the *encoders* (tokenizer + UMT5 text encoder, CLIP image encoder, VAE) wrapped in a stock
  `WanImageToVideoPipeline` with no transformer, so prompt/image encoding is diffusers' own code;
- the *transformer(s)*: one for Wan2.1, two experts split by timestep for Wan2.2-I2V-A14B.
Training loads the encoders, caches their outputs and frees them before the transformer is loaded.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from diffusers import (
    FlowMatchEulerDiscreteScheduler,
    UniPCMultistepScheduler,
    WanImageToVideoPipeline,
    WanTransformer3DModel,
)

from . import tiny


@dataclasses.dataclass(frozen=True)
class BackendSpec:
    name: str
    default_path: str | None  # a local folder or hub id of the diffusers-format checkpoint
    experts: tuple[str, ...] = ("transformer",)  # pipeline attribute names of the transformers
    boundary_ratio: float | None = None  # Wan2.2: t >= ratio*1000 uses expert 0, below expert 1
    has_image_encoder: bool = True
    family: str = "wan"  # "hunyuan": models/hunyuan.py (HunyuanVideo-I2V, 33-channel latent_concat)


BACKENDS: dict[str, BackendSpec] = {
    "tiny": BackendSpec("tiny", None),
    # The Wan2.2 layout in tiny: two experts, no image encoder (tests the expert code paths offline).
    "tiny-wan2.2": BackendSpec("tiny-wan2.2", None, experts=("transformer", "transformer_2"), boundary_ratio=0.9,
                               has_image_encoder=False),
    "wan2.1-i2v-480p": BackendSpec("wan2.1-i2v-480p", "Wan-AI/Wan2.1-I2V-14B-480P-Diffusers"),
    "wan2.1-i2v-720p": BackendSpec("wan2.1-i2v-720p", "Wan-AI/Wan2.1-I2V-14B-720P-Diffusers"),
    # Two experts (high noise, low noise), no CLIP image encoder: a LoRA is trained per expert.
    "wan2.2-i2v-a14b": BackendSpec(
        "wan2.2-i2v-a14b", "Wan-AI/Wan2.2-I2V-A14B-Diffusers",
        experts=("transformer", "transformer_2"), boundary_ratio=0.9, has_image_encoder=False,
    ),
    # Paper Sec. 4.4: HunyuanVideo-I2V, 33-channel release (models/hunyuan.py); text via Llava, no CLIP image.
    "tiny-hunyuan": BackendSpec("tiny-hunyuan", None, has_image_encoder=False, family="hunyuan"),
    "hunyuanvideo-i2v": BackendSpec("hunyuanvideo-i2v", "hunyuanvideo-community/HunyuanVideo-I2V-33ch",
                                    has_image_encoder=False, family="hunyuan"),
}


@dataclasses.dataclass
class WanModels:
    """What a stage holds: the encoder pipeline (may be None once freed) and the experts."""

    spec: BackendSpec
    encoders: WanImageToVideoPipeline | None
    transformers: list[WanTransformer3DModel]


def backend_spec(model_cfg: dict) -> BackendSpec:
    name = model_cfg.get("backend", "tiny")
    if name not in BACKENDS:
        raise ValueError(f"model.backend: unknown backend {name!r}; choose one of {sorted(BACKENDS)}")
    return BACKENDS[name]


def _checkpoint_path(model_cfg: dict, spec: BackendSpec) -> str:
    path = model_cfg.get("path") or spec.default_path
    if not path:
        raise ValueError(f"model.path is required for backend {spec.name!r}")
    return path


def load_encoders(model_cfg: dict, device: torch.device, dtype: torch.dtype) -> WanImageToVideoPipeline:
    """Tokenizer, text encoder, image encoder and VAE in a transformer-less stock pipeline.

    The VAE stays in float32 (as the diffusers Wan examples recommend); the encoders use `dtype`.
    """
    spec = backend_spec(model_cfg)
    if spec.family == "hunyuan":
        from . import hunyuan

        return hunyuan.load_encoders(model_cfg, spec, device, dtype)
    if spec.name.startswith("tiny"):
        seed = int(model_cfg.get("seed", 0))
        sizes = model_cfg.get("tiny", {}) or {}
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
        from diffusers import AutoencoderKLWan

        path = _checkpoint_path(model_cfg, spec)
        vae = AutoencoderKLWan.from_pretrained(path, subfolder="vae", torch_dtype=torch.float32)
        pipe = WanImageToVideoPipeline.from_pretrained(
            path, vae=vae, transformer=None, transformer_2=None, torch_dtype=dtype
        )
    pipe.text_encoder.to(device, dtype)
    if pipe.image_encoder is not None:
        pipe.image_encoder.to(device, dtype)
    pipe.vae.to(device, torch.float32)
    return pipe


def load_transformers(model_cfg: dict, device: torch.device | None, dtype: torch.dtype) -> list[WanTransformer3DModel]:
    """The backend's transformer(s), in `dtype`; `device=None` leaves them on the CPU (offloading)."""
    spec = backend_spec(model_cfg)
    if spec.family == "hunyuan":
        from . import hunyuan

        return hunyuan.load_transformers(model_cfg, spec, device, dtype)
    if spec.name.startswith("tiny"):
        seed = int(model_cfg.get("seed", 0))
        sizes = model_cfg.get("tiny", {}) or {}
        models = [tiny.build_tiny_transformer(seed + 7 * i, with_image=spec.has_image_encoder, **sizes)
                  for i in range(len(spec.experts))]
    else:
        path = _checkpoint_path(model_cfg, spec)
        models = [
            WanTransformer3DModel.from_pretrained(path, subfolder=name, torch_dtype=dtype) for name in spec.experts
        ]
        return [m.to(device) if device is not None else m for m in models]  # from_pretrained kept fp32 modules
    return [_cast_like_from_pretrained(m, device, dtype) for m in models]


def _cast_like_from_pretrained(model: WanTransformer3DModel, device, dtype: torch.dtype) -> WanTransformer3DModel:
    """Cast a built model as `from_pretrained(torch_dtype=...)` would: norms, RoPE, time embedding and
    modulation tables stay in float32 (`_keep_in_fp32_modules`)."""
    model.to(device=device)
    if dtype == torch.float32:
        return model
    keep = set(model._keep_in_fp32_modules or ())
    for name, p in model.named_parameters():
        p.data = p.data.to(torch.float32 if keep & set(name.split(".")) else dtype)
    return model


def make_scheduler(kind: str = "euler", shift: float = 5.0, num_train_timesteps: int = 1000) -> Any:
    """Inference sampler: flow-matching Euler (the official default) or UniPC in flow mode."""
    if kind == "euler":
        return FlowMatchEulerDiscreteScheduler(shift=shift, num_train_timesteps=num_train_timesteps)
    if kind == "unipc":
        return UniPCMultistepScheduler(
            prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=shift,
            num_train_timesteps=num_train_timesteps,
        )
    raise ValueError(f"infer.scheduler: unknown sampler {kind!r}; choose 'euler' or 'unipc'")


def assemble_pipeline(encoders: WanImageToVideoPipeline, transformers: list[WanTransformer3DModel],
                      spec: BackendSpec) -> WanImageToVideoPipeline:
    """A stock pipeline over the given components (used to load LoRAs and for oracle checks)."""
    if spec.family == "hunyuan":
        from . import hunyuan

        return hunyuan.assemble_pipeline(encoders, transformers)
    return WanImageToVideoPipeline(
        tokenizer=encoders.tokenizer, text_encoder=encoders.text_encoder, vae=encoders.vae,
        scheduler=encoders.scheduler, transformer=transformers[0],
        transformer_2=transformers[1] if len(transformers) > 1 else None,
        image_encoder=encoders.image_encoder, image_processor=encoders.image_processor,
        boundary_ratio=spec.boundary_ratio,
    )
