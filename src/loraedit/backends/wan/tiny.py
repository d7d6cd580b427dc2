"""A tiny Wan2.1 image-to-video model built offline from the real diffusers/transformers classes.

Same classes, same wiring as `Wan2.1-I2V-14B-480P-Diffusers` (36 input channels = 16 noisy latent
+ 4 mask + 16 condition latent; 16-channel VAE latents with x8 spatial / x4 temporal compression;
UMT5 text encoder; CLIP vision image encoder), only narrow and shallow, with seeded random weights.
Every process that builds it gets identical weights, so the caption, train and infer jobs agree.
"""

from __future__ import annotations

import string

from diffusers import AutoencoderKLWan, WanTransformer3DModel
from transformers import (
    CLIPImageProcessor,
    CLIPVisionConfig,
    CLIPVisionModel,
    T5Tokenizer,
    UMT5Config,
    UMT5EncoderModel,
)

from ..base import seeded

# Sizes of the tiny build; any of them can be overridden from config (`model.tiny`).
TINY_DEFAULTS = {
    "num_layers": 2,
    "num_attention_heads": 4,
    "attention_head_dim": 48,
    "ffn_dim": 384,
    "text_dim": 32,
    "image_dim": 32,
    "vae_base_dim": 8,
    "clip_image_size": 32,
}


def tiny_vocab() -> list[tuple[str, float]]:
    """A Unigram vocab (piece, log-prob) for an offline T5 tokenizer: characters + frequent words."""
    words = "a an the of and with in on over is moving red blue green person cat dog circle square background".split()
    pieces = ["▁" + w for w in words] + list(string.ascii_lowercase + string.digits + ",.'-") + ["▁"]
    return [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)] + [(p, -1.0 - 0.01 * i) for i, p in enumerate(pieces)]


def build_tiny_tokenizer() -> T5Tokenizer:
    return T5Tokenizer(vocab=tiny_vocab(), extra_ids=0)


def build_tiny_transformer(seed: int = 0, with_image: bool = True, **overrides) -> WanTransformer3DModel:
    """with_image=False builds the Wan2.2-I2V kind: no CLIP image tokens (no image cross-attention)."""
    cfg = {**TINY_DEFAULTS, **overrides}
    dim = cfg["num_attention_heads"] * cfg["attention_head_dim"]
    with seeded(seed, "transformer"):
        return WanTransformer3DModel(
            patch_size=(1, 2, 2),
            num_attention_heads=cfg["num_attention_heads"],
            attention_head_dim=cfg["attention_head_dim"],
            in_channels=36,  # 16 noisy + 4 mask + 16 condition, as Wan2.1 I2V
            out_channels=16,
            text_dim=cfg["text_dim"],
            freq_dim=32,
            ffn_dim=cfg["ffn_dim"],
            num_layers=cfg["num_layers"],
            image_dim=cfg["image_dim"] if with_image else None,
            added_kv_proj_dim=dim if with_image else None,
            rope_max_seq_len=256,
        )


def build_tiny_vae(seed: int = 0, **overrides) -> AutoencoderKLWan:
    cfg = {**TINY_DEFAULTS, **overrides}
    with seeded(seed, "vae"):
        # z_dim stays 16 (the transformer's latent width); dim_mult has four levels so the spatial
        # factor stays 8 and the temporal one 4, exactly as the real VAE.
        return AutoencoderKLWan(
            base_dim=cfg["vae_base_dim"],
            z_dim=16,
            dim_mult=[1, 2, 2, 2],
            num_res_blocks=1,
            temperal_downsample=[False, True, True],
        )


def build_tiny_text_encoder(seed: int = 0, vocab_size: int | None = None, **overrides) -> UMT5EncoderModel:
    cfg = {**TINY_DEFAULTS, **overrides}
    vocab_size = vocab_size or len(tiny_vocab())
    with seeded(seed, "text_encoder"):
        return UMT5EncoderModel(
            UMT5Config(
                vocab_size=vocab_size,
                d_model=cfg["text_dim"],
                d_kv=8,
                d_ff=2 * cfg["text_dim"],
                num_layers=2,
                num_heads=4,
                relative_attention_num_buckets=8,
            )
        ).eval()


def build_tiny_image_encoder(seed: int = 0, **overrides) -> tuple[CLIPVisionModel, CLIPImageProcessor]:
    cfg = {**TINY_DEFAULTS, **overrides}
    size = cfg["clip_image_size"]
    with seeded(seed, "image_encoder"):
        model = CLIPVisionModel(
            CLIPVisionConfig(
                hidden_size=cfg["image_dim"],
                intermediate_size=2 * cfg["image_dim"],
                num_hidden_layers=2,
                num_attention_heads=4,
                image_size=size,
                patch_size=8,
            )
        ).eval()
    processor = CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
    return model, processor
