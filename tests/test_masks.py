import json
import logging
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from loraedit import masks
from loraedit.atomic import write_json
from loraedit.errors import ClipError
from loraedit.frames import overlay
from loraedit.masks import sources
from loraedit.masks.shapes import box_shape, exact_shape
from loraedit.video_io import read_mask, write_frames, write_mask_frames, write_png

T, H, W = 13, 64, 96
SIDE = 22


def moving_square_clip(seed=0):
    """Textured background, a textured square moving right/down; returns (frames, edited, true edit region)."""
    rng = np.random.default_rng(seed)
    bg = cv2.resize(rng.uniform(40, 210, (12, 16, 3)).astype(np.float32), (W, H), interpolation=cv2.INTER_CUBIC)
    tex = cv2.resize(rng.uniform(0.75, 1.25, (6, 6)).astype(np.float32), (SIDE, SIDE), interpolation=cv2.INTER_CUBIC)
    frames, edited, region = [], None, []
    for t in range(T):
        x, y = 10 + 4 * t, 12 + int(1.5 * t)
        f = bg.copy()
        r = np.zeros((H, W), bool)
        r[y : y + SIDE, x : x + SIDE] = True
        f[r] = (np.float32([60, 90, 200]) * tex[..., None]).reshape(-1, 3)
        frames.append(np.clip(f, 0, 255).astype(np.uint8))
        region.append(r)
        if t == 0:
            e = f.copy()
            e[r] = (np.float32([230, 200, 40]) * tex[..., None]).reshape(-1, 3)  # recoloured
            edited = np.clip(e, 0, 255).astype(np.uint8)
    return np.stack(frames), edited, np.stack(region)


def make_prepared(root, frames, edited, **meta):
    """A prepared folder as the prepare stage writes it (frames/, edited/00000.png, meta.json)."""
    write_frames(root / "frames", frames)
    (root / "edited").mkdir(parents=True)
    write_png(root / "edited" / "00000.png", edited)
    t, h, w = frames.shape[:3]
    m = {
        "clip_id": "sq",
        "width": w,
        "height": h,
        "num_frames": t,
        "fps": 8.0,
        "src_num_frames": t,
        "src_size": [w, h],
        "frame_indices": list(range(t)),
    }
    m.update(meta)
    write_json(root / "meta.json", m)
    return root


@pytest.fixture(scope="module")
def square(tmp_path_factory):
    frames, edited, region = moving_square_clip()
    root = make_prepared(tmp_path_factory.mktemp("sq") / "prepared", frames, edited)
    return root, frames, region


def iou(a, b):
    return (a & b).sum() / max(1, (a | b).sum())


@pytest.mark.parametrize("snap", [True, False])
def test_flow_mask_follows_the_square(square, snap):
    root, _, region = square
    exact = masks.compute_masks(root, {"source": "flow", "shape": "exact", "flow_snap": snap})
    assert exact.shape == (T, H, W) and exact.dtype == np.uint8
    edit = exact == 0
    ious = [iou(edit[t], region[t]) for t in range(T)]  # frame 0 too: the file carries its region
    assert min(ious) > 0.5, np.round(ious, 2)
    # the square has moved well away from where it started: the mask really follows it
    assert iou(region[-1], region[0]) == 0 and iou(edit[-1], region[0]) < 0.1

    box = masks.compute_masks(root, {"source": "flow", "shape": "box", "flow_snap": snap})
    assert ((box == 0) | ~edit).all()  # the box contains the exact region
    assert (box == 0).sum() > edit.sum()


def test_auto_picks_flow_without_and_file_with_a_mask(square, tmp_path):
    root, _, region = square
    auto = masks.compute_masks(root, {"shape": "exact"})
    np.testing.assert_array_equal(auto, masks.compute_masks(root, {"source": "flow", "shape": "exact"}))
    write_mask_frames(tmp_path / "truth", ~region)
    given = masks.compute_masks(root, {"shape": "exact"}, given_mask_path=tmp_path / "truth")
    np.testing.assert_array_equal(given, (~region).astype(np.uint8))


