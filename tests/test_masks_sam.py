"""Masks the way the paper makes them: SAM2 clicks/boxes, SAM3 text, the official box conversion.

The tiny SAM2/SAM3 models are random (built offline from configs): their masks mean nothing, so
these tests check shapes, that every frame is tracked (forward and backward), several objects,
the union, the coordinate mapping, the files written and the errors. The box conversion, the
50 px filter and the union are checked exactly against hand-made masks.
"""

import json
import logging
import re

import cv2
import numpy as np
import pytest
from test_masks import make_prepared, moving_square_clip

from loraedit import masks
from loraedit.errors import ClipError
from loraedit.frames import resize_center_crop
from loraedit.manifest import read_mask_sources
from loraedit.masks.check import component_boxes, contact_frames
from loraedit.masks.sam import _propagate, track_sam2, track_sam3
from loraedit.masks.sam_models import build_tiny_sam2, build_tiny_sam3
from loraedit.masks.shapes import box_shape, exact_shape
from loraedit.sheet.mask_columns import (
    parse_box,
    parse_points,
    parse_row,
    row_problems,
    source_frame_to_prepared,
    to_prepared,
)
from loraedit.video_io import read_mask, write_mask_frames

T, H, W = 5, 48, 72  # small: the tiny SAMs resize to 64 / 56 anyway


@pytest.fixture(scope="module")
def sam2():
    return build_tiny_sam2()


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    frames, edited, region = moving_square_clip()
    frames, region = frames[:T, :H, :W].copy(), region[:T, :H, :W].copy()
    root = make_prepared(
        tmp_path_factory.mktemp("sam") / "prepared",
        frames,
        edited[:H, :W].copy(),
        clip_id="c1",
        source={"video": "/data/c1.mp4"},
    )
    return root, frames, region


# ----------------------------------------------------------------------------- sheet syntax


def test_parse_points_several_objects_and_labels():
    got = parse_points("1:+120,80;-200,40|2:+300,200")
    assert got == {1: ([(120.0, 80.0), (200.0, 40.0)], [1, 0]), 2: ([(300.0, 200.0)], [1])}
    assert parse_points(" 5.5,6 ; -1,2 | 7,8") == {1: ([(5.5, 6.0), (1.0, 2.0)], [1, 0]), 2: ([(7.0, 8.0)], [1])}
    assert parse_points("3:+1,1|+2,2") == {3: ([(1.0, 1.0)], [1]), 2: ([(2.0, 2.0)], [1])}  # unnamed: position


@pytest.mark.parametrize("bad,words", [
    ("+1,2|", "empty object"), ("x1,2", "is not +x,y"), ("-1,2", "no positive"), ("1:+1,1|1:+2,2", "given twice"),
    ("+1;2", "is not +x,y"), ("0:+1,1", "must be 1 or more"),
])  # fmt: skip
def test_parse_points_errors(bad, words):
    with pytest.raises(ValueError, match=re.escape(words)):
        parse_points(bad)


def test_parse_box_and_row():
    assert parse_box("10,20,110,90|2:5,5,40,40") == {1: (10.0, 20.0, 110.0, 90.0), 2: (5.0, 5.0, 40.0, 40.0)}
    for bad in ["1,2,3", "10,10,5,20", "a,b,c,d"]:
        with pytest.raises(ValueError, match="mask_box"):
            parse_box(bad)
    # a box and clicks with the same id are one object; other ids are other objects
    p = parse_row({"mask_box": "10,10,50,50", "mask_points": "+30,30;-12,12|2:+60,20", "mask_frame": "3"})
    assert p.model == "sam2" and p.frame == 3 and p.text is None
    assert [(o.obj_id, o.box, o.labels) for o in p.objects] == [(1, (10, 10, 50, 50), [1, 0]), (2, None, [1])]
    assert parse_row({"mask_prompt": "the man's shirt"}).model == "sam3"
    assert parse_row({"mask": "m.png", "mask_points": float("nan")}) is None


