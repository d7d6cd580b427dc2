"""The toy benchmark: its sheet generator, its truth-based scores, and that it catches a broken method."""

import json
from pathlib import Path

import numpy as np
import pytest

from loraedit.sheet.samples import load_samples
from loraedit.toy import benchmark as toy_benchmark
from loraedit.toy import data as toy_data
from loraedit.video_io import read_frames, read_mask

REPO = Path(__file__).resolve().parents[1]
TOY_MODEL = REPO / "models" / "toy-wan2.1-i2v"  # the committed checkpoint

BROKEN_CLIP = 1  # toy100-01
# Measured on it (2 threads): background PSNR 30.73 dB healthy, 23.61 inverted, 23.82 frozen (the
# pretrained model alone regenerates the background: it never learned the spatial mask).
INVERTED_MARGIN_DB = 3.0
FROZEN_METRIC, FROZEN_MARGIN_DB = "bg_psnr", 5.0


def _value(scores, name):
    return scores[name]["value"]


def test_sheet_carries_the_exact_truth(tmp_path):
    sheet = toy_data.make_toy_dataset(tmp_path / "toy", num_clips=4, seed=100, num_frames=9)
    df = load_samples(sheet)  # validates every path
    assert list(df.index) == ["toy100-00", "toy100-01", "toy100-02", "toy100-03"]
    for clip_id, row in df.iterrows():
        truth = toy_data.truth_for(json.loads((sheet.parent / clip_id / "toy.json").read_text()))
        # an extra edited frame exactly where the edited card shows its back: the even clips' cards,
        # toy100-01's card (an odd clip), not toy100-03's one-sided object
        assert bool(row["extra_edits"]) == bool(truth.back.any()) == (clip_id != "toy100-03"), clip_id
        assert np.array_equal(read_frames(row["video"]), truth.video)  # PNG folders: lossless
        assert np.array_equal(read_frames(row["gt_video"]), truth.edited)
        assert np.array_equal(read_mask(row["mask"]).astype(bool), truth.keep.astype(bool))
        assert row["prompt"].startswith("p3rs0n, ") and row["source_prompt"] == truth.caption


def test_the_demo_sheet_has_one_clip_of_each_case(tmp_path):
    """odd_clips="object" (the demo): even clips edit a card that shows its back, odd clips a
    one-sided object; toy.json names the kind, so the truth re-renders from it."""
    sheet = toy_data.make_toy_dataset(tmp_path / "toy", num_clips=3, seed=0, num_frames=9, odd_clips="object")
    df = load_samples(sheet)
    kinds = [json.loads((sheet.parent / clip_id / "toy.json").read_text())["kind"] for clip_id in df.index]
    assert kinds == ["card", "object", "card"]
    for clip_id, row in df.iterrows():
        truth = toy_data.truth_for(json.loads((sheet.parent / clip_id / "toy.json").read_text()))
        assert np.array_equal(read_frames(row["video"]), truth.video)
        assert bool(row["extra_edits"]) == bool(truth.back.any()) == (clip_id != "toy0-01"), clip_id
    with pytest.raises(ValueError, match="odd_clips 'cards': expected one of any, object"):
        toy_data.make_toy_dataset(tmp_path / "bad", num_clips=1, odd_clips="cards")


def test_scores_tell_the_truth_from_the_unedited_clip():
    truth = toy_data.truth_for({"seed": 100, "index": 0, "num_frames": 17, "size": 64})  # a two-sided card
    perfect = toy_benchmark.toy_scores(truth.edited, truth)
    assert _value(perfect, "edit_color_err") == 0 and _value(perfect, "back_color_err") == 0
    assert _value(perfect, "gt_psnr") is None and "non-finite" in perfect["gt_psnr"]["note"]  # identical: inf
    unedited = toy_benchmark.toy_scores(truth.video, truth)
    assert _value(unedited, "bg_psnr") is None  # the background is untouched ...
    assert _value(unedited, "edit_color_err") > 20 and _value(unedited, "back_color_err") > 20  # ... the edit missing
    assert _value(unedited, "edit_psnr") < 25
    grey = toy_benchmark.toy_scores(np.full_like(truth.video, 128), truth)
    assert _value(grey, "bg_psnr") < 20


