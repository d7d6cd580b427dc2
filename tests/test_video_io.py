from pathlib import Path

import ffmpeg
import numpy as np
import pytest
from PIL import Image

from loraedit import video_io
from loraedit.errors import ClipError

ANYV2V = (
    Path(__file__).resolve().parents[1].parent / "shared" / "data" / "anyv2v" / "demo"
)  # ../shared beside the checkout


def smooth_clip(t=5, h=32, w=48, seed=0):
    """uint8 (T, H, W, 3): gradients that move, compress well (mp4 round trips stay close)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = rng.uniform(40, 200, 3)
    frames = [np.clip(base + 1.5 * (xx + 2 * i)[..., None] + (yy[..., None] - h / 2), 0, 255) for i in range(t)]
    return np.stack(frames).astype(np.uint8)


def assert_one_line(err: ClipError, clip, path, *words):
    msg = str(err)
    assert "\n" not in msg
    assert msg.startswith(f"{clip}: {path}: "), msg
    for w in words:
        assert w in msg, msg


def test_mp4_round_trip_and_probe(tmp_path):
    clip = smooth_clip()
    video_io.write_mp4(tmp_path / "a.mp4", clip, fps=12)
    info = video_io.probe(tmp_path / "a.mp4")
    assert (info["width"], info["height"], info["num_frames"]) == (48, 32, 5)
    assert info["fps"] == pytest.approx(12)
    frames, fps = video_io.read_video(tmp_path / "a.mp4")
    assert frames.shape == clip.shape and frames.dtype == np.uint8 and fps == pytest.approx(12)
    assert np.abs(frames.astype(int) - clip).mean() < 3
    assert [p.name for p in tmp_path.iterdir()] == ["a.mp4"]  # no temp files left


def test_mp4_odd_size_is_padded(tmp_path):
    clip = smooth_clip(t=3, h=33, w=47)
    video_io.write_mp4(tmp_path / "odd.mp4", clip, fps=8)
    frames, _ = video_io.read_video(tmp_path / "odd.mp4")
    assert frames.shape == (3, 34, 48, 3)
    assert np.abs(frames[:, :33, :47].astype(int) - clip).mean() < 4


def test_folder_of_frames(tmp_path):
    clip = smooth_clip(t=4)
    video_io.write_frames(tmp_path / "f", clip)
    assert sorted(p.name for p in (tmp_path / "f").iterdir()) == [f"{i:05d}.png" for i in range(4)]
    frames, fps = video_io.read_video(tmp_path / "f")
    np.testing.assert_array_equal(frames, clip)
    assert fps == video_io.DEFAULT_FOLDER_FPS
    assert video_io.read_video(tmp_path / "f", folder_fps=24.0)[1] == 24.0
    np.testing.assert_array_equal(video_io.read_frames(tmp_path / "f"), clip)
    info = video_io.probe(tmp_path / "f")
    assert (info["width"], info["height"], info["num_frames"], info["fps"]) == (48, 32, 4, 8.0)


def test_folder_with_mixed_sizes(tmp_path):
    video_io.write_frames(tmp_path / "f", smooth_clip(t=2))
    video_io.write_png(tmp_path / "f" / "00002.png", np.zeros((10, 10, 3), np.uint8))
    with pytest.raises(ClipError) as e:
        video_io.read_video(tmp_path / "f", "c1")
    assert_one_line(e.value, "c1", tmp_path / "f" / "00002.png", "10x10", "48x32")


def test_empty_folder(tmp_path):
    (tmp_path / "f").mkdir()
    with pytest.raises(ClipError) as e:
        video_io.read_video(tmp_path / "f", "c1")
    assert_one_line(e.value, "c1", tmp_path / "f", "no images")


def test_missing_file(tmp_path):
    with pytest.raises(ClipError) as e:
        video_io.read_video(tmp_path / "nope.mp4", "c1")
    assert_one_line(e.value, "c1", tmp_path / "nope.mp4", "file not found")


def test_corrupt_video(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(np.random.default_rng(0).bytes(4000))
    with pytest.raises(ClipError) as e:
        video_io.read_video(bad, "c1")
    assert_one_line(e.value, "c1", bad, "unreadable video", "Invalid data")


def test_truncated_video(tmp_path):
    video_io.write_mp4(tmp_path / "a.mp4", smooth_clip(t=8), fps=8)
    data = (tmp_path / "a.mp4").read_bytes()
    (tmp_path / "t.mp4").write_bytes(data[: len(data) // 3])
    with pytest.raises(ClipError) as e:
        video_io.read_video(tmp_path / "t.mp4", "c1")
    assert_one_line(e.value, "c1", tmp_path / "t.mp4", "unreadable video")


def test_zero_length_video(tmp_path):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(ClipError) as e:
        video_io.read_video(empty, "c1")
    assert_one_line(e.value, "c1", empty, "empty file")


def test_video_without_video_frames(tmp_path):
    audio = tmp_path / "audio.mp4"
    ffmpeg.input("sine=duration=0.2", format="lavfi").output(str(audio)).run(
        cmd=video_io.ffmpeg_exe(), capture_stdout=True, capture_stderr=True
    )
    with pytest.raises(ClipError) as e:
        video_io.read_video(audio, "c1")
    assert_one_line(e.value, "c1", audio, "no video stream")


def test_read_image_modes(tmp_path):
    rgba = np.zeros((6, 8, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 255
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    img = video_io.read_image(tmp_path / "a.png")
    assert img.shape == (6, 8, 3) and img.dtype == np.uint8 and (img[..., 0] == 200).all()
    Image.fromarray(np.full((6, 8), 77, np.uint8), "L").save(tmp_path / "g.png")
    assert (video_io.read_image(tmp_path / "g.png") == 77).all()
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(ClipError) as e:
        video_io.read_image(tmp_path / "bad.png", "c1")
    assert_one_line(e.value, "c1", tmp_path / "bad.png", "unreadable image")


def test_read_mask_image_folder_and_video(tmp_path):
    m = np.zeros((16, 24), np.uint8)
    m[:, 12:] = 255
    m[0, 0] = 127  # threshold is > 127
    m[0, 1] = 128
    video_io.write_png(tmp_path / "m.png", m)
    one = video_io.read_mask(tmp_path / "m.png")
    assert one.shape == (1, 16, 24) and set(np.unique(one)) == {0, 1}
    assert one[0, 0, 0] == 0 and one[0, 0, 1] == 1 and one[0, :, 12:].all()

    masks = np.zeros((3, 16, 24), np.uint8)
    for t in range(3):
        masks[t, :, 4 * t : 4 * t + 8] = 1
    video_io.write_mask_frames(tmp_path / "mf", masks)
    assert set(np.unique(video_io.read_image(tmp_path / "mf" / "00000.png"))) == {0, 255}
    np.testing.assert_array_equal(video_io.read_mask(tmp_path / "mf"), masks)

    video_io.write_mp4(tmp_path / "mv.mp4", np.repeat(masks[..., None] * 255, 3, axis=3), fps=8)
    from_video = video_io.read_mask(tmp_path / "mv.mp4")
    assert from_video.shape == masks.shape
    assert (from_video != masks).mean() < 0.02  # lossy codec: only edge pixels may flip


def test_write_png_replaces_atomically(tmp_path):
    video_io.write_png(tmp_path / "x.png", np.zeros((4, 4, 3), np.uint8))
    video_io.write_png(tmp_path / "x.png", np.full((4, 4, 3), 9, np.uint8))
    assert (video_io.read_image(tmp_path / "x.png") == 9).all()
    assert [p.name for p in tmp_path.iterdir()] == ["x.png"]


def test_probe_real_anyv2v_clip():
    path = ANYV2V / "A kitten turning its head on a wooden floor.mp4"
    if not path.exists():
        pytest.skip(f"{path} absent (AnyV2V demo data not on this machine)")
    info = video_io.probe(path)
    assert (info["width"], info["height"], info["num_frames"], info["fps"]) == (512, 512, 16, 8.0)
    frames, _ = video_io.read_video(path)
    folder, _ = video_io.read_video(path.with_suffix(""))  # the same clip as PNG frames
    assert frames.shape == folder.shape == (16, 512, 512, 3)
    assert np.abs(frames.astype(int) - folder).mean() < 3
