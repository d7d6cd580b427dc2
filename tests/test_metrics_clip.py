"""CLIP Score / Input Similarity on transformers' CLIPModel (tiny random, offline)."""

import numpy as np
import pytest
import skimage.data
import torch

from loraedit.metrics.clip_sim import CLIPEmbedder, clip_metrics, load_clip_embedder, pair_similarity, tiny_clip


@pytest.fixture(scope="module")
def photos():
    names = ["astronaut", "coffee", "chelsea", "rocket"]
    return np.stack([np.ascontiguousarray(getattr(skimage.data, n)()[:256, :256]) for n in names])


def test_tiny_clip_is_seeded_and_does_not_touch_global_rng(photos):
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = load_clip_embedder("tiny", "cpu")(photos)
    b = CLIPEmbedder(*tiny_clip(), torch.device("cpu"), "again")(photos)
    assert torch.equal(a, b) and a.shape == (4, 16)
    assert torch.equal(torch.rand(1), before)


def test_local_checkpoint_loads_through_the_real_loader(photos, tmp_path):
    model, processor = tiny_clip()
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    loaded = load_clip_embedder(str(tmp_path), "cpu")
    assert loaded.name == str(tmp_path)
    torch.testing.assert_close(loaded(photos), load_clip_embedder("tiny", "cpu")(photos))


def test_similarities_are_cosines(photos):
    embed = load_clip_embedder("tiny", "cpu")
    s = pair_similarity(embed, photos, photos[:1])  # every photo vs the first
    assert s[0] == pytest.approx(1.0, abs=1e-5)
    e = torch.nn.functional.normalize(embed(photos), dim=-1)
    np.testing.assert_allclose(s, (e @ e[0]).numpy(), rtol=1e-5, atol=1e-6)

    video, other = photos[[0, 0, 0]], photos[[1, 2, 3]]
    m = clip_metrics(embed, video, video, photos[0])
    assert m["clip_score"]["value"] == pytest.approx(1.0, abs=1e-5)
    assert m["input_similarity"]["value"] == pytest.approx(1.0, abs=1e-5)
    m2 = clip_metrics(embed, other, video, photos[0])
    assert m2["input_similarity"]["value"] == pytest.approx(s[1:].mean(), abs=1e-5)
    assert m2["clip_score"]["model"].startswith("tiny random CLIPModel")