def test_file_mask_one_image_resized_and_resampled(tmp_path):
    frames = np.zeros((5, 32, 48, 3), np.uint8)
    root = make_prepared(
        tmp_path / "p", frames, frames[0], src_num_frames=9, src_size=[96, 64], frame_indices=[0, 2, 4, 6, 8]
    )
    big = np.full((64, 96), 255, np.uint8)
    big[16:48, 24:72] = 0  # the centre half is the edit region
    write_png(tmp_path / "one.png", big)
    m = masks.compute_masks(root, {"shape": "exact"}, tmp_path / "one.png", "c1")
    assert m.shape == (5, 32, 48)
    for t in range(5):  # nearest resize to 48x32 keeps it binary and in place
        assert not m[t, 8:24, 12:36].any() and m[t].sum() == 32 * 48 - 16 * 24

    # source frame count (9): resampled with prepare's frame indices
    src = np.ones((9, 32, 48), np.uint8)
    for i in range(9):
        src[i, :, i] = 0  # frame i edits column i
    write_mask_frames(tmp_path / "nine", src)
    m = masks.compute_masks(root, {"shape": "exact"}, tmp_path / "nine", "c1")
    for t, i in enumerate([0, 2, 4, 6, 8]):
        if t:
            assert np.flatnonzero(~m[t].all(axis=0)).tolist() == [i]


def assert_one_line(err, clip, path, *words):
    msg = str(err)
    assert "\n" not in msg and msg.startswith(f"{clip}: {path}: "), msg
    for w in words:
        assert w in msg, msg


def test_file_mask_wrong_frame_count(tmp_path):
    frames = np.zeros((5, 32, 48, 3), np.uint8)
    root = make_prepared(tmp_path / "p", frames, frames[0], src_num_frames=9)
    write_mask_frames(tmp_path / "seven", np.ones((7, 32, 48), np.uint8))
    with pytest.raises(ClipError) as e:
        masks.compute_masks(root, {}, tmp_path / "seven", "c1")
    assert_one_line(e.value, "c1", tmp_path / "seven", "mask has 7 frames", "prepared clip has 5", "source clip: 9")


def test_file_mask_wrong_aspect(tmp_path):
    frames = np.zeros((5, 32, 48, 3), np.uint8)
    root = make_prepared(tmp_path / "p", frames, frames[0], src_size=[96, 64])
    write_png(tmp_path / "sq.png", np.full((50, 50), 255, np.uint8))
    with pytest.raises(ClipError) as e:
        masks.compute_masks(root, {}, tmp_path / "sq.png", "c1")
    assert_one_line(e.value, "c1", tmp_path / "sq.png", "mask is 50x50", "video is 96x64", "cannot resize")


def test_file_mask_missing(tmp_path):
    frames = np.zeros((5, 32, 48, 3), np.uint8)
    root = make_prepared(tmp_path / "p", frames, frames[0])
    with pytest.raises(ClipError) as e:
        masks.compute_masks(root, {}, tmp_path / "gone.png", "c1")
    assert_one_line(e.value, "c1", tmp_path / "gone.png", "file not found")
    with pytest.raises(ClipError, match="gives no mask"):
        masks.compute_masks(root, {"source": "file"}, None, "c1")


@pytest.mark.parametrize("value,word", [(255, "all ones"), (0, "all zeros")])
def test_degenerate_masks_warn(tmp_path, caplog, value, word):
    frames = np.zeros((5, 32, 48, 3), np.uint8)
    root = make_prepared(tmp_path / "p", frames, frames[0])
    write_png(tmp_path / "m.png", np.full((32, 48), value, np.uint8))
    with caplog.at_level(logging.WARNING, logger="loraedit.masks"):
        m = masks.compute_masks(root, {"shape": "exact"}, tmp_path / "m.png", "c1")
    assert (m == (1 if value else 0)).all()
    lines = [r.getMessage() for r in caplog.records if word in r.getMessage()]
    assert len(lines) == 1 and lines[0].startswith("c1: ") and "1, 2, 3, 4 of 5" in lines[0]


def test_box_shape_grow_and_min_area():
    edit = np.zeros((2, 60, 60), bool)
    edit[1, 10:30, 10:30] = True  # 20x20 -> 22x22 box (10 % grown, half per side)
    edit[1, 50:55, 50:55] = True  # 25 px box < min_area: ignored
    box = box_shape(edit, grow=0.1, min_area=50)
    assert not box[0].any()
    ys, xs = np.nonzero(box[1])
    assert (ys.min(), ys.max(), xs.min(), xs.max()) == (9, 30, 9, 30)
    assert not box[1, 45:, 45:].any()
    ring = np.zeros((1, 40, 40), bool)
    ring[0, 10:30, 10:30], ring[0, 15:25, 15:25] = True, False  # a hollow square: its box is solid
    assert box_shape(ring, 0.0, 50)[0, 10:30, 10:30].all()


