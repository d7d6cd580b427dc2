"""SAM2 (points / boxes) and SAM3 (text) video segmenters: real loaders and tiny offline builds.

``load_sam2(spec)`` / ``load_sam3(spec)`` take ``"tiny"`` (a random model of the same
transformers classes, built in code in well under a second: masks are meaningless, the
code path is the real one) or a local folder / hub id (``facebook/sam2.1-hiera-large``,
``facebook/sam3``). Both return ``(model, processor)`` in eval mode.

Tiny recipes: /work/shared/notes/sam-and-hunyuan.md, section A. Constraints found there:
``memory_encoder_output_channels`` must be 64 (hard-coded ``kv_in_dim``), ``fpn_hidden_size``
a multiple of 64 above 64, SAM3 text ``max_position_embeddings`` >= 32 (the tokenizer pads
to 32), and with random weights SAM3's detection thresholds must be 0 and its hot-start
buffer short, or nothing is ever detected / output is held back.
"""

from __future__ import annotations

import os

import torch
from transformers import (
    CLIPTokenizer,
    Sam2HieraDetConfig,
    Sam2ImageProcessor,
    Sam2VideoConfig,
    Sam2VideoMaskDecoderConfig,
    Sam2VideoModel,
    Sam2VideoProcessor,
    Sam2VideoPromptEncoderConfig,
    Sam2VideoVideoProcessor,
    Sam2VisionConfig,
    Sam3Config,
    Sam3ImageProcessor,
    Sam3TrackerVideoConfig,
    Sam3TrackerVideoMaskDecoderConfig,
    Sam3TrackerVideoPromptEncoderConfig,
    Sam3VideoConfig,
    Sam3VideoModel,
    Sam3VideoProcessor,
    Sam3VisionConfig,
    Sam3ViTConfig,
)

from ..devices import device_and_dtype
from ..pretrained import load_pretrained

SAM2_DEFAULT = "facebook/sam2.1-hiera-large"
SAM3_DEFAULT = "facebook/sam3"
TINY = "tiny"

# Memory/tracker sizes shared by the tiny SAM2 and the tiny SAM3 tracker.
_TINY_MEMORY = dict(
    num_maskmem=3, memory_attention_hidden_size=128, memory_attention_num_layers=1,
    memory_attention_feed_forward_hidden_size=128, memory_attention_rope_feat_sizes=[4, 4],
    memory_encoder_hidden_size=128, memory_encoder_output_channels=64, mask_downsampler_embed_dim=128,
    memory_fuser_num_layers=1, memory_fuser_embed_dim=128, memory_fuser_intermediate_dim=128,
)  # fmt: skip
_TINY_DECODER = dict(hidden_size=128, mlp_dim=128, num_attention_heads=2, iou_head_hidden_dim=32)


def _tiny_tracker(config_cls, prompt_cls, decoder_cls, vision, size: int, patch: int):
    """The tracker config both tiny builds share (SAM2's whole model, SAM3's tracker) at ``size`` px."""
    return config_cls(
        vision_config=vision, image_size=size,
        prompt_encoder_config=prompt_cls(hidden_size=128, image_size=size, patch_size=patch),
        mask_decoder_config=decoder_cls(**_TINY_DECODER), **_TINY_MEMORY,
    )  # fmt: skip


def _tiny_model(model_cls, cfg, seed: int, size: int, image_cls):
    """``(model in eval mode, image processor, video processor)``; `seed` fixes the random weights,
    the processors resize to ``size x size`` with 16x16 low-res masks."""
    torch.manual_seed(seed)
    model = model_cls(cfg).eval()
    square = {"height": size, "width": size}
    image = image_cls(size=square, mask_size={"height": 16, "width": 16})
    return model, image, Sam2VideoVideoProcessor(size=square)


