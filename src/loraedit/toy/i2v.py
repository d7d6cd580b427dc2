"""Stage 2 of the toy model: a small `WanTransformer3DModel` pretrained as a plain image-to-video model.

The condition is always the stock one (keep frame 1, generate the rest; Sec. 3.1), so, as with the
real Wan2.1-I2V, the spatial edit mask is something only the LoRA teaches. The text and image
encoders are the tiny seeded UMT5 / CLIP of `backends/wan/tiny.py` (frozen, never trained); captions come
from the world, and 10 % of the samples get the empty caption (classifier-free guidance).

Latents, conditions and embeddings are cached once (`encode_clip`), then training only runs the
transformer: batches of cached clips with one flow-matching timestep each.
"""

from __future__ import annotations

import dataclasses
import string

import numpy as np
import torch
from diffusers import (
    FlowMatchEulerDiscreteScheduler,
    WanImageToVideoPipeline,
    WanTransformer3DModel,
)
from transformers import T5Tokenizer

from .. import conditioning as cond
from ..backends.wan import conditioning as wan_cond
from ..backends.wan import tiny
from . import world as toyworld

I2V_SEED_BASE = 2_000_000  # training scenes of the transformer (the VAE used 1_000_000 + step)
EMPTY_CAPTION_P = 0.1


@dataclasses.dataclass
class I2VRecipe:
    num_layers: int = 4
    num_attention_heads: int = 4
    attention_head_dim: int = 32  # width 128
    ffn_dim: int = 512
    # Spatial patch 1: a token per latent pixel (4x4 pixels) instead of Wan's 2x2 latent patch (8x8
    # pixels, 64 outputs from a width-128 token). On the same compute it learned far faster (held-out
    # loss 0.36 after 600 s against 0.49 with patch 2) and renders small objects instead of blobs.
    patch: int = 1
    lr: float = 1e-3
    warmup: int = 100
    steps: int = 2800
    min_lr_ratio: float = 0.05
    batch: int = 8  # patch 1 has 4x the tokens (16 x 16 x 5 = 1280 per clip)
    clips: int = 768  # cached training clips (2800 steps x 8 = 29 visits each)


ENCODER_SIZES = {"text_dim": 32, "image_dim": 32, "clip_image_size": 32}


def toy_vocab() -> list[tuple[str, float]]:
    """The tiny vocab plus every word the toy world's captions use (one piece each)."""
    base = tiny.tiny_vocab()
    have = {p for p, _ in base}
    words = list(toyworld.PALETTE) + list(toyworld.SHAPES) + ["noise", "stripes", "gradient", "p3rs0n"]
    extra = ["▁" + w for w in words if "▁" + w not in have]
    return base + [(p, -0.5 - 0.01 * i) for i, p in enumerate(extra)]


def build_tokenizer() -> T5Tokenizer:
    assert all(c in {p for p, _ in toy_vocab()} for c in string.ascii_lowercase)
    return T5Tokenizer(vocab=toy_vocab(), extra_ids=0)


def build_transformer(recipe: I2VRecipe, seed: int = 0) -> WanTransformer3DModel:
    dim = recipe.num_attention_heads * recipe.attention_head_dim
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return WanTransformer3DModel(
            patch_size=(1, recipe.patch, recipe.patch),
            num_attention_heads=recipe.num_attention_heads,
            attention_head_dim=recipe.attention_head_dim,
            in_channels=36,
            out_channels=16,
            text_dim=ENCODER_SIZES["text_dim"],
            freq_dim=64,
            ffn_dim=recipe.ffn_dim,
            num_layers=recipe.num_layers,
            image_dim=ENCODER_SIZES["image_dim"],
            added_kv_proj_dim=dim,
            rope_max_seq_len=256,
        )


