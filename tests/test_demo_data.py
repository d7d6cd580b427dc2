import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from loraedit.sheet.samples import load_samples
from loraedit.toy.demo import make_demo_dataset
from loraedit.video_io import read_image, read_mask, read_video


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo") / "demo"
    return make_demo_dataset(root, num_clips=3, num_frames=9, seed=0)


def test_sheet_and_layout(demo):
    df = load_samples(demo)  # validates: every file exists, ids are safe
    assert len(df) == 3
    assert df["mask"].notna().sum() == 1  # the others get masks from optical flow
    assert sum(bool(e) for e in df["extra_edits"]) == 1
    assert sum(v.endswith(".mp4") for v in df["video"]) == 2  # one clip is a folder of PNGs
    assert all(p.startswith("p3rs0n, ") for p in df["prompt"])
    sizes = set()
    for cid, row in df.iterrows():
        frames, _ = read_video(row["video"], cid)
        gt, _ = read_video(row["gt_video"], cid)
        assert frames.shape == gt.shape and frames.shape[0] == 9
        sizes.add(frames.shape[1:3])
        assert read_image(row["edited_first_frame"]).shape == frames.shape[1:]
    assert sizes == {(64, 96), (96, 64), (64, 64)}  # landscape, portrait, square


def test_gt_differs_only_in_the_object(demo):
    df = load_samples(demo)
    for cid, row in df.iterrows():
        frames, _ = read_video(row["video"], cid)
        gt, _ = read_video(row["gt_video"], cid)
        keep = read_mask(demo.parent / cid / "mask").astype(bool)  # (T, H, W), the true mask
        assert keep.shape == frames.shape[:3] and (~keep).any(axis=(1, 2)).all()
        diff = np.abs(frames.astype(int) - gt).sum(-1)
        # background: only codec noise (one clip is lossless PNGs vs gt.mp4); object: recoloured
        assert diff[keep].mean() < 30, cid
        assert diff[~keep].mean() > 150, cid
        # The edited frames are gt's frames (lossless PNG vs mp4: allow codec noise), not the source's.
        edits = {0: row["edited_first_frame"], **row["extra_edits"]}
        for t, path in edits.items():
            img = read_image(path).astype(int)
            to_gt, to_src = np.abs(img - gt[t]).sum(-1), np.abs(img - frames[t]).sum(-1)
            assert to_gt.mean() < 30, (cid, t)
            assert to_gt[~keep[t]].mean() < 0.5 * to_src[~keep[t]].mean(), (cid, t)
        assert len(edits) <= 2


def test_deterministic(demo, tmp_path):
    again = make_demo_dataset(tmp_path / "again", num_clips=3, num_frames=9, seed=0)
    assert again.read_text() == demo.read_text()
    for cid in load_samples(demo).index:
        a, b = demo.parent / cid, again.parent / cid
        assert (a / "edited_first_frame.png").read_bytes() == (b / "edited_first_frame.png").read_bytes()
        np.testing.assert_array_equal(read_mask(a / "mask"), read_mask(b / "mask"))
        gt_a, gt_b = read_video(a / "gt.mp4")[0], read_video(b / "gt.mp4")[0]
        np.testing.assert_array_equal(gt_a, gt_b)
    other = make_demo_dataset(tmp_path / "other", num_clips=1, num_frames=9, seed=1)
    cid = load_samples(other).index[0]
    assert (other.parent / cid / "edited_first_frame.png").read_bytes() != (
        demo.parent / cid / "edited_first_frame.png"
    ).read_bytes()


def test_cli(tmp_path):
    res = subprocess.run(
        [
            str(Path(sys.executable).parent / "loraedit"),
            "toy",
            "demo-data",
            str(tmp_path / "d"),
            "--num-clips",
            "1",
            "--num-frames",
            "5",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == str(tmp_path / "d" / "samples.tsv")
    assert len(load_samples(tmp_path / "d" / "samples.tsv")) == 1
