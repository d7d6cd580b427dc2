"""Backend names -> specs and families: the one place that decides which family a model is.

A family package is imported by its dotted name the first time a backend of it is used, so Wan runs
never import HunyuanVideo code and the other way round. A new family is a new package plus one row
in `FAMILIES` and its rows in `BACKENDS`; no other family's code changes.
"""

from __future__ import annotations

import importlib

import torch

from .base import BackendSpec, Family, Models

FAMILIES: dict[str, str] = {
    "wan": "loraedit.backends.wan",
    "hunyuan": "loraedit.backends.hunyuan",
}

_WAN22 = {"experts": ("transformer", "transformer_2"), "boundary_ratio": 0.9, "has_image_encoder": False}

BACKENDS: dict[str, BackendSpec] = {
    spec.name: spec
    for spec in (
        BackendSpec("tiny", "wan", tiny=True),
        # The Wan2.2 layout in tiny: two experts, no image encoder (tests the expert code paths offline).
        BackendSpec("tiny-wan2.2", "wan", tiny=True, **_WAN22),
        BackendSpec("wan2.1-i2v-480p", "wan", "Wan-AI/Wan2.1-I2V-14B-480P-Diffusers"),
        BackendSpec("wan2.1-i2v-720p", "wan", "Wan-AI/Wan2.1-I2V-14B-720P-Diffusers"),
        # Two experts (high noise, low noise), no CLIP image encoder: a LoRA is trained per expert.
        BackendSpec("wan2.2-i2v-a14b", "wan", "Wan-AI/Wan2.2-I2V-A14B-Diffusers", **_WAN22),
        # Paper Sec. 4.4: HunyuanVideo-I2V, 33-channel release; text via Llava, no CLIP image encoder.
        BackendSpec("tiny-hunyuan", "hunyuan", tiny=True, has_image_encoder=False),
        BackendSpec(
            "hunyuanvideo-i2v", "hunyuan", "hunyuanvideo-community/HunyuanVideo-I2V-33ch", has_image_encoder=False
        ),
    )
}

DEFAULT_BACKEND = "tiny"


def backend_spec(model_cfg: dict) -> BackendSpec:
    name = model_cfg.get("backend", DEFAULT_BACKEND)
    if name not in BACKENDS:
        raise ValueError(f"model.backend: unknown backend {name!r}; choose one of {sorted(BACKENDS)}")
    return BACKENDS[name]


def family(spec: BackendSpec | str) -> Family:
    """The family package of a spec (or family name), imported on first use."""
    name = spec if isinstance(spec, str) else spec.family
    if name not in FAMILIES:
        raise ValueError(f"unknown model family {name!r}; known: {sorted(FAMILIES)}")
    return importlib.import_module(FAMILIES[name])


def load_encoders(model_cfg: dict, device: torch.device, dtype: torch.dtype):
    """The backend's encoders (text, image, VAE) in a transformer-less stock pipeline; the VAE in float32."""
    spec = backend_spec(model_cfg)
    return family(spec).load_encoders(spec, model_cfg, device, dtype)


def load_transformers(model_cfg: dict, device: torch.device | None, dtype: torch.dtype) -> list[torch.nn.Module]:
    """The backend's transformer(s), in `dtype`; `device=None` leaves them on the CPU (offloading)."""
    spec = backend_spec(model_cfg)
    return family(spec).load_transformers(spec, model_cfg, device, dtype)


def load_models(model_cfg: dict, device: torch.device, dtype: torch.dtype, with_encoders: bool = True) -> Models:
    spec = backend_spec(model_cfg)
    fam = family(spec)
    encoders = fam.load_encoders(spec, model_cfg, device, dtype) if with_encoders else None
    return Models(spec, fam, encoders, fam.load_transformers(spec, model_cfg, device, dtype))


def assemble_pipeline(models: Models):
    """A stock diffusers pipeline over the models' components (LoRA loading, oracle checks)."""
    return models.family.assemble_pipeline(models.encoders, models.transformers, models.spec)
