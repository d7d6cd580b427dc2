import pandas as pd
import pytest

from loraedit.errors import SheetError
from loraedit.sheet.samples import DEFAULT_SCHEMA, load_samples, parse_extra_edits, sample_row

HEADER = ["clip_id", "video", "edited_first_frame", "mask", "prompt", "extra_edits"]


@pytest.fixture
def files(tmp_path):
    for name in ["v.mp4", "e.png", "m.png", "x.png"]:
        (tmp_path / "data" / name).parent.mkdir(exist_ok=True)
        (tmp_path / "data" / name).write_bytes(b"x")
    return tmp_path


def write_sheet(path, rows, sep="\t", header=HEADER):
    path.write_text("\n".join(sep.join(r) for r in [header, *rows]) + "\n")
    return path


def test_valid_sheet(files):
    sheet = write_sheet(
        files / "samples.tsv",
        [
            ["a1", "data/v.mp4", "data/e.png", "", "p3rs0n, a cat", "12:data/x.png;24:data/x.png"],
            ["", "", "", "", "", ""],  # blank row: skipped, numbering kept
            ["007", str(files / "data" / "v.mp4"), "data/e.png", "data/m.png", "", ""],
        ],
    )
    df = load_samples(sheet)
    assert list(df.index) == ["a1", "007"]  # ids stay strings ("007", not 7)
    assert df.loc["a1", "line"] == 2 and df.loc["007", "line"] == 4
    assert df.loc["a1", "video"] == str(files / "data" / "v.mp4")  # resolved against the sheet folder
    assert df.loc["a1", "mask"] is None and df.loc["007", "mask"] == str(files / "data" / "m.png")
    assert df.loc["a1", "extra_edits"] == {12: str(files / "data" / "x.png"), 24: str(files / "data" / "x.png")}
    assert df.loc["007", "extra_edits"] == {} and df.loc["007", "prompt"] is None
    assert df.loc["a1", "gt_video"] is None and df.loc["a1", "source_prompt"] is None  # absent columns exist
    row = sample_row(df, "a1")
    assert row["clip_id"] == "a1" and row["prompt"] == "p3rs0n, a cat"


def test_csv_sheet(files):
    sheet = write_sheet(files / "s.csv", [["b", "data/v.mp4", "data/e.png", "", "", ""]], sep=",")
    assert list(load_samples(sheet).index) == ["b"]


def test_all_problems_in_one_error(files):
    sheet = write_sheet(
        files / "samples.tsv",
        [
            ["a1", "data/v.mp4", "data/e.png", "", "", ""],
            ["bad id", "data/v.mp4", "data/e.png", "", "", ""],
            ["a1", "data/v.mp4", "data/missing.png", "", "", ""],
            ["c", "data/v.mp4", "data/e.png", "data/nomask.png", "", "x:data/x.png"],
            ["d", "", "data/e.png", "", "", "3:data/gone.png"],
            ["../up", "data/v.mp4", "data/e.png", "", "", ""],
        ],
    )
    with pytest.raises(SheetError) as e:
        load_samples(sheet)
    problems = e.value.problems
    assert "line 3 (clip bad id): clip_id: id 'bad id' is not safe as a folder name" in problems[0]
    assert "line 4 (clip a1): clip_id: duplicate id, first used on line 2" in problems
    assert f"line 4 (clip a1): {files / 'data' / 'missing.png'}: file not found (column edited_first_frame)" in problems
    assert f"line 5 (clip c): {files / 'data' / 'nomask.png'}: file not found (column mask)" in problems
    assert any(p.startswith("line 5 (clip c): extra_edits: ") and "'x'" in p for p in problems)
    assert "line 6 (clip d): video: required value video is empty" in problems
    assert f"line 6 (clip d): {files / 'data' / 'gone.png'}: file not found (extra_edits frame 3)" in problems
    assert any(p.startswith("line 7 (clip ../up): clip_id: id '../up' is not safe") for p in problems)
    assert len(problems) == 8
    assert str(e.value).splitlines()[0] == f"{sheet}: 8 problem(s)"


def test_missing_column_and_empty_sheet(files):
    sheet = write_sheet(files / "s.tsv", [["a", "data/v.mp4"]], header=["clip_id", "video"])
    with pytest.raises(SheetError, match="missing column\\(s\\) edited_first_frame"):
        load_samples(sheet)
    with pytest.raises(SheetError, match="no samples"):
        load_samples(write_sheet(files / "e.tsv", []))
    with pytest.raises(SheetError, match="not found"):
        load_samples(files / "absent.tsv")


def test_parse_extra_edits():
    assert parse_extra_edits("12:a.png;24: b c.png;") == {12: "a.png", 24: "b c.png"}
    assert parse_extra_edits("3:C:\\x.png") == {3: "C:\\x.png"}  # only the first colon splits
    for bad in ["12", "a:b.png", "-1:a.png", "3:a.png;3:b.png", "4:"]:
        with pytest.raises(ValueError):
            parse_extra_edits(bad)


def test_schema_works_with_snakemake_validate(files):
    from snakemake.exceptions import WorkflowError
    from snakemake.utils import validate

    good = pd.DataFrame([{"clip_id": "a", "video": "v.mp4", "edited_first_frame": "e.png", "extra_edits": "3:x.png"}])
    validate(good, str(DEFAULT_SCHEMA))
    bad = good.assign(clip_id="a b")
    with pytest.raises(WorkflowError):
        validate(bad, str(DEFAULT_SCHEMA))


def test_sam_mask_columns(files):
    header = ["clip_id", "video", "edited_first_frame", "mask_points", "mask_box", "mask_prompt", "mask_frame"]
    rows = [
        ["a", "data/v.mp4", "data/e.png", "1:+120,80;-200,40|2:+300,200", "", "", "3"],
        ["b", "data/v.mp4", "data/e.png", "", "", "the man's shirt", ""],
        ["c", "data/v.mp4", "data/e.png", "+1;2", "", "", ""],
        ["d", "data/v.mp4", "data/e.png", "", "1,1,9,9", "a cat", "0"],
    ]
    with pytest.raises(SheetError) as e:
        load_samples(write_sheet(files / "s.tsv", rows, header=header))
    assert e.value.problems == [
        "line 4 (clip c): mask_points: '+1' is not +x,y or -x,y (e.g. +120,80)",
        "line 5 (clip d): mask_frame: '0' is not a frame number (1 = the first frame)",
        "line 5 (clip d): mask_prompt: a phrase (SAM3) and mask_points/mask_box (SAM2) are exclusive; give one",
    ]
    df = load_samples(write_sheet(files / "s.tsv", rows[:2], header=header))
    assert df.loc["a", "mask_points"] == "1:+120,80;-200,40|2:+300,200" and df.loc["a", "mask_frame"] == "3"
    assert df.loc["b", "mask_prompt"] == "the man's shirt" and df.loc["b", "mask_box"] is None
