"""Report assets (bar charts, side-by-side video, summary page) and that the report renders in Chromium.

Chromium comes from .ci/setup.d/20-chromium.sh. The render tests skip only when
it is absent and this is not root (so it cannot have been installed).
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data

from loraedit.atomic import write_json
from loraedit.metrics import record
from loraedit.report_assets import bar_charts, comparison_panels, side_by_side, summary_html
from loraedit.stages import read_truth
from loraedit.tables import aggregate
from loraedit.video_io import read_video, write_frames

REPO = Path(__file__).resolve().parents[1]
BAR_BLUE = (31, 119, 180)  # matplotlib's default bar colour, RGB


def chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe:
        return exe
    if os.geteuid() != 0:
        pytest.skip(
            "chromium is not installed and this user cannot install it (run .ci/setup.d/20-chromium.sh as root)"
        )
    pytest.fail("chromium missing although running as root: .ci/setup.d/20-chromium.sh did not install it")


def screenshot(url: str, tmp_path: Path, wait_ms: int = 0) -> np.ndarray:
    """RGB screenshot of ``url`` from headless Chromium at 1200x900."""
    png = tmp_path / "shot.png"
    cmd = [
        chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={tmp_path / 'chromium-profile'}", f"--screenshot={png}", "--window-size=1200,900",
    ]  # fmt: skip
    if wait_ms:
        cmd.append(f"--virtual-time-budget={wait_ms}")  # let the report's JavaScript render
    proc = subprocess.run([*cmd, url], capture_output=True, text=True, timeout=120, check=False)
    assert png.is_file(), f"chromium wrote no screenshot (exit {proc.returncode}): {proc.stderr[-800:]}"
    img = cv2.imread(str(png), cv2.IMREAD_COLOR)
    assert img is not None and img.shape[:2] == (900, 1200)
    return img[..., ::-1]


def assert_not_blank(img: np.ndarray) -> None:
    ink = (img.astype(int).sum(-1) < 3 * 230).mean()  # share of pixels clearly darker than white
    assert img.std() > 10 and ink > 0.02, f"blank-looking screenshot (std {img.std():.1f}, ink {ink:.3f})"


def write_scores(root: Path) -> list[str]:
    """Scores of 2 clips x 3 methods, as score_clip writes them (one metric n/a)."""
    files = []
    for c, clip in enumerate(("c1", "c2")):
        for m, method in enumerate(("naive", "mask", "anyv2v")):
            s = {
                "clip_id": clip,
                "method": method,
                "metrics": {
                    "clip_score": record(0.8 + 0.05 * m + 0.01 * c, True, "cos", "v", "tiny", "", "table1"),
                    "deqa": record(None, True, "DeQA", "-", "", "n/a (no weights)", "table1"),
                    "bg_psnr": record(25 + 3 * m - c, True, "psnr", "v", "", "", "background"),
                    "warp_error": record(0.02 - 0.005 * m, False, "Lai", "v", "", "", "temporal"),
                },
            }
            write_json(root / clip / method / "scores.json", s)
            files.append(str(root / clip / method / "scores.json"))
    return files


@pytest.fixture
def tables(tmp_path):
    aggregate(write_scores(tmp_path / "results"), tmp_path / "tables")
    return tmp_path / "tables"


def test_bar_charts_one_per_metric_with_values(tables, tmp_path):
    paths = bar_charts(tables / "metrics.csv", tmp_path / "charts")
    assert [Path(p).name for p in paths] == ["clip_score.png", "bg_psnr.png", "warp_error.png"]  # deqa is all n/a
    img = cv2.imread(paths[0])[..., ::-1]
    blue = (np.abs(img.astype(int) - BAR_BLUE).sum(-1) < 30).sum()
    assert blue > 500  # three bars drawn


def test_side_by_side_video(tmp_path):
    photo = skimage.data.coffee()[::8, ::8]  # (50, 75, 3), smooth enough for H.264 at this size
    inp = np.stack([photo[t : t + 32, t : t + 48] for t in range(5)])
    edited = np.zeros((32, 48, 3), np.uint8)
    half = inp[:3, ::2, ::2]  # smaller and shorter: scaled up, last frame held
    out = tmp_path / "sbs.mp4"
    side_by_side([("input", inp), ("edited", edited), ("mask", half)], out, fps=8)
    v, fps = read_video(out)
    strip = 20
    assert v.shape == (5, 32 + strip, 3 * 48, 3) and fps == 8
    assert np.abs(v[:, strip:, :48].astype(int) - inp).mean() < 8  # the input panel survives H.264
    assert v[:, strip + 2 : -2, 50:94].max() < 40  # the black edited panel
    assert v[0, :strip, :48].max() > 150  # title text drawn on the dark strip
    held = np.abs(v[3, strip:, 96:].astype(int) - v[4, strip:, 96:]).mean()  # last frame held (up to coding noise)
    moving = np.abs(v[1, strip:, 96:].astype(int) - v[2, strip:, 96:]).mean()
    assert held < 1 and moving > 5 * held


def test_comparison_panels_show_the_truth_when_the_sheet_has_one(tmp_path):
    frames = np.full((3, 8, 8, 3), 100, np.uint8)
    keep = np.ones((3, 8, 8), np.uint8)
    keep[:, :, :4] = 0  # the left half is edited
    out = np.zeros_like(frames)
    prepared = tmp_path / "prepared"
    assert read_truth(prepared, "c1") is None  # no gt_video in the sheet: no truth panel
    plain = comparison_panels(frames, frames[0], keep, [("mask", out)], read_truth(prepared, "c1"))
    assert [t for t, _ in plain] == ["input", "edited frame 1", "mask", "edit region"]
    write_frames(prepared / "gt", frames + 50)
    panels = dict(comparison_panels(frames, frames[0], keep, [("mask", out)], read_truth(prepared, "c1")))
    assert list(panels) == ["input", "edited frame 1", "truth", "mask", "edit region"]
    assert (panels["truth"] == 150).all()
    region = panels["edit region"].astype(int)
    assert (region[:, :, :4, 0] > region[:, :, :4, 1]).all() and (region[:, :, 4:] == 100).all()


def test_summary_page_renders_in_chromium(tables, tmp_path):
    charts = bar_charts(tables / "metrics.csv", tmp_path / "charts")
    page = tmp_path / "summary.html"
    summary_html(tables / "metrics.html", charts, page)
    img = screenshot(page.as_uri(), tmp_path)
    assert_not_blank(img)
    blue = (np.abs(img.astype(int) - BAR_BLUE).sum(-1) < 30).sum()
    assert blue > 1000, "the bar charts did not render"


MINI_SNAKEFILE = """
import glob
import numpy as np
from matplotlib.figure import Figure
from loraedit.report_assets import bar_charts, side_by_side
from loraedit.tables import aggregate

