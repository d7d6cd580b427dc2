"""A tiny HunyuanVideo-I2V (33-channel `latent_concat` release) built offline from the real classes.

Same classes and wiring as `hunyuanvideo-community/HunyuanVideo-I2V-33ch`: a
`HunyuanVideoTransformer3DModel` with 33 input channels (16 noisy latent + 16 image latent + 1 mask),
an `AutoencoderKLHunyuanVideo` with 16 latent channels (x8 spatial, x4 temporal, causal), a
`LlavaForConditionalGeneration` text encoder that sees the image tokens, a `CLIPTextModel` for the
pooled embedding, their tokenizers and the CLIP image processor; only narrow, shallow and seeded.

The Llama tokenizer carries the Llama-3 header tokens, so prompts go through the stock template
cropping (image tokens cut out, interleaved and put before the text; the assistant header removed)
exactly as with the real 8B encoder.
"""

from __future__ import annotations

import string

from diffusers import AutoencoderKLHunyuanVideo, HunyuanVideoTransformer3DModel
from transformers import (
    CLIPImageProcessor,
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTokenizer,
    CLIPVisionConfig,
    LlamaConfig,
    LlamaTokenizerFast,
    LlavaConfig,
    LlavaForConditionalGeneration,
)

from ..base import seeded

LATENT_CHANNELS = 16  # as the real VAE: the transformer sees 2 * 16 + 1 = 33 channels
TINY_DEFAULTS = {
    "num_attention_heads": 2,
    "attention_head_dim": 16,
    "num_layers": 1,  # double-stream blocks
    "num_single_layers": 1,
    "text_dim": 16,  # Llava hidden size (4096 in the real model)
    "pooled_dim": 8,  # CLIP text hidden size (768)
    "vae_channels": 8,
    "clip_image_size": 224,  # -> (224 / 32)^2 = 49 image tokens
}
CLIP_PATCH = 32
# The Llama-3 chat markers the stock template cropping looks for, plus the words of the headers
# (each one token, as in the real tokenizer: the assistant crop removes exactly 4 tokens).
SPECIAL_TOKENS = ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "<image>", "system", "user", "assistant"]
# The stock template's shape, shorter: system part with the <image> slot, user text, assistant header.
TEMPLATE = (
    "<|start_header_id|>system<|end_header_id|>\n\n<image>\nDescribe the video.<|eot_id|>\n\n"
    "<|start_header_id|>user<|end_header_id|>\n\n{}<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
)


def _sizes(overrides: dict) -> dict:
    unknown = set(overrides) - set(TINY_DEFAULTS)
    if unknown:
        raise ValueError(
            f"model.tiny: unknown sizes {sorted(unknown)} for tiny-hunyuan; known: {sorted(TINY_DEFAULTS)}"
        )
    return {**TINY_DEFAULTS, **overrides}


def build_tiny_tokenizer() -> LlamaTokenizerFast:
    """Character-level Llama tokenizer (no merges) with the Llama-3 header tokens."""
    chars = string.ascii_letters + string.digits + " ,.:;'-!?\n"
    vocab = {"<unk>": 0, "<|begin_of_text|>": 1} | {c: i + 2 for i, c in enumerate(chars)}
    tokenizer = LlamaTokenizerFast(
        vocab=vocab,
        merges=[],
        unk_token="<unk>",
        bos_token="<|begin_of_text|>",
        pad_token="<unk>",
        add_bos_token=True,
        padding_side="right",
    )
    tokenizer.add_special_tokens({"additional_special_tokens": SPECIAL_TOKENS})
    return tokenizer


def prompt_template(tokenizer: LlamaTokenizerFast, image_tokens: int) -> dict:
    """The stock `prompt_template` dict for TEMPLATE: where the user text and the <image> slot start."""
    prefix = tokenizer(TEMPLATE.split("{}")[0]).input_ids  # BOS ... up to the user text
    start = prefix.index(tokenizer.convert_tokens_to_ids("<image>"))
    return {
        "template": TEMPLATE,
        "crop_start": len(prefix),
        "image_emb_start": start,
        "image_emb_end": start + image_tokens,
        "image_emb_len": image_tokens,
    }


