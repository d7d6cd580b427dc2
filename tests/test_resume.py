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


def kill_mid_training_then_resume(
    tmp_path, overlay_config: dict, work: str, targets: tuple[str, ...] = ()
) -> subprocess.CompletedProcess:
    """Run the workflow (to `targets`, default all) until a training checkpoint appears under results/`work` (a glob), SIGKILL the
    head and its jobs, check the lock names the way out, unlock and run the same command again.
    Returns the finished run; the caller checks what the job resumed."""
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text(yaml.safe_dump(overlay_config))
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
    cmd[1:1] = targets  # before --configfile, which takes every path after it

    # 1. Run until training has written a checkpoint, then SIGKILL the head and its jobs.
    with open(tmp_path / "first.out", "w") as out:
        head = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 600
    while not list(tmp_path.glob(f"results/{work}/expert0/checkpoint.pt")):
        assert head.poll() is None, (tmp_path / "first.out").read_text()[-3000:]
        assert time.time() < deadline, "no training checkpoint within 600 s"
        time.sleep(0.2)
    os.killpg(head.pid, signal.SIGKILL)
    head.wait()

    # 2. The same command is refused while the dead head's lock is there, naming the way out.
    locked = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert locked.returncode != 0 and "--unlock" in locked.stdout + locked.stderr

    # 3. Unlock, then the same command: the job is redone and training resumes from its checkpoint.
    subprocess.run(cmd + ["--unlock"], check=True, capture_output=True, timeout=300)
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    return done


def test_killed_run_resumes_after_unlock(tmp_path):
    kill_mid_training_then_resume(tmp_path, OVERLAY, "*/mask/work")
    (clip_dir,) = {p.parents[1] for p in tmp_path.glob("results/*/mask/loss.csv")}
    log = (tmp_path / "results" / "logs" / "train_lora" / f"{clip_dir.name}.mask.log").read_text()
    assert "resuming from" in log and "at step 0" not in log
    loss = pd.read_csv(clip_dir / "mask" / "loss.csv")
    assert list(loss["step"]) == list(range(1, STEPS + 1))  # the history before the kill is kept
    assert (tmp_path / "results" / "tables" / "metrics.csv").exists()
    assert not (clip_dir / "mask" / "work" / "expert0" / "checkpoint.pt").exists()


# The mask prior trained by the run itself (prior.path null), used by the `prior` method alone.
PRIOR_OVERLAY = {
    **OVERLAY,
    "methods": ["prior"],
    "prior": {"path": None, "steps": STEPS, "checkpoint_every": 10, "recolor_copies": 1},
}


def test_killed_prior_training_resumes_after_unlock(tmp_path):
    # Only up to the prior (the `prior` method's inference runs in tests/test_toy_demo.py).
    kill_mid_training_then_resume(tmp_path, PRIOR_OVERLAY, "prior/work", ("results/prior/lora",))
    log = (tmp_path / "results" / "logs" / "train_prior.log").read_text()
    assert "resuming from" in log and "at step 0" not in log
    loss = pd.read_csv(tmp_path / "results" / "prior" / "loss.csv")
    assert list(loss["step"]) == list(range(1, STEPS + 1))
    assert not (tmp_path / "results" / "prior" / "work" / "expert0" / "checkpoint.pt").exists()
    assert (tmp_path / "results" / "prior" / "lora" / "pytorch_lora_weights.safetensors").exists()