def encoder_pipeline(vae, seed: int = 0) -> WanImageToVideoPipeline:
    """The frozen encoders (tiny seeded UMT5 + CLIP) around a trained VAE, in a transformer-less pipeline."""
    tokenizer = build_tokenizer()
    image_encoder, image_processor = tiny.build_tiny_image_encoder(seed, **ENCODER_SIZES)
    return WanImageToVideoPipeline(
        tokenizer=tokenizer,
        text_encoder=tiny.build_tiny_text_encoder(seed, vocab_size=len(tokenizer), **ENCODER_SIZES),
        vae=vae,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=5.0),
        transformer=None,
        image_encoder=image_encoder,
        image_processor=image_processor,
    )


@torch.no_grad()
def encode_clip(pipe: WanImageToVideoPipeline, video: np.ndarray, caption: str) -> dict:
    """One training clip: uint8 (T, H, W, 3) -> cached tensors on the CPU (batch dim 1 dropped),
    encoded on the pipeline's device."""
    device = pipe.vae.device
    x = cond.frames_to_video(video)  # (1, 3, T, H, W)
    keep = torch.from_numpy(cond.first_frame_keep_mask(*video.shape[:3]).astype(np.float32))[None]  # (1, T, H, W)
    prompt, _ = wan_cond.encode_prompts(pipe, caption, None, device=device)
    items = {
        "latents": wan_cond.encode_video(pipe.vae, x)[0],  # (16, T_lat, h, w)
        "condition": wan_cond.build_condition(pipe.vae, x, keep)[0],  # (20, T_lat, h, w)
        "prompt_embeds": prompt[0],  # (512, D_text)
        "image_embeds": wan_cond.encode_image(pipe, video[0], device)[0],  # (N, D_img)
    }
    return {k: v.cpu() for k, v in items.items()}


@torch.no_grad()
def empty_prompt(pipe: WanImageToVideoPipeline) -> torch.Tensor:
    return wan_cond.encode_prompts(pipe, "", None, device=pipe.vae.device)[0][0].cpu()  # (512, D_text)


def training_clip(index: int) -> tuple[np.ndarray, str]:
    clip = toyworld.render_clip(toyworld.scene_for(I2V_SEED_BASE, index))
    return clip.video, clip.caption


def batch_at(step: int, cache: dict, empty: torch.Tensor, batch: int):
    """(x0, condition, prompt, image, t, noise) of `step`, a function of step only, on the cache's device.

    cache: stacked tensors {latents (N, 16, T_lat, h, w), condition (N, 20, ...), prompt_embeds (N, 512, D),
    image_embeds (N, M, D_img)}; t (B,) uniform in (0, 1); noise like x0. The random draws are made on
    the CPU, so every device trains on the same indices, timesteps and noise.
    """
    g = torch.Generator().manual_seed(I2V_SEED_BASE + step)
    idx = torch.randint(0, cache["latents"].shape[0], (batch,), generator=g)
    drop = torch.rand(batch, generator=g) < EMPTY_CAPTION_P
    t = torch.rand(batch, generator=g)
    noise = torch.randn((batch, *cache["latents"].shape[1:]), generator=g)
    device = cache["latents"].device
    idx, drop, t, noise = idx.to(device), drop.to(device), t.to(device), noise.to(device)
    prompt = torch.where(drop[:, None, None], empty.to(device)[None], cache["prompt_embeds"][idx])
    return cache["latents"][idx], cache["condition"][idx], prompt, cache["image_embeds"][idx], t, noise


def i2v_loss(model: WanTransformer3DModel, x0, condition, prompt, image, t, noise) -> torch.Tensor:
    """Flow matching as `training.flow_matching_loss`, one timestep per sample: x_t = (1-t) x0 + t noise."""
    tt = t.view(-1, 1, 1, 1, 1)
    x_t = (1 - tt) * x0 + tt * noise
    pred = model(
        hidden_states=torch.cat([x_t, condition], 1),
        timestep=1000.0 * t,
        encoder_hidden_states=prompt,
        encoder_hidden_states_image=image,
        return_dict=False,
    )[0]
    return torch.nn.functional.mse_loss(pred, noise - x0)