def image_tokens(**overrides) -> int:
    return (_sizes(overrides)["clip_image_size"] // CLIP_PATCH) ** 2


def build_tiny_transformer(seed: int = 0, **overrides) -> HunyuanVideoTransformer3DModel:
    cfg = _sizes(overrides)
    head = cfg["attention_head_dim"]
    with seeded(seed, "transformer"):
        return HunyuanVideoTransformer3DModel(
            in_channels=2 * LATENT_CHANNELS + 1,
            out_channels=LATENT_CHANNELS,
            num_attention_heads=cfg["num_attention_heads"],
            attention_head_dim=head,
            num_layers=cfg["num_layers"],
            num_single_layers=cfg["num_single_layers"],
            num_refiner_layers=1,
            patch_size=2,
            patch_size_t=1,
            guidance_embeds=False,
            text_embed_dim=cfg["text_dim"],
            pooled_projection_dim=cfg["pooled_dim"],
            rope_axes_dim=(head // 4, 3 * head // 8, 3 * head // 8),
            image_condition_type="latent_concat",
        )


def build_tiny_vae(seed: int = 0, **overrides) -> AutoencoderKLHunyuanVideo:
    cfg = _sizes(overrides)
    with seeded(seed, "vae"):
        # Four levels: x8 spatial, x4 temporal compression, as the real VAE.
        return AutoencoderKLHunyuanVideo(
            latent_channels=LATENT_CHANNELS,
            block_out_channels=(cfg["vae_channels"],) * 4,
            layers_per_block=1,
            norm_num_groups=4,
        ).eval()


def build_tiny_text_encoder(
    seed: int = 0, vocab_size: int = 64, image_token_index: int = 0, **overrides
) -> LlavaForConditionalGeneration:
    """Llava (CLIP vision tower + Llama); transformers 5 configs are keyword-only."""
    cfg = _sizes(overrides)
    vision = CLIPVisionConfig(
        hidden_size=8,
        intermediate_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=cfg["clip_image_size"],
        patch_size=CLIP_PATCH,
    )
    # The stock encoder takes hidden_states[-3]: three Llama layers keep that a real layer output.
    text = LlamaConfig(
        hidden_size=cfg["text_dim"],
        intermediate_size=2 * cfg["text_dim"],
        num_hidden_layers=3,
        num_attention_heads=2,
        num_key_value_heads=2,
        vocab_size=vocab_size,
        pad_token_id=0,
        max_position_embeddings=1024,
    )
    with seeded(seed, "text_encoder"):
        return LlavaForConditionalGeneration(
            LlavaConfig(vision_config=vision, text_config=text, image_token_index=image_token_index, pad_token_id=0)
        ).eval()


def build_tiny_clip_tokenizer() -> CLIPTokenizer:
    """Offline `CLIPTokenizer`: characters, word-final characters, no merges."""
    chars = string.ascii_lowercase + string.digits + ",.:;'-!?"
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    vocab |= {c: 2 + i for i, c in enumerate(chars)}
    vocab |= {c + "</w>": 2 + len(chars) + i for i, c in enumerate(chars)}
    return CLIPTokenizer(vocab=vocab, merges=[])


def build_tiny_text_encoder_2(seed: int = 0, **overrides) -> CLIPTextModel:
    """CLIP text model; its pooled output (at the first end-of-text token) -> `pooled_projections`."""
    cfg = _sizes(overrides)
    with seeded(seed, "image_encoder"):  # this backend has no CLIP vision encoder: its seed slot is free
        return CLIPTextModel(
            CLIPTextConfig(
                hidden_size=cfg["pooled_dim"],
                intermediate_size=16,
                num_hidden_layers=1,
                num_attention_heads=2,
                vocab_size=len(build_tiny_clip_tokenizer()),
                max_position_embeddings=77,
                bos_token_id=0,
                eos_token_id=1,
                pad_token_id=1,
            )
        ).eval()


def build_tiny_image_processor(**overrides) -> CLIPImageProcessor:
    size = _sizes(overrides)["clip_image_size"]
    return CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
