"""Florence-2 captions and the LoRA-Edit prompt ``p* + caption``.

As in the official LoRA-Edit data tool: Florence-2-large, task
``<DETAILED_CAPTION>``, beam search (3 beams, up to 1024 new tokens),
``post_process_generation``, a leading "The image shows " removed, and the
special token p* ("p3rs0n,") put in front. Frame 1 of the source video gives
the training prompt; the edited first frame gives the inference prompt; every
extra edited frame (stage 2 references) gets its own caption.

Uses transformers' native ``Florence2ForConditionalGeneration`` /
``Florence2Processor`` (no ``trust_remote_code``), so real weights must be a
native checkpoint (e.g. ``florence-community/Florence-2-large``).
``build_tiny_florence2`` makes a random model of the same classes offline for
tests and the demo; its captions are noise.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image
from transformers import (
    BartTokenizer,
    CLIPImageProcessor,
    Florence2Config,
    Florence2ForConditionalGeneration,
    Florence2Processor,
)

from loraedit import devices
from loraedit.devices import resolve_device
from loraedit.errors import ClipError
from loraedit.pretrained import load_pretrained

TASK = "<DETAILED_CAPTION>"
STRIP_PREFIX = "The image shows "
DEFAULT_MODEL = "florence-community/Florence-2-large"
DEFAULT_SPECIAL_TOKEN = "p3rs0n,"

# Post-processing rules the native checkpoints ship in processor_config.json;
# captions only need "pure_text", the rest keeps the tiny processor usable for
# every Florence-2 task.
_POST_PROCESSOR_CONFIG = {
    "ocr": {
        "pattern": r"(.+?)<loc_(\d+)><loc_(\d+)><loc_(\d+)><loc_(\d+)><loc_(\d+)><loc_(\d+)><loc_(\d+)><loc_(\d+)>",
        "area_threshold": 0.0,
    },
    "phrase_grounding": {"banned_grounding_tokens": ["the image"]},
    "pure_text": {},
    "description_with_bboxes": {},
    "description_with_polygons": {},
    "polygons": {},
    "bboxes": {},
    "description_with_bboxes_or_polygons": {},
}

# Text the tiny BPE is trained on: the task prompts (so the encoder input stays
# short) and common caption words (so noise captions are word-like).
_TINY_CORPUS = (
    "Describe in detail what is shown in the image. What does the image describe? "
    "Describe with a paragraph what is shown in the image. What is the text in the image? "
    "The image shows a person standing in front of a wall. A man and a woman are walking "
    "on the street. There is a red car, a blue sky, green trees and white clouds in the "
    "background. The cat is sitting on a wooden table next to a black dog. She is wearing "
    "a yellow hat, a dark jacket and brown shoes. He is holding a small bag in his hand."
)


# --------------------------------------------------------------------------- models


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """ "auto"/None -> fp16 on cuda (as the official code), fp32 on cpu."""
    return devices.resolve_dtype(dtype, device, auto_gpu=torch.float16)


def load_florence2(
    model_id_or_path: str | os.PathLike,
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype | None = None,
) -> tuple[Florence2ForConditionalGeneration, Florence2Processor]:
    """Load a native Florence-2 checkpoint (local folder or hub id), in eval mode."""
    device = resolve_device(device)
    hint = f"it must be a native transformers checkpoint such as {DEFAULT_MODEL!r}, not a trust_remote_code one"
    return load_pretrained(
        Florence2ForConditionalGeneration,
        Florence2Processor,
        model_id_or_path,
        device,
        resolve_dtype(dtype, device),
        "Florence-2",
        hint,
    )


def _tiny_tokenizer() -> BartTokenizer:
    """A byte-level BPE BART tokenizer trained offline on ``_TINY_CORPUS``.

    Special tokens follow BART's ids (<s>=0, <pad>=1, </s>=2, <unk>=3) and the
    processor's extra ``<image>`` token, which is all Florence2Processor needs.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=512,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte encodable
        show_progress=False,
    )
    bpe.train_from_iterator([_TINY_CORPUS], trainer)
    trained = json.loads(bpe.to_str())["model"]
    vocab = dict(trained["vocab"])
    vocab["<mask>"] = len(vocab)
    merges = [tuple(m) for m in trained["merges"]]
    return BartTokenizer(vocab=vocab, merges=merges, extra_special_tokens={"image_token": "<image>"})


