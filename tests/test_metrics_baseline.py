"""External baselines: a folder of videos named by clip id, decoded, resampled and scored."""

import numpy as np
import pytest

from loraedit.errors import ClipError
from loraedit.metrics import load_baseline_video, score_clip
from loraedit.video_io import write_frames, write_mp4

T, W, H = 9, 64, 48


def ramp_video(n: int, w: int, h: int) -> np.ndarray:
    """Frame i is a flat gray of value 20 * i (+ a gradient), so resampling is visible in the values."""
    x = np.linspace(0, 40, w, dtype=np.float32)[None, :, None]
    return np.stack([np.broadcast_to(20 * i + x, (h, w, 3)) for i in range(n)]).astype(np.uint8)


@pytest.fixture
def baselines(tmp_path):
    folder = tmp_path / "anyv2v"
    folder.mkdir()
    write_mp4(folder / "clip_a.mp4", ramp_video(5, 128, 96), fps=8)  # fewer frames, other size (4:3)
    write_frames(folder / "clip_b", ramp_video(12, 80, 48))  # a folder of frames, wider aspect
    return folder


def test_video_file_is_resampled_and_resized(baselines):
    v = load_baseline_video(baselines, "clip_a", T, W, H)
    assert v.shape == (T, H, W, 3) and v.dtype == np.uint8
    # 5 source frames held to 9: order preserved and the last frame repeated.
    levels = v[:, :, 0, 0].mean(axis=1)
    assert np.all(np.diff(levels) >= -3) and levels[-1] == pytest.approx(levels[4], abs=2)


def test_frame_folder_and_uniform_subsampling(baselines):
    v = load_baseline_video(baselines, "clip_b", 4, W, H)
    assert v.shape == (4, H, W, 3)
    # 12 source frames -> indices 0, 4, 7, 11 (uniform over the clip): levels 0, 80, 140, 220.
    levels = v[:, 0, 0, 0].astype(float)
    np.testing.assert_allclose(levels - levels[0], [0, 80, 140, 220], atol=2)
    # Centre crop of an 80-wide frame to 64: the gradient's ends (0 and 40) are cut off.
    assert v[0, 0, 0, 0] > 2 and v[0, 0, -1, 0] < 38


def test_baseline_is_scored_like_our_methods(baselines):
    inp = load_baseline_video(baselines, "clip_a", T, W, H)
    out = load_baseline_video(baselines, "clip_a", T, W, H)
    masks = np.ones((T, H, W), np.uint8)
    res = score_clip(inp, out, masks, {0: inp[0]}, cfg={"pyiqa_metrics": ["psnr"]}, clip_id="clip_a", method="anyv2v")
    assert res["method"] == "anyv2v" and res["metrics"]["bg_psnr"]["value"] == 100.0


def test_missing_and_ambiguous_baselines_say_so(baselines):
    with pytest.raises(ClipError, match=r"^clip_c: .*anyv2v: no baseline video named clip_c"):
        load_baseline_video(baselines, "clip_c", T, W, H)
    write_mp4(baselines / "clip_a.mkv.mp4", ramp_video(3, 32, 32), fps=8)  # also matches clip_a.*
    with pytest.raises(ClipError, match="several baseline videos"):
        load_baseline_video(baselines, "clip_a", T, W, H)


def test_too_short_baseline_with_pad_error(baselines):
    with pytest.raises(ClipError, match="5 frames, 9 requested"):
        load_baseline_video(baselines, "clip_a", T, W, H, pad="error")
