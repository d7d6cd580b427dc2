"""aggregate(): CSV / Markdown / LaTeX tables from scores.json files; write_manifest()."""

import hashlib
import json
import math

import pandas as pd
import pytest

from loraedit.atomic import write_json
from loraedit.manifest import read_benchmarks, rule_of, sha256, write_manifest
from loraedit.metrics import record
from loraedit.tables import aggregate, fmt

# clip -> method -> (clip_score up, warp_error down, deqa n/a)
VALUES = {
    "c1": {"mask": (0.90, 0.010), "naive": (0.80, 0.020), "anyv2v": (0.70, 0.005)},
    "c2": {"mask": (0.94, 0.012), "naive": (0.84, 0.030), "anyv2v": (0.72, 0.007)},
}


def scores(clip, method, cs, we):
    return {
        "clip_id": clip,
        "method": method,
        "metrics": {
            "clip_score": record(cs, True, "cos", "v", "tiny", "", "table1"),
            "deqa": record(None, True, "DeQA", "-", "zhiyuanyou/DeQA-Score-Mix3", "n/a (no weights)", "table1"),
            "warp_error": record(we, False, "Lai", "v", "", "", "temporal"),
        },
    }


@pytest.fixture
def score_files(tmp_path):
    files = []
    for clip, per in VALUES.items():
        for method, (cs, we) in per.items():
            f = tmp_path / "results" / clip / method / "scores.json"
            write_json(f, scores(clip, method, cs, we))
            files.append(str(f))
    return files


def test_csv_rows_means_and_std(score_files, tmp_path):
    out = tmp_path / "tables"
    aggregate(score_files, out)
    df = pd.read_csv(out / "metrics.csv")
    assert list(df.columns) == ["clip_id", "method", "clip_score", "deqa", "warp_error"]
    assert len(df) == 3 * (2 + 2)  # per method: 2 clips + mean + std
    # Our variants first (known order), external baselines after.
    assert list(dict.fromkeys(df["method"])) == ["naive", "mask", "anyv2v"]
    mask = df[df.method == "mask"].set_index("clip_id")
    assert mask.at["mean", "clip_score"] == pytest.approx(0.92)
    assert mask.at["std", "clip_score"] == pytest.approx(0.02)  # population std over clips
    assert mask.at["c2", "warp_error"] == pytest.approx(0.012)
    assert df["deqa"].isna().all()  # written as "n/a"
    assert "n/a" in (out / "metrics.csv").read_text()

    tidy = pd.read_csv(out / "per_clip.csv")
    assert len(tidy) == 6 * 3 and set(tidy.columns) >= {"metric", "value", "higher_is_better", "impl", "note"}
    assert (tidy.loc[tidy.metric == "deqa", "note"] == "n/a (no weights)").all()


def test_markdown_and_latex_bold_the_best_by_direction(score_files, tmp_path):
    out = tmp_path / "tables"
    aggregate(score_files, out, method_order=["mask", "naive"])
    md = (out / "metrics.md").read_text()
    assert "CLIP Score ↑" in md and "Warp error ↓" in md
    rows = {}  # method -> its rows of every family table, joined
    for ln in md.splitlines():
        if ln.startswith("| "):
            rows[ln.split("|")[1].strip()] = rows.get(ln.split("|")[1].strip(), "") + ln
    assert "**0.9200**" in rows["mask"]  # highest CLIP score
    assert f"**{fmt(0.006)}**" in rows["anyv2v"]  # lowest warping error
    assert "**" not in rows["naive"]
    assert md.count("n/a") >= 3 and "n/a (no weights): deqa" in md
    assert md.index("| mask") < md.index("| naive") < md.index("| anyv2v")

    tex = (out / "metrics.tex").read_text()
    for token in (r"\toprule", r"\midrule", r"\bottomrule", r"$\uparrow$", r"$\downarrow$", r"\textbf{0.9200}"):
        assert token in tex
    assert r"CLIP Score $\uparrow$ & DeQA-Score $\uparrow$" in tex
    assert "mask & \\textbf{0.9200} & n/a" in tex
    html = (out / "metrics.html").read_text()
    assert "<b>0.9200</b>" in html and "<table" in html