@pytest.mark.parametrize("row,col,words", [
    ({"mask_prompt": "cat", "mask_box": "1,1,9,9"}, "mask_prompt", "exclusive"),
    ({"mask_frame": "0", "mask_prompt": "cat"}, "mask_frame", "1 = the first frame"),
    ({"mask_frame": "2"}, "mask_frame", "given without mask_points"),
    ({"mask_points": "+1,1;x"}, "mask_points", "'x' is not"),
])  # fmt: skip
def test_row_problems_name_the_column(row, col, words):
    problems = row_problems(row)
    assert list(problems) == [col] and words in problems[col] and "\n" not in problems[col]
    assert not problems[col].startswith(col)  # the sheet loader prefixes the column itself


# ----------------------------------------------------------------------------- geometry


def test_to_prepared_matches_prepares_resize_and_crop():
    src = np.zeros((100, 200), np.uint8)  # 200x100 source -> 96x64 bucket: scale 0.64 to 128x64, crop x 16
    src[40:60, 120:140] = 255  # a 20x20 blob centred at (130, 50)
    out = resize_center_crop(src, 96, 64, interpolation=cv2.INTER_AREA)
    ys, xs = np.nonzero(out > 127)
    centre = to_prepared([[130, 50]], (200, 100), (96, 64))[0]
    np.testing.assert_allclose(centre, [130 * 0.64 - 16, 32.0])
    assert abs(xs.mean() + 0.5 - centre[0]) < 0.6 and abs(ys.mean() + 0.5 - centre[1]) < 0.6
    np.testing.assert_allclose(to_prepared([[0, 0], [200, 100]], (200, 100), (200, 100)), [[0, 0], [200, 100]])


def test_source_frame_to_prepared():
    idx = [0, 3, 6, 9, 12]  # 13 source frames resampled to 5
    assert source_frame_to_prepared(1, idx) == 0 and source_frame_to_prepared(7, idx) == 2
    assert source_frame_to_prepared(9, idx) == 3  # source index 8 -> nearest prepared frame 3 (source 9)


# ----------------------------------------------------------------------------- box conversion (official)


def test_box_shape_is_the_official_conversion():
    edit = np.zeros((1, 100, 120), bool)
    edit[0, 20:40, 30:60] = True  # 30 wide, 20 high: grow int(3)=3 -> 1 left, 2 right; int(2)=2 -> 1 up, 1 down
    edit[0, 0:20, 0:20] = True  # at the top-left border: grow 2, x0 = max(0, -1) = 0, width 20 + 2 (official)
    edit[0, 80:87, 100:107] = True  # 7x7 = 49 px box < 50: dropped
    edit[0, 60:65, 100:110] = True  # 10x5 = 50 px box: kept (area below 50 is dropped, not 50 itself)
    box = box_shape(edit, grow=0.1, min_area=50)[0]
    boxes = sorted(component_boxes(box))
    assert boxes == [(0, 0, 22, 22), (29, 19, 62, 41), (100, 60, 111, 65)]
    assert not box[80:87, 100:107].any()


def test_box_shape_one_box_per_contour_and_union():
    # two objects (as SAM2 gives per object), overlapping: their union is one contour -> one box
    a = np.zeros((1, 60, 60), bool)
    b = np.zeros((1, 60, 60), bool)
    a[0, 10:30, 10:30], b[0, 25:40, 25:50] = True, True
    union = a | b
    assert component_boxes(box_shape(union, 0.0, 50)[0]) == [(10, 10, 50, 40)]
    # apart: one box each
    b2 = np.zeros((1, 60, 60), bool)
    b2[0, 45:55, 45:55] = True
    assert sorted(component_boxes(box_shape(a | b2, 0.0, 50)[0])) == [(10, 10, 30, 30), (45, 45, 55, 55)]
    # exact shape keeps the union itself; dilation grows it
    np.testing.assert_array_equal(exact_shape(union, 0), union)
    assert exact_shape(union, 2).sum() > union.sum()


# ----------------------------------------------------------------------------- SAM2


def test_propagate_visits_every_frame_forward_then_backward(sam2, clip):
    model, proc = sam2
    _, frames, _ = clip
    sess = proc.init_video_session(video=list(frames), inference_device="cpu", video_storage_device="cpu")
    proc.add_inputs_to_inference_session(
        inference_session=sess, frame_idx=2, obj_ids=1, input_points=[[[[20.0, 20.0]]]], input_labels=[[[1]]]
    )
    model(inference_session=sess, frame_idx=2)
    import torch

    with torch.inference_mode():
        order = [f for f, _ in _propagate(model, sess, 2, T)]
    assert order == [2, 3, 4, 1, 0]


