import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from loraedit.prepare import prepare_clip
from loraedit.sheet.importers import import_anyv2v, import_i2vedit, safe_clip_id, slugify
from loraedit.sheet.samples import SAFE_ID, load_samples, sample_row
from loraedit.video_io import write_mp4, write_png

LORAEDIT = str(Path(sys.executable).parent / "loraedit")  # the console script

ANYV2V = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "anyv2v"  # ../shared beside the checkout


def tiny_video(path, t=5):
    write_mp4(path, np.full((t, 32, 32, 3), 90, np.uint8), fps=8)


def test_safe_clip_id():
    assert slugify("Turn his hair WHITE!") == "turn-his-hair-white"
    assert slugify("Café  crème") == "cafe-creme"
    assert safe_clip_id("A Couple In Public", "Sketch style") == "a-couple-in-public_sketch-style"
    assert safe_clip_id("x" * 100, "y").startswith("x" * 40 + "_")
    taken: set[str] = set()
    first = safe_clip_id("A b", "c", taken)
    second = safe_clip_id("a-B", "c!", taken)  # slugifies to the same id: gets a hash
    assert first == "a-b_c" and second.startswith("a-b_c-") and len(second) == len(first) + 7
    assert second == safe_clip_id("a-B", "c!", {first})  # stable
    assert SAFE_ID.match(safe_clip_id("日本", "編集"))  # nothing ASCII left: hashed id


def test_anyv2v_real_data(tmp_path):
    if not (ANYV2V / "demo").is_dir():
        pytest.skip(f"{ANYV2V}/demo absent (AnyV2V demo data not on this machine)")
    sheet = import_anyv2v(ANYV2V, tmp_path / "anyv2v.tsv")
    df = load_samples(sheet)
    assert len(df) == 6 and df.index.is_unique and all(SAFE_ID.match(c) for c in df.index)
    assert set(df["edit_instruction"]) == {
        "Sketch style",
        "Snowing",
        "A dog turning its head on a wooden floor",
        "add a party hat on his head",
        "helmet",
        "turn his hair white",
    }
    # Instructions and clip names are never prompts: both stay empty so captions are made.
    assert df["prompt"].isna().all() and df["source_prompt"].isna().all()
    kitten = df[df["video"].str.endswith("A kitten turning its head on a wooden floor.mp4")]
    assert len(kitten) == 1 and kitten["edit_instruction"].iloc[0] == "A dog turning its head on a wooden floor"

    # the imported row prepares: 16 source frames at 8 fps -> 13 frames
    cfg = {"num_frames": 13, "square": [64, 64]}
    meta = prepare_clip(sample_row(df, kitten.index[0]), cfg, tmp_path / "prepared")
    assert meta["src_num_frames"] == 16 and meta["src_size"] == [512, 512]
    assert (meta["width"], meta["height"], meta["orientation"]) == (64, 64, "square")
    assert meta["fps"] == pytest.approx(13 / 2.0)


def test_anyv2v_synthetic_layout_and_cli(tmp_path):
    demo = tmp_path / "bench" / "demo"
    (demo / "My Clip" / "edited_first_frame").mkdir(parents=True)
    tiny_video(demo / "My Clip.mp4")
    for name in ["Make it red", "make it RED"]:  # collide after slugify
        write_png(demo / "My Clip" / "edited_first_frame" / f"{name}.png", np.zeros((32, 32, 3), np.uint8))
    (demo / "orphan" / "edited_first_frame").mkdir(parents=True)  # no video: skipped
    out = tmp_path / "s.tsv"
    res = subprocess.run(
        [LORAEDIT, "import", "anyv2v", str(tmp_path / "bench"), str(out)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert res.returncode == 0, res.stderr
    assert "2 samples" in res.stdout
    df = load_samples(out)
    assert list(df["edit_instruction"]) == ["Make it red", "make it RED"]
    assert df["prompt"].isna().all() and df["source_prompt"].isna().all()
    assert df.index[0] == "my-clip_make-it-red" and df.index[1].startswith("my-clip_make-it-red-")

    res = subprocess.run(
        [LORAEDIT, "import", "anyv2v", str(tmp_path / "nowhere"), str(out)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert res.returncode == 2 and "nowhere" in res.stderr


def test_i2vedit_synthetic_tree(tmp_path):
    root = tmp_path / "i2vedit"
    for item, edits in [("item10", ["b.png"]), ("item2", ["edit1.png", "edit2.png"]), ("item3", [])]:
        d = root / item / "source_and_edits"
        d.mkdir(parents=True)
        tiny_video(d / "source.mp4")
        for e in edits:
            write_png(d / e, np.zeros((32, 32, 3), np.uint8))
    (root / "item4" / "source_and_edits").mkdir(parents=True)  # no source.mp4: skipped
    write_png(root / "item4" / "source_and_edits" / "x.png", np.zeros((4, 4, 3), np.uint8))

    sheet = import_i2vedit(root, tmp_path / "i2v.tsv")
    raw = pd.read_csv(sheet, sep="\t", dtype=str, keep_default_na=False)
    assert list(raw["clip_id"]) == ["item2_edit1", "item2_edit2", "item10_b"]  # natural order
    df = load_samples(sheet)
    assert df.loc["item10_b", "video"] == str(root / "item10" / "source_and_edits" / "source.mp4")
    assert df.loc["item2_edit2", "edited_first_frame"].endswith("item2/source_and_edits/edit2.png")
    assert df.loc["item2_edit2", "edit_instruction"] == "edit2"
    assert df["prompt"].isna().all() and df["source_prompt"].isna().all()
    with pytest.raises(FileNotFoundError):
        import_i2vedit(root / "item3", tmp_path / "none.tsv")


def test_mask_prompts_fill_and_heuristic_only_clips_are_printed(tmp_path, capsys):
    from loraedit.sheet.importers import main

    root = tmp_path / "i2vedit"
    for item, edits in [("item1", ["a.png", "b.png"]), ("item2", ["c.png"]), ("item3", ["d.png"])]:
        d = root / item / "source_and_edits"
        d.mkdir(parents=True)
        tiny_video(d / "source.mp4")
        for e in edits:
            write_png(d / e, np.zeros((32, 32, 3), np.uint8))
    phrases = tmp_path / "phrases.tsv"
    phrases.write_text("# key\tphrase\nitem1\tthe dog\nitem1_b\tthe dog's hat\n\nitem3_d\ta red car\n")
    out = tmp_path / "s.tsv"
    assert main(["i2vedit", str(root), str(out), "--mask-prompts", str(phrases)]) == 0
    df = load_samples(out)
    assert df["mask_prompt"].to_dict() == {
        "item1_a": "the dog",
        "item1_b": "the dog's hat",
        "item2_c": None,
        "item3_d": "a red car",
    }  # a clip id wins over its video's name
    assert "1 clip(s) have no mask source beyond the optical-flow heuristic" in capsys.readouterr().out
    assert main(["i2vedit", str(root), str(out)]) == 0  # without phrases every clip is flow-only
    assert "4 clip(s)" in capsys.readouterr().out

    phrases.write_text("item9\tthe cat\n")  # a typo must not pass silently
    assert main(["i2vedit", str(root), str(out), "--mask-prompts", str(phrases)]) == 2
    assert "no clip id or source video named 'item9'" in capsys.readouterr().err