def build_tiny_florence2(seed: int = 0) -> tuple[Florence2ForConditionalGeneration, Florence2Processor]:
    """A tiny random Florence-2 (same classes as the real one), built offline.

    DaViT with two stages (64 px input -> 8x8 tokens) and a one-layer BART.
    Deterministic for a given ``seed``.
    """
    tokenizer = _tiny_tokenizer()
    image_size = 64
    vision = {
        "depths": [1, 1],
        "embed_dim": [16, 32],
        "num_heads": [1, 2],
        "num_groups": [1, 2],
        "patch_size": [7, 3],
        "patch_stride": [4, 2],
        "patch_padding": [3, 1],
        "patch_prenorm": [False, True],
        "window_size": 4,
        "projection_dim": 32,
        "drop_path_rate": 0.0,
    }
    text = {
        "model_type": "bart",
        "vocab_size": len(tokenizer),
        "d_model": 32,
        "max_position_embeddings": 256,
        "encoder_layers": 1,
        "decoder_layers": 1,
        "encoder_attention_heads": 2,
        "decoder_attention_heads": 2,
        "encoder_ffn_dim": 64,
        "decoder_ffn_dim": 64,
        # BART's 0.02 init makes cross-attention near uniform, so every image
        # would get the same caption; a wider init keeps the noise image-dependent.
        "init_std": 0.3,
        "bos_token_id": tokenizer.bos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "decoder_start_token_id": tokenizer.eos_token_id,
        "forced_bos_token_id": tokenizer.bos_token_id,
        "forced_eos_token_id": tokenizer.eos_token_id,
    }
    config = Florence2Config(text_config=text, vision_config=vision, image_token_id=tokenizer.image_token_id)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Florence2ForConditionalGeneration(config).eval()

    # Generation settings of the real checkpoints ("</s><s>caption</s>", no
    # 3-gram repeats); the tiny model may also not emit structural tokens or
    # lone non-ASCII bytes, so its noise decodes to readable text.
    gen = model.generation_config
    gen.decoder_start_token_id = tokenizer.eos_token_id
    gen.forced_bos_token_id = tokenizer.bos_token_id
    gen.bos_token_id = tokenizer.bos_token_id
    gen.eos_token_id = tokenizer.eos_token_id
    gen.pad_token_id = tokenizer.pad_token_id
    gen.no_repeat_ngram_size = 3
    keep = {tokenizer.bos_token_id, tokenizer.eos_token_id}
    gen.suppress_tokens = sorted(
        i
        for tok, i in tokenizer.get_vocab().items()
        if i not in keep
        and (
            tok in tokenizer.all_special_tokens
            or not tokenizer.convert_tokens_to_string([tok]).isascii()
            or not tokenizer.convert_tokens_to_string([tok]).isprintable()
        )
    )

    # Florence-2's preprocessing (CLIPImageProcessor, ImageNet stats, no crop);
    # one image token per final-stage cell plus the pooled one.
    stride = math.prod(vision["patch_stride"])
    image_processor = CLIPImageProcessor(
        do_resize=True,
        size={"height": image_size, "width": image_size},
        resample=3,
        do_center_crop=False,
        do_rescale=True,
        do_normalize=True,
        image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225],
        image_seq_length=(image_size // stride) ** 2 + 1,
    )
    processor = Florence2Processor(
        image_processor=image_processor, tokenizer=tokenizer, post_processor_config=_POST_PROCESSOR_CONFIG
    )
    return model, processor


# --------------------------------------------------------------------------- captions


def parse_caption(processor: Florence2Processor, generated_text: str, image_size: tuple[int, int]) -> str:
    """Decoded generation -> caption: ``post_process_generation``, minus a leading "The image shows "."""
    parsed = processor.post_process_generation(generated_text, task=TASK, image_size=image_size)[TASK]
    return parsed.removeprefix(STRIP_PREFIX).strip()


