import json

import cv2
import numpy as np
import pytest

from loraedit import prepare
from loraedit.errors import ClipError
from loraedit.frames import resample_indices, resize_center_crop
from loraedit.video_io import read_frames, read_image, read_video, write_frames, write_mp4, write_png

CFG = {"num_frames": 9, "landscape": [48, 32], "portrait": [32, 48], "square": [32, 32]}


def clip_with_frame_numbers(t, h, w):
    """uint8 (T, H, W, 3) whose red channel encodes the frame number (survives mp4 coding)."""
    frames = np.zeros((t, h, w, 3), np.uint8)
    for i in range(t):
        frames[i, ..., 0] = 10 * i
        frames[i, ..., 1] = np.linspace(0, 255, w, dtype=np.uint8)[None, :]
    return frames


@pytest.fixture
def sample(tmp_path):
    """A 25-frame 96x64 clip (mp4), its edited first frame, one extra edit and a gt video."""
    src = clip_with_frame_numbers(25, 64, 96)
    write_mp4(tmp_path / "v.mp4", src, fps=10)
    write_png(tmp_path / "e.png", np.full((64, 96, 3), 200, np.uint8))
    write_png(tmp_path / "x12.png", np.full((32, 48, 3), 50, np.uint8))  # half size, same aspect
    write_mp4(tmp_path / "gt.mp4", 255 - src, fps=10)
    return {
        "clip_id": "c1",
        "video": str(tmp_path / "v.mp4"),
        "edited_first_frame": str(tmp_path / "e.png"),
        "prompt": "p3rs0n, a thing",
        "source_prompt": None,
        "extra_edits": {12: str(tmp_path / "x12.png")},
        "gt_video": str(tmp_path / "gt.mp4"),
        "mask": float("nan"),
    }


def assert_one_line(err, clip, path, *words):
    msg = str(err)
    assert "\n" not in msg and msg.startswith(f"{clip}: {path}: "), msg
    for w in words:
        assert w in msg, msg


@pytest.mark.parametrize("n", [5, 13, 17, 49, 81])
def test_num_frames_valid(n):
    prepare.check_num_frames(n)


@pytest.mark.parametrize("n,near", [(16, "13 or 17"), (50, "49 or 53"), (3, "5"), (1, "5")])
def test_num_frames_invalid(n, near):
    with pytest.raises(ValueError, match=f"= {n} is not 4k\\+1.*nearest valid: {near}"):
        prepare.check_num_frames(n)


def test_choose_size_orientation():
    cfg = prepare.prepare_config({})
    assert prepare.choose_size(1920, 1080, cfg) == (832, 480)
    assert prepare.choose_size(1080, 1920, cfg) == (480, 832)
    assert prepare.choose_size(512, 512, cfg) == (624, 624)
    assert prepare.choose_size(520, 500, cfg) == (624, 624)  # within 5 %: square
    assert prepare.choose_size(560, 500, cfg) == (832, 480)


def test_choose_size_not_multiple_of_16():
    with pytest.raises(ValueError, match=r"prepare.landscape = \[830, 480\].*multiples of 16"):
        prepare.choose_size(100, 50, {"landscape": [830, 480]})


def test_resize_center_crop_keeps_the_centre():
    img = np.zeros((100, 300, 3), np.uint8)
    img[:, :100] = (255, 0, 0)
    img[:, 100:200] = (0, 255, 0)
    img[:, 200:] = (0, 0, 255)
    out = resize_center_crop(img, 48, 48)  # cover -> 144x48, crop the middle third
    assert out.shape == (48, 48, 3)
    assert (out[:, 4:-4] == (0, 255, 0)).all()
    up = resize_center_crop(img[:10, :30], 64, 32)
    assert up.shape == (32, 64, 3)
    mask = (np.arange(40)[None, :] < 20).repeat(20, 0).astype(np.uint8)  # (20, 40)
    out = resize_center_crop(mask, 16, 16, interpolation=cv2.INTER_NEAREST)
    assert set(np.unique(out)) == {0, 1} and out[:, :8].all() and not out[:, 8:].any()


def test_resample_indices_uniform():
    idx = resample_indices(100, 13)
    assert idx[0] == 0 and idx[-1] == 99 and len(idx) == 13
    assert np.all(np.diff(idx) >= 8) and np.all(np.diff(idx) <= 9)
    np.testing.assert_array_equal(resample_indices(17, 17), np.arange(17))


def test_resample_indices_padding():
    with pytest.raises(ValueError) as e:
        resample_indices(16, 17)
    assert str(e.value) == "clip has 16 frames, 17 requested; set prepare.pad: loop|hold or lower num_frames"
    np.testing.assert_array_equal(resample_indices(3, 5, "hold"), [0, 1, 2, 2, 2])
    np.testing.assert_array_equal(resample_indices(3, 5, "loop"), [0, 1, 2, 0, 1])


