"""Masked PSNR / SSIM (background preservation, edit fidelity) against pyiqa's own numbers."""

import numpy as np
import pytest
import skimage.data
import torch

from loraedit.metrics.background import background_metrics
from loraedit.metrics.base import PSNR_CAP_DB, to_tensor01
from loraedit.metrics.iqa import masked_psnr, pyiqa_metric, required_weight_files, ssim_per_frame, weights_cached

T, H, W = 4, 64, 64


@pytest.fixture(scope="module")
def video():
    photo = skimage.data.astronaut()
    return np.stack([photo[150 + 4 * t : 150 + 4 * t + H, 200 : 200 + W] for t in range(T)])


def noisy(v, sigma, seed=0):
    rng = np.random.default_rng(seed)
    return np.clip(v + rng.normal(0, sigma, v.shape), 0, 255).astype(np.uint8)


def test_unmasked_values_equal_pyiqa(video):
    import pyiqa

    out = noisy(video, 8)
    ref_ssim = pyiqa.create_metric("ssim", device="cpu")(to_tensor01(out), to_tensor01(video)).numpy()
    np.testing.assert_allclose(ssim_per_frame(out, video), ref_ssim, rtol=1e-5)
    mse = ((out.astype(float) - video) ** 2).mean()
    assert masked_psnr(out, video) == pytest.approx(10 * np.log10(255**2 / mse))


def test_mask_selects_the_pixels(video):
    out = video.copy()
    out[:, 20:44, 20:44] = noisy(video, 60)[:, 20:44, 20:44]  # damage only the edit region
    masks = np.ones((T, H, W), np.uint8)
    masks[:, 14:50, 14:50] = 0  # covers the damage plus the SSIM window (5 px) around it
    bg = background_metrics(out, video, masks)
    assert bg["bg_psnr"]["value"] == PSNR_CAP_DB and "capped" in bg["bg_psnr"]["note"]
    assert bg["bg_ssim"]["value"] == pytest.approx(1.0)
    full = background_metrics(out, video, np.ones_like(masks))
    assert full["bg_psnr"]["value"] < 30 and full["bg_ssim"]["value"] < 0.95
    # Only frames 2..T count: damaging frame 1 changes nothing.
    first = video.copy()
    first[0] = 255 - first[0]
    assert background_metrics(first, video, np.ones_like(masks))["bg_psnr"]["value"] == PSNR_CAP_DB


def test_empty_mask_is_na(video):
    bg = background_metrics(video, video, np.zeros((T, H, W), np.uint8))
    assert bg["bg_psnr"]["value"] is None and bg["bg_psnr"]["note"].startswith("n/a")
    assert bg["bg_ssim"]["value"] is None


def test_weight_metrics_need_cached_files(video, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty cache
    assert torch.hub.get_dir() == str(tmp_path / "hub")
    rec = pyiqa_metric("niqe", video, None, "cpu")
    assert rec["value"] is None and rec["note"] == "n/a (no weights)" and rec["higher_is_better"] is False
    files = required_weight_files("lpips")
    assert {f.name for f in files} == {"LPIPS_v0.1_alex-df73285e.pth", "alexnet-owt-7be5be79.pth"}
    assert not weights_cached("lpips")
    for f in files:
        f.parent.mkdir(parents=True, exist_ok=True)
        f.touch()
    assert weights_cached("lpips") and not weights_cached("musiq")
    assert weights_cached("psnr") and not weights_cached("topiq_nr")  # unknown files: never guessed


def test_small_frames_skip_ms_ssim_with_a_reason(video):
    rec = pyiqa_metric("ms_ssim", video, video, "cpu")
    assert rec["value"] is None and "161 px" in rec["note"]
    assert pyiqa_metric("gmsd", noisy(video, 8), video, "cpu")["higher_is_better"] is False
