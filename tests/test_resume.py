"""After a crash: the Snakemake head and its training job SIGKILLed mid-training. As the README
says: `snakemake --unlock`, then the same command; the killed job is redone and its training
resumes from its last checkpoint, so nothing is lost."""

import os
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = REPO / ".venv" / "bin" / "snakemake"
STEPS = 240

# One small clip, one method; enough steps that the kill lands between two checkpoints.
OVERLAY = {
    "model": {"backend": "tiny", "path": None},  # plumbing: the random tiny model, the shapes world
    "demo": {"world": "shapes", "num_clips": 1, "num_frames": 9, "seed": 0},
    "prepare": {"num_frames": 9, "landscape": [64, 48], "portrait": [48, 64], "square": [48, 48]},
    "methods": ["mask"],
    "train": {"steps": STEPS, "checkpoint_every": 10},
    "infer": {"num_steps": 2},
    "score": {"pyiqa_metrics": ["psnr"], "qalign": False},
}


def test_killed_run_resumes_after_unlock(tmp_path):
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text(yaml.safe_dump(OVERLAY))
    cmd = [
        str(SNAKEMAKE),
        "--cores",
        "1",
        "--snakefile",
        str(REPO / "Snakefile"),
        "--directory",
        str(tmp_path),
        "--configfile",
        str(REPO / "config" / "config.yaml"),
        str(overlay),
    ]

    # 1. Run until training has written a checkpoint, then SIGKILL the head and its jobs.
    with open(tmp_path / "first.out", "w") as out:
        head = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 600
    while not list(tmp_path.glob("results/*/mask/work/expert0/checkpoint.pt")):
        assert head.poll() is None, (tmp_path / "first.out").read_text()[-3000:]
        assert time.time() < deadline, "no training checkpoint within 600 s"
        time.sleep(0.2)
    os.killpg(head.pid, signal.SIGKILL)
    head.wait()
    (clip_dir,) = {p.parents[3] for p in tmp_path.glob("results/*/mask/work/expert0/checkpoint.pt")}
    assert not (clip_dir / "mask" / "lora").exists()  # nothing half-written

    # 2. The same command is refused while the dead head's lock is there, naming the way out.
    locked = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert locked.returncode != 0 and "--unlock" in locked.stdout + locked.stderr

    # 3. Unlock, then the same command: the job is redone and training resumes from its checkpoint.
    subprocess.run(cmd + ["--unlock"], check=True, capture_output=True, timeout=300)
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    log = (tmp_path / "results" / "logs" / "train_lora" / f"{clip_dir.name}.mask.log").read_text()
    assert "resuming from" in log and "at step 0" not in log
    loss = pd.read_csv(clip_dir / "mask" / "loss.csv")
    assert list(loss["step"]) == list(range(1, STEPS + 1))  # the history before the kill is kept
    assert (tmp_path / "results" / "tables" / "metrics.csv").exists()
    assert not (clip_dir / "mask" / "work" / "expert0" / "checkpoint.pt").exists()
