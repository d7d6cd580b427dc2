"""score_clip on known pairs: an output equal to its input, a shuffled one, bad shapes."""

import json

import numpy as np
import pytest
import skimage.data

from loraedit.errors import ClipError
from loraedit.metrics import PSNR_CAP_DB, score_clip, score_config

T, H, W = 9, 48, 64


def panning_clip(seed: int = 0) -> np.ndarray:
    """``uint8 (T, H, W, 3)``: a window panning 2 px/frame across a real photo (smooth, textured motion)."""
    photo = skimage.data.coffee()[100:260, 100:300]  # (160, 200, 3)
    y0 = 20 + seed
    return np.stack([photo[y0 : y0 + H, 10 + 2 * t : 10 + 2 * t + W] for t in range(T)])


def edit_masks() -> np.ndarray:
    masks = np.ones((T, H, W), np.uint8)
    masks[:, 12:36, 20:44] = 0  # the edit region
    return masks


# Only cheap pyiqa metrics here: this file is about score_clip's contract, not pyiqa.
FAST = {"pyiqa_metrics": ["psnr", "ssim", "entropy"]}


@pytest.fixture(scope="module")
def clip():
    return panning_clip()


def test_identical_output_caps_psnr_and_has_unit_similarity(clip):
    res = score_clip(clip, clip.copy(), edit_masks(), {0: clip[0]}, gt_frames=clip, cfg=FAST, clip_id="c", method="m")
    m = res["metrics"]
    assert res["clip_id"] == "c" and res["method"] == "m"
    assert m["bg_psnr"]["value"] == PSNR_CAP_DB and "capped" in m["bg_psnr"]["note"]
    assert m["bg_ssim"]["value"] == pytest.approx(1.0)
    assert m["input_similarity"]["value"] == pytest.approx(1.0, abs=1e-5)
    assert m["first_frame_psnr"]["value"] == PSNR_CAP_DB
    assert m["gt_ssim"]["value"] == pytest.approx(1.0)
    assert m["frame_diff"]["value"] > 0  # the camera pans
    # Strict JSON (no NaN / Infinity tokens) so any reader can load scores.json.
    json.loads(json.dumps(res, allow_nan=False))


def test_shuffled_output_scores_worse(clip):
    rng = np.random.default_rng(1)
    order = rng.permutation(T)
    # No frame in place and no pair still consecutive.
    while np.any(order == np.arange(T)) or np.any(order[1:] == order[:-1] + 1):
        order = rng.permutation(T)
    same = score_clip(clip, clip.copy(), edit_masks(), {0: clip[0]}, cfg=FAST)["metrics"]
    shuf = score_clip(clip, clip[order], edit_masks(), {0: clip[0]}, cfg=FAST)["metrics"]
    assert shuf["warp_error"]["value"] > 10 * same["warp_error"]["value"]
    assert shuf["bg_psnr"]["value"] < 35
    assert shuf["input_similarity"]["value"] < same["input_similarity"]["value"]


def test_edit_inside_mask_keeps_background_but_not_fidelity(clip):
    masks = edit_masks()
    out = clip.copy()
    out[:, 12:36, 20:44] = 255 - out[:, 12:36, 20:44]  # change only the edit region
    m = score_clip(clip, out, masks, {0: clip[0]}, cfg=FAST)["metrics"]
    assert m["bg_psnr"]["value"] == PSNR_CAP_DB
    assert m["first_frame_psnr"]["value"] < 30  # output frame 0 no longer matches the edited frame


def test_missing_inputs_are_na_with_a_reason(clip):
    m = score_clip(clip, clip, edit_masks(), {0: clip[0]}, cfg=FAST)["metrics"]
    for name in ("gt_psnr", "gt_ssim"):
        assert m[name]["value"] is None and m[name]["note"] == "n/a (no ground truth)"
    assert m["extra_edit_psnr"]["value"] is None
    assert m["deqa"]["value"] is None and m["deqa"]["note"] == "n/a (no weights)"
    assert m["entropy"]["value"] > 0  # no-reference metrics need nothing else
    for rec in m.values():
        assert set(rec) >= {"value", "higher_is_better", "impl", "version", "model", "note"}
        assert rec["value"] is not None or rec["note"].startswith("n/a")


def test_extra_edited_frames_are_scored(clip):
    edited = {0: clip[0], 4: clip[4], 6: 255 - clip[6]}
    m = score_clip(clip, clip, edit_masks(), edited, cfg=FAST)["metrics"]
    # frame 4 matches exactly, frame 6 is inverted: finite, low PSNR; SSIM the mean of 1 and a low value.
    assert m["extra_edit_psnr"]["value"] < 15 and m["extra_edit_psnr"]["note"] == ""
    assert 0.5 <= m["extra_edit_ssim"]["value"] < 0.75
    one = score_clip(clip, clip, edit_masks(), {0: clip[0], 4: clip[4]}, cfg=FAST)["metrics"]
    assert one["extra_edit_psnr"]["value"] == PSNR_CAP_DB and one["extra_edit_ssim"]["value"] == pytest.approx(1.0)


def test_bad_shapes_name_the_clip_and_input(clip):
    with pytest.raises(ClipError, match=r"^c1: output: shape"):
        score_clip(clip, clip[:-1], edit_masks(), {0: clip[0]}, cfg=FAST, clip_id="c1")
    with pytest.raises(ClipError, match=r"^c1: masks: shape"):
        score_clip(clip, clip, edit_masks()[:, :-1], {0: clip[0]}, cfg=FAST, clip_id="c1")
    with pytest.raises(ClipError, match="no edited first frame"):
        score_clip(clip, clip, edit_masks(), {3: clip[3]}, cfg=FAST, clip_id="c1")


def test_config_errors_come_before_any_scoring(clip):
    with pytest.raises(ValueError, match="unknown pyiqa metric.*'psnrr'"):
        score_clip(clip, clip, edit_masks(), {0: clip[0]}, cfg={"pyiqa_metrics": ["psnrr"]})
    with pytest.raises(ValueError, match="score.flow = 'raft'"):
        score_clip(clip, clip, edit_masks(), {0: clip[0]}, cfg={**FAST, "flow": "raft"})


def test_mask_files_as_0_255_are_accepted(clip):
    out = clip.copy()
    out[:, 12:36, 20:44] = 0
    m = score_clip(clip, out, edit_masks() * 255, {0: clip[0]}, cfg=FAST)["metrics"]
    assert m["bg_psnr"]["value"] == PSNR_CAP_DB


def test_score_config_fills_defaults():
    cfg = score_config({"deqa": {"python": "/opt/deqa/bin/python"}, "flow": None})
    assert cfg["deqa"]["model"] == "zhiyuanyou/DeQA-Score-Mix3" and cfg["deqa"]["python"] == "/opt/deqa/bin/python"
    assert cfg["flow"] == "dis" and cfg["clip_model"] == "tiny"


def test_multiscale_metric_on_small_frames_is_na_not_a_crash():
    from loraedit.metrics.iqa import pyiqa_metric

    frames = np.random.default_rng(0).integers(0, 255, (2, 48, 48, 3), dtype=np.uint8)
    rec = pyiqa_metric("cw_ssim", frames, frames)
    assert rec["value"] is None and "under 64 px" in rec["note"]
    assert (
        pyiqa_metric(
            "cw_ssim",
            np.pad(frames, ((0, 0), (8, 8), (8, 8), (0, 0))),
            np.pad(frames, ((0, 0), (8, 8), (8, 8), (0, 0))),
        )["value"]
        > 0.99
    )
