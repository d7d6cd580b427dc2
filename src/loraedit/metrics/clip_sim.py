"""CLIP Score and Input Similarity (the paper's Table 1), image-image, on any image embedder.

- CLIP Score: mean cosine similarity between the embedding of each output frame
  and the edited first frame;
- Input Similarity: mean cosine similarity between output frame t and input frame t.

pyiqa's CLIP metrics are image-text (``clipscore``) and its openai-clip import
needs pkg_resources (gone in setuptools >= 82), so these are written on
transformers' ``CLIPModel``. The embedder is a plain callable
``uint8 (N, H, W, 3) -> float (N, D)``, so any image model plugs in
(:class:`TorchImageEmbedder` wraps e.g. a timm backbone).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np
import torch

from ..devices import resolve_device
from ..frames import resize_center_crop
from .base import pkg_version, record

Embedder = Callable[[np.ndarray], torch.Tensor]  # uint8 (N, H, W, 3) -> float (N, D)

TINY = "tiny"
TINY_SEED = 0
REAL_CLIP = "openai/clip-vit-large-patch14"  # the paper's CLIP; use for real runs
BATCH = 16


class CLIPEmbedder:
    """Projected CLIP image embeddings (``CLIPModel.get_image_features``)."""

    def __init__(self, model, processor, device: torch.device, name: str):
        self.model = model.to(device).eval()
        self.processor = processor
        self.device = device
        self.name = name

    @torch.no_grad()
    def __call__(self, frames: np.ndarray) -> torch.Tensor:
        feats = []
        for s in range(0, len(frames), BATCH):
            px = self.processor(images=list(frames[s : s + BATCH]), return_tensors="pt")["pixel_values"]
            out = self.model.get_image_features(pixel_values=px.to(self.device))
            # transformers 5 returns a ModelOutput whose pooler_output is the projected embedding.
            feats.append((out if isinstance(out, torch.Tensor) else out.pooler_output).float().cpu())
        return torch.cat(feats)  # (N, projection_dim)


class TorchImageEmbedder:
    """Any ``nn.Module`` mapping normalised ``(N, 3, size, size)`` images to ``(N, D)`` features."""

    def __init__(
        self, module: torch.nn.Module, size: int, mean, std, device: str | torch.device = "cpu", name: str = ""
    ):
        self.device = resolve_device(str(device))
        self.module = module.to(self.device).eval()
        self.size = size
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
        self.name = name or type(module).__name__

    @torch.no_grad()
    def __call__(self, frames: np.ndarray) -> torch.Tensor:
        feats = []
        for s in range(0, len(frames), BATCH):
            imgs = np.stack([resize_center_crop(f, self.size, self.size) for f in frames[s : s + BATCH]])
            x = torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 255.0  # (n, 3, size, size)
            x = (x - self.mean) / self.std
            feats.append(self.module(x.to(self.device)).float().reshape(len(imgs), -1).cpu())
        return torch.cat(feats)


def tiny_clip(seed: int = TINY_SEED):
    """A small random ``CLIPModel`` + ``CLIPImageProcessor`` built offline (same classes as the real one)."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    vision = {
        "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
        "image_size": 32, "patch_size": 8,
    }  # fmt: skip
    text = {
        "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
        "vocab_size": 64, "max_position_embeddings": 16, "bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 1,
    }  # fmt: skip
    with torch.random.fork_rng(devices=[]):  # seeded init without touching the caller's RNG
        torch.manual_seed(seed)
        model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16))
    processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    return model, processor


@functools.lru_cache(maxsize=2)
def load_clip_embedder(ref: str = TINY, device: str = "auto") -> CLIPEmbedder:
    """``"tiny"`` (offline random CLIP, for tests and the demo), a local folder or a hub id."""
    dev = resolve_device(device)
    if ref == TINY:
        model, processor = tiny_clip()
        return CLIPEmbedder(model, processor, dev, f"tiny random CLIPModel (seed {TINY_SEED}, offline)")
    from transformers import CLIPImageProcessor, CLIPModel

    model = CLIPModel.from_pretrained(ref)
    processor = CLIPImageProcessor.from_pretrained(ref)
    return CLIPEmbedder(model, processor, dev, str(ref))


def pair_similarity(embed: Embedder, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``float (N,)`` cosine similarity of ``a[i]`` and ``b[i]``; a single ``b`` frame is compared with every ``a``."""
    ea = torch.nn.functional.normalize(embed(a), dim=-1)  # (N, D)
    eb = torch.nn.functional.normalize(embed(b), dim=-1)  # (N or 1, D)
    return (ea * eb).sum(-1).numpy().astype(np.float64)


def clip_metrics(embed: Embedder, output: np.ndarray, input: np.ndarray, edited_first: np.ndarray) -> dict[str, dict]:
    """``{"clip_score", "input_similarity"}`` for ``uint8 (T, H, W, 3)`` videos and the ``(H, W, 3)`` edited frame."""
    name = getattr(embed, "name", type(embed).__name__)
    version = (
        f"transformers {pkg_version('transformers')}"
        if isinstance(embed, CLIPEmbedder)
        else f"torch {torch.__version__}"
    )
    return {
        "clip_score": record(
            pair_similarity(embed, output, edited_first[None]).mean(),
            True,
            "mean cos(emb(output_t), emb(edited first frame)), all frames",
            version,
            name,
            "",
            "table1",
        ),
        "input_similarity": record(
            pair_similarity(embed, output, input).mean(),
            True,
            "mean cos(emb(output_t), emb(input_t))",
            version,
            name,
            "",
            "table1",
        ),
    }