@pytest.fixture(scope="module")
def broken_runs(tmp_path_factory):
    """Method `mask` on one clip (30 LoRA steps, 20 sampling steps) healthy, with the keep-mask
    inverted (training and inference), and with a LoRA that never trains (attached, 0 steps): scores each."""
    import torch

    from loraedit.toy import eval as toy_eval

    torch.set_num_threads(2)
    truth = toy_data.truth_for({"seed": 100, "index": BROKEN_CLIP, "num_frames": 17, "size": 64})
    runs = {"healthy": {}, "inverted": {"keep": 1 - truth.keep}, "frozen": {"steps": 0}}
    scores = {}
    for name, broken in runs.items():
        models = toy_eval.load_toy(str(TOY_MODEL))  # fresh: the run attaches its LoRA
        out = toy_benchmark.edit_in_memory(models, truth, tmp_path_factory.mktemp(name), **broken)
        scores[name] = {
            k: _value(toy_benchmark.toy_scores(out, truth), k) for k in ("bg_psnr", "gt_psnr", "edit_color_err")
        }
    return scores


def test_an_inverted_keep_mask_is_caught(broken_runs):
    """With the keep-mask inverted the background is regenerated and the edit region copied from the
    unedited input: the background PSNR falls by more than INVERTED_MARGIN_DB."""
    drop = broken_runs["healthy"]["bg_psnr"] - broken_runs["inverted"]["bg_psnr"]
    assert drop > INVERTED_MARGIN_DB, broken_runs


def test_a_frozen_lora_is_caught(broken_runs):
    """A LoRA that never trains leaves the pretrained model, which never learned the spatial mask:
    the background PSNR falls by more than FROZEN_MARGIN_DB."""
    drop = broken_runs["healthy"][FROZEN_METRIC] - broken_runs["frozen"][FROZEN_METRIC]
    assert drop > FROZEN_MARGIN_DB, broken_runs


def test_reduced_benchmark_reproduces_the_committed_table(tmp_path):
    """CI reruns the benchmark at reduced size (clip toy100-00, a two-sided card with an extra edited
    frame: none / mask / mask+ref, 30 LoRA steps, 10 sampling steps) through the normal workflow and must reproduce tests/data/toy_benchmark_reduced.csv:
    determinism on the same CPU stack, not a hoped-for ranking."""
    import pandas as pd

    got = toy_benchmark.run_reduced(tmp_path, workflow_dir=REPO).set_index(["clip_id", "method"]).sort_index()
    want = pd.read_csv(Path(__file__).parent / "data" / "toy_benchmark_reduced.csv")
    want = want.set_index(["clip_id", "method"]).sort_index()
    assert list(got.index) == list(want.index)
    tolerance = {
        "gt_psnr": 0.05,
        "gt_ssim": 0.002,
        "bg_psnr": 0.05,
        "edit_psnr": 0.05,
        "edit_color_err": 0.5,
        "back_color_err": 0.5,
    }
    for metric, tol in tolerance.items():
        assert got[metric].isna().equals(want[metric].isna()), (metric, got[metric].to_dict())  # n/a where it was
        diff = (got[metric] - want[metric]).abs().dropna()
        assert diff.max() <= tol, (metric, diff.to_dict())


def test_cli_remakes_the_reduced_table_or_scores_a_sheet(tmp_path, monkeypatch, capsys):
    """`--reduced CSV` writes what run_reduced returns (here a stand-in frame: the run itself is the
    test above); without a sheet or --reduced the CLI stops with a usage error."""
    import pandas as pd

    frame = pd.DataFrame({"clip_id": ["toy100-00"], "method": ["mask"], "bg_psnr": [25.25]})
    monkeypatch.setattr(toy_benchmark, "run_reduced", lambda workdir, workflow_dir: frame)
    out = tmp_path / "reduced.csv"
    assert toy_benchmark.main(["--reduced", str(out)]) == 0
    assert pd.read_csv(out).equals(frame)
    with pytest.raises(SystemExit) as stop:
        toy_benchmark.main([])
    assert stop.value.code == 2 and "give the sheet to score" in capsys.readouterr().err