@torch.no_grad()
def caption_image(
    model: Florence2ForConditionalGeneration,
    processor: Florence2Processor,
    image: np.ndarray,  # (H, W, 3) uint8 RGB
    num_beams: int = 3,
    max_new_tokens: int = 1024,
) -> str:
    """Detailed Florence-2 caption of one RGB image."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"expected a (H, W, 3) uint8 image, got {image.dtype} {image.shape}")
    pil = Image.fromarray(image)  # PIL avoids channel-order guessing on small images
    param = next(model.parameters())
    inputs = processor(text=TASK, images=pil, return_tensors="pt").to(param.device, param.dtype)
    generated = model.generate(
        input_ids=inputs["input_ids"],
        pixel_values=inputs["pixel_values"],
        max_new_tokens=max_new_tokens,
        num_beams=num_beams,
    )  # (1, L)
    text = processor.batch_decode(generated, skip_special_tokens=False)[0]
    return parse_caption(processor, text, image_size=(pil.width, pil.height))


def make_prompt(special_token: str, caption: str) -> str:
    """``p* + " " + caption``; unchanged if the caption already starts with p*."""
    caption = caption.strip()
    special_token = (special_token or "").strip()
    if not special_token or caption.startswith(special_token):
        return caption
    return f"{special_token} {caption}".strip()


def _given(prompt: Any) -> str | None:
    """A sheet cell as a prompt: None for missing / NaN / NA / blank."""
    if prompt is None or (np.ndim(prompt) == 0 and bool(pd.isna(prompt))):
        return None
    prompt = str(prompt).strip()
    return prompt or None


def _read_rgb(clip_id: str, path: Path) -> np.ndarray:
    if not path.is_file():
        raise ClipError(clip_id, path, "missing image needed for captioning")
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))  # (H, W, 3) uint8
    except OSError as exc:
        raise ClipError(clip_id, path, f"unreadable image ({exc})") from exc


def _clip_id(prepared_dir: Path) -> str:
    meta = prepared_dir / "meta.json"
    if meta.is_file():
        try:
            return str(json.loads(meta.read_text())["clip_id"])
        except (ValueError, KeyError):
            pass
    return prepared_dir.parent.name  # results/{clip}/prepared


def extra_frame_indices(edited_dir: Path) -> list[int]:
    """Frame indices t > 0 of ``edited/{t:05d}.png`` (stage-2 references), sorted."""
    found = (re.fullmatch(r"(\d{5})\.png", p.name) for p in edited_dir.glob("*.png"))
    return sorted(t for t in (int(m.group(1)) for m in found if m) if t > 0)


def caption_clip(
    prepared_dir: str | os.PathLike,
    cfg: dict | None,
    sheet_prompt: str | None = None,
    sheet_source_prompt: str | None = None,
    models: tuple[Florence2ForConditionalGeneration, Florence2Processor] | None = None,
) -> dict:
    """Prompts of one clip (the content of ``caption.json``).

    As the paper and the official code: the LoRA is trained on p* + the
    caption of the *source* frame 1, and the edited frame's caption (or the
    user's text) is used only at inference. So ``sheet_prompt`` (the edited
    content) gives the inference and extra prompts and ``sheet_source_prompt``
    the training prompt; neither stands in for the other. Anything missing is
    captioned with Florence-2; the model is loaded only then (``models`` = an
    already loaded pair to reuse).
    Extra prompt keys are frame indices (ints; JSON turns them into strings).
    """
    cfg = dict(cfg or {})
    prepared_dir = Path(prepared_dir)
    clip_id = _clip_id(prepared_dir)
    model_name = str(cfg.get("model", DEFAULT_MODEL))
    tiny = model_name == "tiny"
    token = cfg.get("special_token", DEFAULT_SPECIAL_TOKEN)
    num_beams = int(cfg.get("num_beams", 3))
    max_new_tokens = int(cfg.get("tiny_max_new_tokens", 16) if tiny else cfg.get("max_new_tokens", 1024))

    sheet_prompt, train_given = _given(sheet_prompt), _given(sheet_source_prompt)

    # Which images still need a caption: training frame, edited frame, extras.
    edited_dir = prepared_dir / "edited"
    extras = extra_frame_indices(edited_dir) if edited_dir.is_dir() else []
    jobs: dict[str | int, Path] = {}
    if train_given is None:
        jobs["train"] = prepared_dir / "frames" / "00000.png"
    if sheet_prompt is None:
        jobs["infer"] = edited_dir / "00000.png"
        jobs.update({t: edited_dir / f"{t:05d}.png" for t in extras})
    images = {key: _read_rgb(clip_id, path) for key, path in jobs.items()}  # fail before loading

    captions: dict = {}
    if images:
        owned = models is None
        if owned:
            seed = int(cfg.get("seed", 0))
            if tiny:
                model, processor = build_tiny_florence2(seed=seed)
                device = resolve_device(cfg.get("device", "auto"))
                model = model.to(device, resolve_dtype(cfg.get("dtype", "auto"), device))
            else:
                model, processor = load_florence2(model_name, cfg.get("device", "auto"), cfg.get("dtype", "auto"))
        else:
            model, processor = models
        for key, image in images.items():
            captions[key] = caption_image(model, processor, image, num_beams=num_beams, max_new_tokens=max_new_tokens)
        if owned:
            del model, processor
            if torch.cuda.is_available():
                torch.cuda.empty_cache()

    def prompt(key, given: str | None) -> str:
        return make_prompt(token, given if given is not None else captions[key])

    return {
        "train_prompt": prompt("train", train_given),
        "infer_prompt": prompt("infer", sheet_prompt),
        "extra_prompts": {t: prompt(t, sheet_prompt) for t in extras},
        # "sheet" only when no caption was generated at all.
        "source": "sheet" if not captions else ("florence2-tiny" if tiny else "florence2"),
        "model": model_name if captions else None,
    }