def test_ties_and_single_methods(tmp_path):
    files = []
    for method in ("a", "b"):
        f = tmp_path / f"{method}.json"
        write_json(f, scores("c1", method, 0.5, 0.01 if method == "a" else math.nan))
        files.append(str(f))
    aggregate(files, tmp_path / "t")
    md = (tmp_path / "t" / "metrics.md").read_text()
    assert md.count("**0.5000**") == 2  # a tie: both bold
    assert "**1.00e-02**" not in md  # only one method has a warping error: nothing to win


def test_edit_instructions_are_shown_not_scored(score_files, tmp_path):
    out = tmp_path / "tables"
    aggregate(score_files, out, edit_instructions={"c1": "turn <him> into batman", "c2": None, "gone": "x"})
    tidy = pd.read_csv(out / "per_clip.csv", keep_default_na=False)
    assert set(tidy.loc[tidy.clip_id == "c1", "edit_instruction"]) == {"turn <him> into batman"}
    assert set(tidy.loc[tidy.clip_id == "c2", "edit_instruction"]) == {""}
    md = (out / "metrics.md").read_text()
    assert "## Clips" in md and "| c1     | turn <him> into batman" in md and "gone" not in md
    assert "turn &lt;him&gt; into batman" in (out / "metrics.html").read_text()  # escaped
    assert list(pd.read_csv(out / "metrics.csv").columns) == ["clip_id", "method", "clip_score", "deqa", "warp_error"]
    # Without any instruction nothing changes.
    aggregate(score_files, tmp_path / "plain", edit_instructions={"c1": " "})
    assert "Clips" not in (tmp_path / "plain" / "metrics.md").read_text()
    assert "edit_instruction" not in pd.read_csv(tmp_path / "plain" / "per_clip.csv").columns


def test_duplicate_scores_are_refused(score_files, tmp_path):
    with pytest.raises(ValueError, match="scored twice"):
        aggregate(score_files + score_files[:1], tmp_path / "t")


def test_fmt():
    assert fmt(math.nan) == "n/a" and fmt(None) == "n/a"
    assert fmt(0.91234) == "0.9123" and fmt(31.456) == "31.46" and fmt(100.0) == "100.0" and fmt(0.0012) == "1.20e-03"


def test_manifest(tmp_path):
    inp = tmp_path / "clip.mp4"
    inp.write_bytes(b"not really a video")
    frames = tmp_path / "frames"
    frames.mkdir()
    (frames / "00000.png").write_bytes(b"x")
    bench = tmp_path / "benchmarks"
    header = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
    (bench / "train_lora").mkdir(parents=True)
    (bench / "train_lora" / "c1_mask.tsv").write_text(header + "12.5\t0:00:12\t900.1\t1\t1\t1\t0\t0\t90\t11\n")
    (bench / "train_lora" / "c2_mask.tsv").write_text(header + "7.5\t0:00:07\t1200.0\t1\t1\t1\t0\t0\t90\t7\n")
    (bench / "score").mkdir()
    (bench / "score" / "c1.tsv").write_text(header + "3.0\t0:00:03\t-\t-\t-\t-\t-\t-\t-\t-\n")
    tsvs = sorted(str(p) for p in bench.rglob("*.tsv"))

    out = tmp_path / "manifest.json"
    write_manifest(out, {"num_frames": 17}, {"wan": "tiny"}, [str(inp), str(frames)], tsvs, seed=42)
    m = json.loads(out.read_text())
    assert m["seed"] == 42 and m["config"] == {"num_frames": 17} and m["model_ids"] == {"wan": "tiny"}
    assert m["inputs"][0]["sha256"] == hashlib.sha256(b"not really a video").hexdigest()
    assert m["inputs"][1]["sha256"] == sha256(frames) and m["inputs"][1]["bytes"] is None
    assert {"torch", "diffusers", "transformers", "peft", "snakemake", "pyiqa"} <= set(m["packages"])
    assert m["rules"]["train_lora"] == {"jobs": 2, "wall_s_total": 20.0, "wall_s_max": 12.5, "max_rss_mb": 1200.0}
    assert m["rules"]["score"]["max_rss_mb"] is None and m["rules"]["score"]["wall_s_total"] == 3.0
    assert m["python"].count(".") == 2 and m["platform"]
    assert "git" in m  # None before the first commit, else {"commit", "dirty"}
    assert rule_of("x/benchmarks/infer/c1/mask.tsv") == "infer" and rule_of("other/prepare_c1.tsv") == "prepare_c1"
    jobs, _ = read_benchmarks(tsvs)
    assert len(jobs) == 3
