"""Model backends: the real Wan checkpoints and tiny offline builds of the same classes."""

from .wan import BACKENDS, BackendSpec, WanModels, load_encoders, load_transformers

__all__ = ["BACKENDS", "BackendSpec", "WanModels", "load_encoders", "load_transformers"]