configfile: "config.yaml"
report: "report/workflow.rst"

rule all:
    input:
        "results/tables/metrics.html",
        "results/tables/charts",
        "results/c1/side_by_side.mp4",
        "results/c1/mask/loss.png",

rule aggregate:
    input: sorted(glob.glob("results/*/*/scores.json"))
    output:
        html=report("results/tables/metrics.html", caption="report/metrics_table.rst", category="Metrics"),
        csv="results/tables/metrics.csv",
    run:
        aggregate(input, "results/tables")

rule charts:
    input: "results/tables/metrics.csv"
    output:
        report(
            directory("results/tables/charts"),
            patterns=["{metric}.png"],
            caption="report/bar_chart.rst",
            category="Metrics",
            labels={"metric": "{metric}"},
        ),
    run:
        bar_charts(input[0], output[0])

rule side_by_side:
    output:
        report(
            "results/{clip}/side_by_side.mp4",
            caption="report/side_by_side.rst",
            category="Videos",
            labels={"clip": "{clip}"},
        ),
    run:
        frames = np.full((5, 32, 32, 3), 90, np.uint8)
        side_by_side([("input", frames), ("mask", 255 - frames)], output[0], fps=8)

rule loss:
    output:
        report(
            "results/{clip}/{method}/loss.png",
            caption="report/loss_curve.rst",
            category="Training",
            labels={"clip": "{clip}", "method": "{method}"},
        ),
    run:
        fig = Figure(figsize=(3, 2))
        fig.add_subplot().plot([1.0, 0.6, 0.5, 0.45])
        fig.savefig(output[0])
"""


def test_snakemake_report_renders_with_our_captions(tmp_path):
    """A miniature workflow marks tables, charts, a video and a loss curve with report() and our captions."""
    chromium()  # skip/fail early, before spending time on Snakemake
    shutil.copytree(REPO / "report", tmp_path / "report")
    write_scores(tmp_path / "results")
    (tmp_path / "Snakefile").write_text(MINI_SNAKEFILE)
    (tmp_path / "config.yaml").write_text("score:\n  clip_model: tiny\n")
    snakemake = [sys.executable, "-m", "snakemake", "--cores", "1", "--quiet"]
    for args in (["all"], ["--report", "report.html"]):
        run = subprocess.run(
            [*snakemake, *args], cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False
        )
        assert run.returncode == 0, run.stderr[-2000:]
    html = (tmp_path / "report.html").read_text()
    # Every caption was rendered (Jinja, then RST) into the report.
    assert "best mean per column in <strong>bold</strong>" in html
    assert "tiny <em>random</em> CLIP" in html  # config-dependent note
    assert "Side by side for clip <strong>c1</strong>" in html
    assert "LoRA training loss for clip <strong>c1</strong>, method <strong>mask</strong>" in html
    assert "error bar = standard" in html
    assert_not_blank(screenshot((tmp_path / "report.html").as_uri(), tmp_path, wait_ms=5000))