def test_track_sam2_several_objects(sam2, clip):
    model, proc = sam2
    _, frames, _ = clip
    from loraedit.sheet.mask_columns import SamObject

    objs = [
        SamObject(1, [(20.0, 20.0), (5.0, 5.0)], [1, 0]),
        SamObject(2, [], [], (40.0, 10.0, 70.0, 40.0)),
        SamObject(7, [(50.0, 30.0)], [1], (40.0, 10.0, 70.0, 40.0)),
    ]
    out = track_sam2(model, proc, frames, 2, objs)
    assert out.shape == (3, T, H, W) and out.dtype == bool
    again = track_sam2(model, proc, frames, 2, objs)
    np.testing.assert_array_equal(out, again)  # deterministic: the stage can be re-run


def test_sam2_source_union_coordinates_and_info(sam2, clip, tmp_path):
    root, frames, _ = clip
    row = {"clip_id": "c1", "mask_points": "+20,20;-5,5|2:+60,30", "mask_box": "2:40,10,70,40"}
    keep, info = masks.compute_masks_info(root, {"shape": "exact"}, None, "c1", row)
    assert info["source"] == "sam2" and info["objects"] == [1, 2] and info["prompt_frame_prepared"] == 0
    # the source's keep mask is the union of the objects, tracked here directly
    from loraedit.sheet.mask_columns import SamObject

    model, proc = sam2
    per_obj = track_sam2(
        model,
        proc,
        frames,
        0,
        [SamObject(1, [(20.0, 20.0), (5.0, 5.0)], [1, 0]), SamObject(2, [(60.0, 30.0)], [1], (40.0, 10.0, 70.0, 40.0))],
    )
    np.testing.assert_array_equal(keep, (~per_obj.any(0)).astype(np.uint8))  # frame 0 too
    assert len(info["object_area"]) == 2 and len(info["object_area"][0]) == T


def test_sam2_prompt_frame_and_source_pixels(tmp_path, monkeypatch):
    # source 144x96, 9 frames -> prepared 72x48, 5 frames (indices 0, 2, 4, 6, 8)
    frames, edited, _ = moving_square_clip()
    frames = np.stack([cv2.resize(f, (W, H)) for f in frames[:T]])
    root = make_prepared(
        tmp_path / "p",
        frames,
        cv2.resize(edited, (W, H)),
        clip_id="c2",
        src_num_frames=9,
        src_size=[144, 96],
        frame_indices=[0, 2, 4, 6, 8],
        source={"video": "/v.mp4"},
    )
    seen = {}

    def spy(model, proc, frames_, start, objects, device, dtype):
        seen.update(start=start, objects=objects)
        return np.zeros((len(objects), *frames_.shape[:3]), bool)

    monkeypatch.setattr("loraedit.masks.sam.track_sam2", spy)
    _, info = masks.compute_masks_info(root, {}, None, "c2", {"mask_points": "+100,50", "mask_frame": "5"})
    assert seen["start"] == 2 and info["prompt_frame_source"] == 5
    assert not any("was not kept" in w for w in info["warnings"])
    assert seen["objects"][0].points == [(50.0, 25.0)]  # source pixels halved to the prepared frame
    _, info = masks.compute_masks_info(root, {}, None, "c2", {"mask_box": "0,0,288,50", "mask_frame": "4"})
    assert seen["objects"][0].box == (0.0, 0.0, 72.0, 25.0)  # clipped to the frame
    # source frame 4 (index 3) is between prepared frames 1 and 2 (sources 3 and 5): the first nearest
    assert seen["start"] == 1 and info["prompt_frame_source"] == 3
    assert any("mask_frame 4 was not kept" in w for w in info["warnings"])


