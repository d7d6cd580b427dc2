"""DeQA-Score runs out of process: configured command -> parsed scores; unconfigured -> n/a."""

import sys
import textwrap

import numpy as np
import pytest

from loraedit.errors import ClipError
from loraedit.metrics.deqa import RUNNER, _command, deqa_metric, parse_scores


@pytest.fixture
def frames():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (5, 16, 24, 3), dtype=np.uint8)


def test_unconfigured_is_na(frames):
    rec = deqa_metric(frames, {"python": None, "command": None})
    assert rec["value"] is None and rec["note"] == "n/a (no weights)"
    assert rec["model"] == "zhiyuanyou/DeQA-Score-Mix3"


@pytest.mark.parametrize(
    "stdout, scores",
    [
        ('loading...\n{"scores": [3.5, 4.0]}\n', [3.5, 4.0]),
        ('{"score": 2.25}', [2.25]),
        ("[1, 2, 3]\n", [1.0, 2.0, 3.0]),
        ("some log line\n4.5\n", [4.5]),
    ],
)
def test_parse_scores(stdout, scores):
    assert parse_scores(stdout) == scores


def test_parse_scores_rejects_output_without_a_score():
    with pytest.raises(ValueError, match="no score"):
        parse_scores('model loaded\n{"status": "ok"}\n')


def test_configured_command_gets_the_frames_and_its_scores_are_averaged(frames, tmp_path):
    # A stand-in scorer in another process: per-frame score = mean pixel value / 51 (0..5),
    # read back from the PNGs it was given, so the frames really crossed over.
    script = tmp_path / "scorer.py"
    script.write_text(
        textwrap.dedent("""
        import json, os, sys
        import numpy as np
        from PIL import Image
        folder, model = sys.argv[1], sys.argv[2]
        files = sorted(os.listdir(folder))
        print("loading", model)
        means = [float(np.asarray(Image.open(os.path.join(folder, f))).mean()) for f in files]
        print(json.dumps({"scores": [m / 51 for m in means]}))
    """)
    )
    cmd = f"{sys.executable} {script} {{frames}} {{model}}"
    rec = deqa_metric(frames, {"command": cmd, "model": "my/deqa"}, clip_id="c")
    expected = np.mean([f.mean() / 51 for f in frames])
    assert rec["value"] == pytest.approx(expected, rel=1e-6)
    assert rec["model"] == "my/deqa" and "5 frame score(s)" in rec["impl"]


def test_failing_command_raises_a_clip_error(frames):
    cmd = f"{sys.executable} -c \"import sys; sys.exit('no GPU found')\""
    with pytest.raises(ClipError, match=r"^c: .*DeQA command failed \(exit 1\): no GPU found"):
        deqa_metric(frames, {"command": cmd}, clip_id="c")


def test_python_setting_runs_the_bundled_runner(tmp_path):
    cmd = _command(
        {"python": "/opt/deqa env/bin/python", "command": None, "model": "zhiyuanyou/DeQA-Score-Mix3"}, tmp_path
    )
    assert cmd.startswith("'/opt/deqa env/bin/python' ") and str(RUNNER) in cmd and cmd.endswith(str(tmp_path))
    assert RUNNER.is_file()
