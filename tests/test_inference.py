"""Inference options: samplers, and the background composite (beyond the paper)."""

import numpy as np
import pytest
import torch

from loraedit import inference as inf
from loraedit.models.wan import WanModels, backend_spec, load_encoders, load_transformers

CFG = {"backend": "tiny", "seed": 0}
DEV = torch.device("cpu")
T, H, W = 5, 32, 32


@pytest.fixture(scope="module")
def models():
    return WanModels(backend_spec(CFG), load_encoders(CFG, DEV, torch.float32), load_transformers(CFG, DEV, torch.float32))


@pytest.fixture(scope="module")
def clip():
    rng = np.random.default_rng(1)
    frames = (rng.random((T, H, W, 3)) * 255).astype(np.uint8)
    keep = np.ones((T, H, W), np.uint8)
    keep[1:, 8:24, 8:24] = 0
    return frames, keep


def test_samplers_run_and_are_seeded(models, clip):
    frames, keep = clip
    outs = {}
    for sampler in ("euler", "unipc"):
        s = inf.InferSettings(num_steps=3, guidance_scale=5.0, scheduler=sampler, seed=3)
        outs[sampler] = inf.edit_video(models, frames, frames[0], keep, "p3rs0n, a clip", s, DEV, progress=False)
        again = inf.edit_video(models, frames, frames[0], keep, "p3rs0n, a clip", s, DEV, progress=False)
        assert outs[sampler].shape == frames.shape and np.array_equal(outs[sampler], again)
    assert not np.array_equal(outs["euler"], outs["unipc"])
    with pytest.raises(ValueError, match="unknown sampler"):
        inf.edit_video(models, frames, frames[0], keep, "x", inf.InferSettings(num_steps=1, scheduler="ddim"), DEV)


def test_composite_keeps_background_and_edit_region():
    rng = np.random.default_rng(0)
    source = rng.integers(0, 255, (T, H, W, 3), dtype=np.uint8)
    output = rng.integers(0, 255, (T, H, W, 3), dtype=np.uint8)
    keep = np.ones((T, H, W), np.uint8)
    keep[:, 8:24, 8:24] = 0
    out = inf.composite_background(output, source, keep, feather_px=2)
    assert np.array_equal(out[0], output[0])  # frame 1 is the model's (it is the edited frame)
    assert np.array_equal(out[1:, 12:20, 12:20], output[1:, 12:20, 12:20])  # edit region: the model's
    assert np.abs(out[1:, :2].astype(int) - source[1:, :2]).max() <= 1  # far background: the source