@pytest.mark.parametrize("row,words", [
    ({"mask_points": "+200,20"}, "outside the 72x48 source frame"),
    ({"mask_box": "80,60,90,70"}, "lies outside"),
    ({"mask_prompt": "cat", "mask_frame": "9"}, "mask_frame 9 is past the clip's last frame (5)"),
])  # fmt: skip
def test_sam_errors_are_one_line(clip, row, words):
    root = clip[0]
    with pytest.raises(ClipError) as e:
        masks.compute_masks(root, {}, None, "c1", {"clip_id": "c1", **row})
    msg = str(e.value)
    assert msg.startswith("c1: /data/c1.mp4: ") and words in msg and "\n" not in msg


def test_forced_sam_source_without_inputs(clip):
    with pytest.raises(ClipError, match="c1: sample sheet: masks.source is 'sam3' but the row has no mask_prompt"):
        masks.compute_masks(clip[0], {"source": "sam3"}, None, "c1", {"mask_points": "+1,1"})


def test_auto_prefers_sam_then_file_then_flow(clip, tmp_path):
    root, _, region = clip
    write_mask_frames(tmp_path / "m", ~region)
    assert masks.choose_source("auto", {"mask_points": "+1,1"}, tmp_path / "m") == "sam2"
    assert masks.choose_source("auto", {"mask_prompt": "a cat"}, tmp_path / "m") == "sam3"
    assert masks.choose_source("auto", {}, tmp_path / "m") == "file"
    assert masks.choose_source("auto", {}, None) == "flow"
    assert masks.choose_source("file", {"mask_points": "+1,1"}, tmp_path / "m") == "file"  # forced wins
    _, info = masks.compute_masks_info(root, {}, tmp_path / "m", "c1", {"mask_points": "+20,20"})
    assert info["source"] == "sam2" and info["requested"] == "auto"


# ----------------------------------------------------------------------------- SAM3


def test_track_sam3_union_of_instances_every_frame(clip):
    model, proc = build_tiny_sam3()
    _, frames, _ = clip
    union, counts = track_sam3(model, proc, frames, 2, "a blue square")
    assert union.shape == (T, H, W) and union.dtype == bool and len(counts) == T
    assert all(c > 0 for c in counts)  # thresholds 0 in the tiny build: every frame has instances
    # the union is the OR of what postprocess_outputs gives per frame
    import torch

    sess = proc.init_video_session(
        video=list(frames), inference_device="cpu", processing_device="cpu", video_storage_device="cpu"
    )
    sess = proc.add_text_prompt(inference_session=sess, text="a blue square")
    with torch.inference_mode():
        for f, out in _propagate(model, sess, 2, T):
            np.testing.assert_array_equal(proc.postprocess_outputs(sess, out)["masks"].any(0).numpy(), union[f])


# ----------------------------------------------------------------------------- files, warnings, manifest