def test_prepare_clip_outputs(tmp_path, sample):
    out = tmp_path / "res" / "c1" / "prepared"
    meta = prepare.prepare_clip(sample, CFG, out)
    assert json.loads((out / "meta.json").read_text()) == meta
    assert (meta["width"], meta["height"], meta["num_frames"]) == (48, 32, 9)
    assert meta["orientation"] == "landscape" and meta["src_size"] == [96, 64]
    assert meta["src_num_frames"] == 25 and meta["src_fps"] == pytest.approx(10)
    assert meta["frame_indices"] == [0, 3, 6, 9, 12, 15, 18, 21, 24]
    assert meta["fps"] == pytest.approx(9 / 2.5)  # num_frames / duration
    assert meta["extra_edit_frames"] == [4] and meta["extra_edit_source_frames"] == {"4": 12}
    assert meta["has_gt"] and meta["prompt"] == "p3rs0n, a thing" and meta["source_prompt"] is None

    frames = read_frames(out / "frames")
    assert frames.shape == (9, 32, 48, 3)
    # red channel = 10 * source frame: the resampled frames are the right ones
    np.testing.assert_allclose(frames[..., 0].mean(axis=(1, 2)), 10 * np.array(meta["frame_indices"]), atol=3)
    assert sorted(p.name for p in (out / "edited").iterdir()) == ["00000.png", "00004.png"]
    assert read_image(out / "edited" / "00000.png").shape == (32, 48, 3)
    assert abs(int(read_image(out / "edited" / "00004.png").mean()) - 50) <= 1
    gt = read_frames(out / "gt")
    assert gt.shape == frames.shape and np.abs(gt.astype(int) + frames - 255).mean() < 6
    pv, _ = read_video(out / "preview.mp4")
    assert pv.shape == (9, 32, 48, 3)
    assert sorted(p.name for p in out.parent.iterdir()) == ["prepared"]  # no temp folder left


def test_prepare_from_frame_folder_portrait(tmp_path, sample):
    write_frames(tmp_path / "frames", clip_with_frame_numbers(9, 96, 64))
    write_png(tmp_path / "e.png", np.zeros((96, 64, 3), np.uint8))
    row = dict(sample, video=str(tmp_path / "frames"), extra_edits="", gt_video=None)
    meta = prepare.prepare_clip(row, CFG, tmp_path / "out")
    assert (meta["width"], meta["height"], meta["orientation"]) == (32, 48, "portrait")
    assert meta["src_fps"] == 8.0 and meta["frame_indices"] == list(range(9)) and not meta["has_gt"]


def test_too_few_frames_error_and_padding(tmp_path, sample):
    cfg = dict(CFG, num_frames=29)
    with pytest.raises(ClipError) as e:
        prepare.prepare_clip(sample, cfg, tmp_path / "out")
    assert_one_line(e.value, "c1", sample["video"], "clip has 25 frames, 29 requested; set prepare.pad: loop|hold")
    assert not (tmp_path / "out").exists()
    hold = prepare.prepare_clip(sample, dict(cfg, pad="hold"), tmp_path / "hold")
    assert hold["frame_indices"] == list(range(25)) + [24] * 4 and hold["fps"] == pytest.approx(10)
    loop = prepare.prepare_clip(sample, dict(cfg, pad="loop"), tmp_path / "loop")
    assert loop["frame_indices"] == list(range(25)) + [0, 1, 2, 3]
    assert read_frames(tmp_path / "loop" / "frames").shape[0] == 29


def test_bad_num_frames_in_config(tmp_path, sample):
    with pytest.raises(ClipError) as e:
        prepare.prepare_clip(sample, dict(CFG, num_frames=16), tmp_path / "out")
    assert_one_line(e.value, "c1", "config", "prepare.num_frames = 16", "13 or 17")


def test_bad_size_in_config(tmp_path, sample):
    with pytest.raises(ClipError) as e:
        prepare.prepare_clip(sample, dict(CFG, landscape=[50, 32]), tmp_path / "out")
    assert_one_line(e.value, "c1", "config", "prepare.landscape = [50, 32]", "multiples of 16")


def test_edited_frame_of_another_aspect(tmp_path, sample):
    write_png(tmp_path / "sq.png", np.full((64, 64, 3), 100, np.uint8))
    row = dict(sample, edited_first_frame=str(tmp_path / "sq.png"))
    with pytest.raises(ClipError) as e:
        prepare.prepare_clip(row, CFG, tmp_path / "out")
    assert_one_line(e.value, "c1", tmp_path / "sq.png", "64x64", "96x64", "allow_crop")
    assert not (tmp_path / "out").exists()
    meta = prepare.prepare_clip(row, dict(CFG, allow_crop=True), tmp_path / "out")
    assert read_image(tmp_path / "out" / "edited" / "00000.png").shape == (meta["height"], meta["width"], 3)


def test_missing_and_corrupt_inputs(tmp_path, sample):
    with pytest.raises(ClipError) as e:
        prepare.prepare_clip(dict(sample, video=str(tmp_path / "gone.mp4")), CFG, tmp_path / "out")
    assert_one_line(e.value, "c1", tmp_path / "gone.mp4", "file not found")
    (tmp_path / "bad.mp4").write_bytes(b"\x00" * 1000)
    with pytest.raises(ClipError) as e:
        prepare.prepare_clip(dict(sample, video=str(tmp_path / "bad.mp4")), CFG, tmp_path / "out")
    assert_one_line(e.value, "c1", tmp_path / "bad.mp4", "unreadable video")
    with pytest.raises(ClipError) as e:
        prepare.prepare_clip(dict(sample, edited_first_frame=str(tmp_path / "no.png")), CFG, tmp_path / "out")
    assert_one_line(e.value, "c1", tmp_path / "no.png", "file not found")


def test_extra_edit_conflicts(tmp_path, sample):
    # source frames 11 and 13 both map to prepared frame 4 (source frame 12)
    row = dict(sample, extra_edits={11: sample["edited_first_frame"], 13: sample["edited_first_frame"]})
    with pytest.raises(ClipError, match="both map to prepared frame 4"):
        prepare.prepare_clip(row, CFG, tmp_path / "out")
    with pytest.raises(ClipError, match="clip has frames 0..24"):
        prepare.prepare_clip(dict(sample, extra_edits={40: sample["edited_first_frame"]}), CFG, tmp_path / "out")
