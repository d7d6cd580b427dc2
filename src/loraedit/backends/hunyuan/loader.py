"""HunyuanVideo-I2V backend (paper Sec. 4.4): the 33-channel `latent_concat` release.

Like every family it gives the *encoders* (Llava-Llama-3 text encoder with
the image tokens, CLIP text encoder for the pooled embedding, tokenizers, image processor, VAE) in
a transformer-less stock `HunyuanVideoImageToVideoPipeline`, and the *transformer* on its own.

Only `image_condition_type="latent_concat"` is accepted (16 noisy + 16 image-latent + 1 mask
channels): the `token_replace` release (`hunyuanvideo-community/HunyuanVideo-I2V`, 16 input
channels) has no channel that could carry a per-frame edit mask or a condition video.
"""

from __future__ import annotations

import dataclasses
import os

import torch
from diffusers import (
    AutoencoderKLHunyuanVideo,
    FlowMatchEulerDiscreteScheduler,
    HunyuanVideoImageToVideoPipeline,
    HunyuanVideoTransformer3DModel,
)
from diffusers.pipelines.hunyuan_video.pipeline_hunyuan_video_image2video import DEFAULT_PROMPT_TEMPLATE

from ..base import BackendSpec, cast_like_from_pretrained, checkpoint_path, tiny_sizes
from . import tiny

DEFAULT_PATH = "hunyuanvideo-community/HunyuanVideo-I2V-33ch"
CONDITION_TYPE = "latent_concat"
SCHEDULER_SHIFT = 7.0  # the 33ch checkpoint's scheduler (diffusers docs: shift 7-20 works best)
MAX_SEQUENCE_LENGTH = 256  # text tokens after the template crop (stock default)
TINY_MAX_SEQUENCE_LENGTH = 64

# `HunyuanVideoTransformer3DModel` config of hunyuanvideo-community/HunyuanVideo-I2V-33ch (diffusers'
# conversion script, "HYVideo-T/2-I2V-33ch"): no guidance embedding (true CFG), 33 input channels.
I2V_33CH_CONFIG = {
    "in_channels": 33,
    "out_channels": 16,
    "num_attention_heads": 24,
    "attention_head_dim": 128,
    "num_layers": 20,
    "num_single_layers": 40,
    "num_refiner_layers": 2,
    "mlp_ratio": 4.0,
    "patch_size": 2,
    "patch_size_t": 1,
    "qk_norm": "rms_norm",
    "guidance_embeds": False,
    "text_embed_dim": 4096,
    "pooled_projection_dim": 768,
    "rope_theta": 256.0,
    "rope_axes_dim": (16, 56, 56),
    "image_condition_type": CONDITION_TYPE,
}
IMAGE_TOKENS = 288  # 576 Llava image tokens (336 px, patch 14), every 2nd kept (image_embed_interleave 2)

PIPELINE_CLS = HunyuanVideoImageToVideoPipeline

# LoRA on every attention and MLP Linear of the double-stream blocks (image and text streams) and
# the single-stream blocks. Anchored on the block lists: the final `proj_out` (same name as the
# single blocks' one) and the token refiner's attention stay frozen.
LORA_TARGET_REGEX = (
    r"^(transformer_blocks\.\d+\.(attn\.(to_q|to_k|to_v|to_out\.0|add_q_proj|add_k_proj|add_v_proj|to_add_out)"
    r"|ff\.net\.(0\.proj|2)|ff_context\.net\.(0\.proj|2))"
    r"|single_transformer_blocks\.\d+\.(attn\.(to_q|to_k|to_v)|proj_mlp|proj_out))$"
)


@dataclasses.dataclass(frozen=True)
class HunyuanEncoders:
    """The encoder pipeline (no transformer) and how prompts are laid out for its text encoder."""

    pipe: HunyuanVideoImageToVideoPipeline
    prompt_template: dict  # the stock `prompt_template` argument (template, crop_start, image token span)
    max_sequence_length: int

    @property
    def vae(self) -> AutoencoderKLHunyuanVideo:
        return self.pipe.vae