def test_make_masks_writes_source_json_and_contact_sheet(clip, tmp_path, caplog):
    root = clip[0]
    row = {"clip_id": "c1", "mask_prompt": "a blue square", "mask_frame": "3"}
    with caplog.at_level(logging.WARNING, logger="loraedit"):
        m = masks.make_masks(root, tmp_path / "masks", {"shape": "box"}, None, "c1", row, tmp_path / "check.png")
    assert m.shape == (T, H, W)
    names = sorted(p.name for p in (tmp_path / "masks").iterdir())
    assert names == [f"{t:05d}.png" for t in range(T)] + ["overlay.mp4", "source.json"]
    np.testing.assert_array_equal(read_mask(tmp_path / "masks"), m)  # source.json is not read as a frame
    info = json.loads((tmp_path / "masks" / "source.json").read_text())
    assert info["source"] == "sam3" and info["text"] == "a blue square" and len(info["instances"]) == T
    assert info["mask_frame"] == 3 and info["prompt_frame_prepared"] == 2
    assert info["edit_fraction"] == pytest.approx(1 - m[1:].mean(), abs=1e-4)
    # degenerate masks are legal but warned about: log, source.json and the contact sheet
    for w in info["warnings"]:
        assert any(w in r.getMessage() for r in caplog.records)
    sheet = cv2.cvtColor(cv2.imread(str(tmp_path / "check.png")), cv2.COLOR_BGR2RGB)
    scale = -(-192 // H)
    assert sheet.shape[1] == 3 * W * scale + 2 * 4 and sheet.shape[0] == 20 + H * scale + 20 * _wrapped(info, sheet)


def _wrapped(info, sheet):
    import textwrap

    return sum(len(textwrap.wrap(f"WARNING: {w}", max(20, sheet.shape[1] // 7))) for w in info["warnings"])


@pytest.mark.parametrize("value,words", [(255, "nothing will be edited"), (0, "every frame after the first")])
def test_degenerate_mask_warning_reaches_source_json_and_sheet(clip, tmp_path, value, words):
    root = clip[0]
    write_mask_frames(tmp_path / "m", np.full((1, H, W), value // 255, np.uint8))
    masks.make_masks(root, tmp_path / "masks", {"shape": "exact"}, tmp_path / "m", "c1", {}, tmp_path / "c.png")
    info = json.loads((tmp_path / "masks" / "source.json").read_text())
    assert info["source"] == "file" and len(info["warnings"]) == 1 and words in info["warnings"][0]
    sheet = cv2.cvtColor(cv2.imread(str(tmp_path / "c.png")), cv2.COLOR_BGR2RGB)
    warn_rows = (sheet[:, :, 0] == 180) & (sheet[:, :, 1] == 0) & (sheet[:, :, 2] == 0)
    assert warn_rows.any(axis=1).sum() >= 10  # a red warning line is drawn under the panels


def test_contact_sheet_shows_first_middle_last_with_boxes(clip):
    from loraedit.masks.check import contact_sheet

    _, frames, region = clip
    keep = (~region).astype(np.uint8)
    keep[0] = 1
    img = contact_sheet(frames, keep, {"clip_id": "c1", "source": "flow", "edit_fraction": 0.1, "warnings": []})
    assert contact_frames(T) == [0, 2, 4] and contact_frames(1) == [0]
    scale = -(-192 // H)
    assert img.shape == (20 + H * scale, 3 * W * scale + 8, 3)
    last = img[20:, 2 * (W * scale + 4) :]  # third panel: frame T
    green = (last[..., 0] == 0) & (last[..., 1] == 255) & (last[..., 2] == 0)
    ys, xs = np.nonzero(green)
    ((x0, y0, x1, y1),) = component_boxes(region[-1])
    assert (xs.min(), ys.min()) == (x0 * scale, y0 * scale) and (xs.max(), ys.max()) == (x1 * scale - 1, y1 * scale - 1)


def test_manifest_reads_mask_sources(tmp_path):
    (tmp_path / "a" / "masks").mkdir(parents=True)
    (tmp_path / "b" / "masks").mkdir(parents=True)
    (tmp_path / "a" / "masks" / "source.json").write_text(
        json.dumps(
            {
                "clip_id": "a",
                "source": "sam2",
                "objects": [1, 2],
                "edit_fraction": 0.2,
                "warnings": [],
                "object_area": [[0]],
            }
        )
    )
    got = read_mask_sources([tmp_path / "a" / "masks", tmp_path / "b" / "masks"])
    assert got == {"a": {"source": "sam2", "objects": [1, 2], "edit_fraction": 0.2, "warnings": []}}


def test_real_loaders_read_a_local_folder(clip, tmp_path):
    """The stage's loader path for real weights: a saved checkpoint folder (here a tiny one) loads as saved."""
    import torch

    from loraedit.masks.sam_models import load_sam2, load_sam3

    for build, load, name in [(build_tiny_sam2, load_sam2, "sam2"), (build_tiny_sam3, load_sam3, "sam3")]:
        model, proc = build(seed=3)
        model.save_pretrained(tmp_path / name)
        proc.save_pretrained(tmp_path / name)
        loaded, loaded_proc = load(tmp_path / name, "cpu", "auto")
        assert type(loaded) is type(model) and type(loaded_proc) is type(proc) and not loaded.training
        ref = model.state_dict()
        assert all(torch.equal(ref[k], v) for k, v in loaded.state_dict().items())
    _, info = masks.compute_masks_info(
        clip[0], {"sam2_model": str(tmp_path / "sam2")}, None, "c1", {"mask_box": "10,10,40,40"}
    )
    assert info["model"] == str(tmp_path / "sam2")
    with pytest.raises(RuntimeError, match="cannot load SAM2 from '/nonexistent'.*local folder or a hub id"):
        load_sam2("/nonexistent")
