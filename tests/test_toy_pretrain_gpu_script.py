"""benchmarks/toy_pretrain_gpu.sh, run on the CPU at toy size: STEPS=auto times a calibration run,
then trains the chosen count (capped by MAX_STEPS) on the committed model; bad input is one line."""

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pandas as pd

from loraedit.toy import eval as toy_eval

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "toy_pretrain_gpu.sh"


def _run(tmp_path, **env):
    env = {
        **os.environ,
        "PY": sys.executable,
        "DEVICE": "cpu",
        "OUT": str(tmp_path / "out"),
        "RUN": str(tmp_path / "run"),
        "CLIPS": "2",
        "BATCH": "2",
        **env,
    }
    return subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True)


def test_auto_steps_calibrate_then_train_the_chosen_count(tmp_path):
    done = _run(tmp_path, CALIB_STEPS="3", MAX_STEPS="4", TRAIN_END_S="600")
    assert done.returncode == 0, done.stderr[-2000:]
    log = (tmp_path / "out" / "log.txt").read_text()
    assert "4 steps fit before 600 s" in log  # the cap, below the 100-step floor
    with tarfile.open(tmp_path / "out" / "toy-model.tar") as tar:
        recipe = json.load(tar.extractfile("model/pretrain/recipe.json"))
        steps = pd.read_csv(tar.extractfile("model/pretrain/transformer_loss.csv"))["step"]
    before = int(pd.read_csv(REPO / toy_eval.TOY_MODEL / "pretrain" / "transformer_loss.csv")["step"].max())
    assert recipe["transformer"]["steps"] == 4 and recipe["continued_from"]["steps_before"] == before
    assert list(steps[-4:]) == [before + 1, before + 2, before + 3, before + 4]  # the calibration's steps are not kept
    assert len(steps) == before + 4


def test_an_unknown_start_is_one_line(tmp_path):
    done = _run(tmp_path, FROM="scratch")
    assert done.returncode == 2
    assert done.stderr.strip() == "FROM=scratch: expected continue or fresh"