def check_condition_type(config: dict, where: str) -> None:
    """Refuse a transformer that cannot take LoRA-Edit's mask (one line, names the checkpoint)."""
    kind = config.get("image_condition_type")
    if kind != CONDITION_TYPE:
        raise ValueError(
            f"{where}: HunyuanVideo transformer has image_condition_type={kind!r}; LoRA-Edit needs "
            f"{CONDITION_TYPE!r} (33 input channels: latent + image latent + mask), e.g. {DEFAULT_PATH}. "
            "The token_replace release has no channel for a per-frame mask"
        )
    expected = 2 * config.get("out_channels", 16) + 1
    if config.get("in_channels") != expected:
        raise ValueError(
            f"{where}: latent_concat transformer needs in_channels={expected}, got {config.get('in_channels')}"
        )


def load_encoders(spec: BackendSpec, model_cfg: dict, device: torch.device, dtype: torch.dtype) -> HunyuanEncoders:
    """Text encoders in `dtype`, the VAE in float32 (as the Wan backends)."""
    if spec.tiny:
        seed, sizes = tiny_sizes(model_cfg)
        tokenizer = tiny.build_tiny_tokenizer()
        pipe = HunyuanVideoImageToVideoPipeline(
            text_encoder=tiny.build_tiny_text_encoder(
                seed, vocab_size=len(tokenizer), image_token_index=tokenizer.convert_tokens_to_ids("<image>"), **sizes
            ),
            tokenizer=tokenizer,
            transformer=None,
            vae=tiny.build_tiny_vae(seed, **sizes),
            scheduler=FlowMatchEulerDiscreteScheduler(shift=SCHEDULER_SHIFT),
            text_encoder_2=tiny.build_tiny_text_encoder_2(seed, **sizes),
            tokenizer_2=tiny.build_tiny_clip_tokenizer(),
            image_processor=tiny.build_tiny_image_processor(**sizes),
        )
        template = tiny.prompt_template(tokenizer, tiny.image_tokens(**sizes))
        max_len = TINY_MAX_SEQUENCE_LENGTH
    else:
        path = checkpoint_path(model_cfg, spec)
        vae = AutoencoderKLHunyuanVideo.from_pretrained(path, subfolder="vae", torch_dtype=torch.float32)
        pipe = HunyuanVideoImageToVideoPipeline.from_pretrained(path, vae=vae, transformer=None, torch_dtype=dtype)
        template, max_len = DEFAULT_PROMPT_TEMPLATE, MAX_SEQUENCE_LENGTH
    pipe.text_encoder.to(device, dtype)
    pipe.text_encoder_2.to(device, dtype)
    pipe.vae.to(device, torch.float32)
    max_len = int(model_cfg.get("max_sequence_length") or max_len)
    return HunyuanEncoders(pipe, template, max_len)


def load_transformers(
    spec: BackendSpec, model_cfg: dict, device: torch.device | None, dtype: torch.dtype
) -> list[HunyuanVideoTransformer3DModel]:
    """The transformer (one: no experts), refused unless it is the latent_concat kind."""
    if spec.tiny:
        seed, sizes = tiny_sizes(model_cfg)
        return [cast_like_from_pretrained(tiny.build_tiny_transformer(seed, **sizes), device, dtype)]
    path = checkpoint_path(model_cfg, spec)
    config = HunyuanVideoTransformer3DModel.load_config(path, subfolder="transformer")
    check_condition_type(config, f"model.path {os.fspath(path)}")
    model = HunyuanVideoTransformer3DModel.from_pretrained(path, subfolder="transformer", torch_dtype=dtype)
    return [model.to(device) if device is not None else model]


def assemble_pipeline(
    encoders: HunyuanEncoders, transformers: list[HunyuanVideoTransformer3DModel], spec: BackendSpec | None = None
) -> HunyuanVideoImageToVideoPipeline:
    """A stock pipeline over the given components (LoRA loading, oracle checks)."""
    p = encoders.pipe
    return HunyuanVideoImageToVideoPipeline(
        text_encoder=p.text_encoder,
        tokenizer=p.tokenizer,
        transformer=transformers[0],
        vae=p.vae,
        scheduler=p.scheduler,
        text_encoder_2=p.text_encoder_2,
        tokenizer_2=p.tokenizer_2,
        image_processor=p.image_processor,
    )