def test_exact_shape_dilate():
    edit = np.zeros((1, 21, 21), bool)
    edit[0, 10, 10] = True
    assert exact_shape(edit, 0).sum() == 1
    grown = exact_shape(edit, 2)
    assert grown[0, 10, 8:13].all() and grown[0, 8:13, 10].all() and not grown[0, 10, 7]


def left_half(inputs):
    """A mask source for the test below: the left half of every frame is the edit region."""
    keep = np.ones(inputs.frames.shape[:3], np.uint8)
    keep[:, :, : inputs.frames.shape[2] // 2] = 0
    return keep


def test_a_source_is_one_row_of_the_table(square, monkeypatch):
    root, _, _ = square
    monkeypatch.setitem(sources.SOURCES, "left-half", f"{__name__}:left_half")
    m = masks.compute_masks(root, {"source": "left-half", "shape": "exact"})
    assert not m[:, :, : W // 2].any() and m[:, :, W // 2 :].all()
    monkeypatch.delitem(sources.SOURCES, "left-half")
    with pytest.raises(ValueError, match="left-half"):
        masks.compute_masks(root, {"source": "left-half"})


def test_importing_the_masks_package_does_not_import_sam():
    code = "import sys, loraedit.masks; print('loraedit.masks.sam' in sys.modules, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_write_masks(square, tmp_path):
    root, frames, region = square
    keep = (~region).astype(np.uint8)
    keep[0] = 1
    masks.write_masks(tmp_path / "masks", keep, frames, fps=8)
    names = sorted(p.name for p in (tmp_path / "masks").iterdir())
    assert names == [f"{t:05d}.png" for t in range(T)] + ["overlay.mp4"]
    np.testing.assert_array_equal(read_mask(tmp_path / "masks"), keep)
    over = read_mask(tmp_path / "masks" / "overlay.mp4")  # decodes: a real video of T frames
    assert over.shape == (T, H, W)
    tinted = overlay(frames, keep)
    assert (tinted[~keep.astype(bool)][:, 0] >= frames[~keep.astype(bool)][:, 0]).all()  # red goes up
    np.testing.assert_array_equal(tinted[keep.astype(bool)], frames[keep.astype(bool)])

    out = masks.make_masks(root, tmp_path / "stage", {"source": "flow"})
    assert json.loads((root / "meta.json").read_text())["clip_id"] == "sq"
    np.testing.assert_array_equal(read_mask(tmp_path / "stage"), out)


PAPER_CONFIGS = ["wan2.1-480p.yaml", "hunyuan-i2v.yaml"]


@pytest.mark.parametrize("config", PAPER_CONFIGS)
def test_paper_configs_refuse_a_row_without_a_mask_source(square, config):
    """The paper masks with SAM: no silent optical-flow fallback in its configs (one line: clip, fix)."""
    import yaml

    cfg = yaml.safe_load((Path(__file__).parents[1] / "config" / config).read_text())["masks"]
    assert cfg["allow_flow"] is False
    rows = [{"clip_id": "plain"}, {"clip_id": "phrase", "mask_prompt": "the car"}, {"clip_id": "file", "mask": "m.png"}]
    problems = masks.sheet_source_problems(rows, cfg)
    assert len(problems) == 1 and problems[0].startswith("plain: sample sheet: no mask source")
    assert "mask_prompt" in problems[0] and "masks.allow_flow: true" in problems[0] and "\n" not in problems[0]
    root, _, _ = square
    with pytest.raises(ClipError, match="no mask source"):
        masks.compute_masks(root, {**cfg, "device": "cpu"}, clip_id="plain")
    # the heuristic stays available where it is allowed (the demo and toy configs)
    assert masks.sheet_source_problems(rows, {**cfg, "allow_flow": True}) == []
    assert masks.choose_source("auto", {}, None, "plain", allow_flow=True) == "flow"