def build_tiny_sam2(seed: int = 0) -> tuple[Sam2VideoModel, Sam2VideoProcessor]:
    """A ~1M-parameter random ``Sam2VideoModel`` working at 64x64 (16x16 low-res masks)."""
    s = 64
    backbone = Sam2HieraDetConfig(
        hidden_size=8, image_size=[s, s], blocks_per_stage=[1, 1, 2, 1], embed_dim_per_stage=[8, 16, 32, 64],
        num_attention_heads_per_stage=[1] * 4, window_size_per_stage=[2] * 4, global_attention_blocks=[3],
        window_positional_embedding_background_size=[2, 2],
    )  # fmt: skip
    vision = Sam2VisionConfig(
        backbone_config=backbone,
        backbone_channel_list=[64, 32, 16, 8],
        backbone_feature_sizes=[[16, 16], [8, 8], [4, 4]],
        fpn_hidden_size=128,
    )
    cfg = _tiny_tracker(Sam2VideoConfig, Sam2VideoPromptEncoderConfig, Sam2VideoMaskDecoderConfig, vision, s, 16)
    model, image, video = _tiny_model(Sam2VideoModel, cfg, seed, s, Sam2ImageProcessor)
    return model, Sam2VideoProcessor(image_processor=image, video_processor=video)


def build_tiny_sam3(seed: int = 0) -> tuple[Sam3VideoModel, Sam3VideoProcessor]:
    """A ~4M-parameter random ``Sam3VideoModel`` (detector + tracker) working at 56x56.

    Detection thresholds are 0 and the hot-start buffer 2 frames, so that random weights
    still detect "instances" and every frame comes out (the real defaults: 0.5 / 0.7 / 15).
    """
    s = 56
    vit = Sam3ViTConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=s,
        patch_size=14,
        window_size=2,
        global_attn_indexes=[0],
        pretrain_image_size=s,
    )
    vision = Sam3VisionConfig(
        backbone_config=vit, fpn_hidden_size=128, backbone_feature_sizes=[[16, 16], [8, 8], [4, 4]]
    )
    small = dict(hidden_size=128, num_layers=1, num_attention_heads=2, intermediate_size=128)
    detector = Sam3Config(
        vision_config=vision,
        text_config=dict(vocab_size=49408, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=32, projection_dim=32),
        geometry_encoder_config=small, detr_encoder_config=small, detr_decoder_config={**small, "num_queries": 5},
        mask_decoder_config=dict(hidden_size=128, num_attention_heads=2),
    )  # fmt: skip
    tracker = _tiny_tracker(
        Sam3TrackerVideoConfig, Sam3TrackerVideoPromptEncoderConfig, Sam3TrackerVideoMaskDecoderConfig, vision, s, 14
    )
    cfg = Sam3VideoConfig(
        detector_config=detector, tracker_config=tracker, low_res_mask_size=16, score_threshold_detection=0.0,
        new_det_thresh=0.0, hotstart_delay=2, hotstart_unmatch_thresh=1, hotstart_dup_thresh=1,
    )  # fmt: skip
    model, image, video = _tiny_model(Sam3VideoModel, cfg, seed, s, Sam3ImageProcessor)
    return model, Sam3VideoProcessor(image_processor=image, video_processor=video, tokenizer=CLIPTokenizer())


def _load(kind: str, build_tiny, model_cls, proc_cls, spec: str | os.PathLike, device, dtype):
    """``tiny``: the offline build on the device and dtype a real checkpoint would get; else the
    checkpoint through `load_pretrained` (one-line error naming the spec)."""
    device, dtype = device_and_dtype(device, dtype)
    if str(spec) == TINY:
        model, proc = build_tiny()
        return model.to(device=device, dtype=dtype), proc
    hint = "give a local folder or a hub id of a transformers checkpoint, or 'tiny'"
    return load_pretrained(model_cls, proc_cls, spec, device, dtype, kind, hint)


def load_sam2(spec: str | os.PathLike = TINY, device="auto", dtype="auto"):
    """``(Sam2VideoModel, Sam2VideoProcessor)`` from ``tiny``, a local folder or a hub id."""
    return _load("SAM2", build_tiny_sam2, Sam2VideoModel, Sam2VideoProcessor, spec, device, dtype)


def load_sam3(spec: str | os.PathLike = TINY, device="auto", dtype="auto"):
    """``(Sam3VideoModel, Sam3VideoProcessor)`` from ``tiny``, a local folder or a hub id."""
    return _load("SAM3", build_tiny_sam3, Sam3VideoModel, Sam3VideoProcessor, spec, device, dtype)
