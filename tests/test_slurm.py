"""Workflows through `--profile profiles/slurm` on a real one-node SLURM (slurmctld + slurmd + munged).

tests/cluster/start_slurm.sh installs (if missing) and starts the daemons as root; the
fixture stops exactly the pids it started. Two workflows are submitted at once (their
time is mostly the plugin's status polling, so they overlap well):
- the small test workflow (tests/cluster/Snakefile), whose jobs record their SLURM
  job id and GPU assignment;
- the real demo workflow (Snakefile at the repo root), one clip, method `mask`.
Needs root: skipped otherwise, saying why.
"""

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from loraedit.resources import GPU_RULES, rule_resources

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "tests" / "cluster"
VENV_BIN = ROOT / ".venv" / "bin"
SUBMITTED = re.compile(r"submitted with SLURM jobid (\d+) \(log: \S*/rule_([A-Za-z0-9_]+)/")
TIMEOUT = 900

# The demo, cut to one clip and one method with few steps: every rule still runs. Training is long
# enough (and checkpoints often enough) to be killed between two checkpoints: the tiny model trains at
# ~30 steps/s on the CPU, so 60 steps (2 s) let the run finish before the poll saw a checkpoint once.
# Plumbing: the random tiny model and the shapes world (a landscape clip).
DEMO_OVERLAY = {
    "model": {"backend": "tiny", "path": None},
    "demo": {"world": "shapes", "num_clips": 1},
    "methods": ["mask"],
    "train": {"steps": 400, "checkpoint_every": 3},
    "infer": {"num_steps": 2},
}
DEMO_RULES = {
    "demo_data",
    "prepare",
    "caption",
    "masks",
    "train_lora",
    "infer",
    "score",
    "side_by_side",
    "aggregate",
    "bar_charts",
}


def _snakemake() -> list[str]:
    exe = VENV_BIN / "snakemake"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "snakemake"]


def _submitted_ids(log: str) -> dict[str, list[str]]:
    """The SLURM job ids per rule that a snakemake head's log says it submitted."""
    ids: dict[str, list[str]] = {}
    for job_id, rule in SUBMITTED.findall(log):
        ids.setdefault(rule, []).append(job_id)
    return ids


class ProfileRun:
    """One `snakemake --profile profiles/slurm` run in the background."""

    def __init__(self, slurm: dict, workdir: Path, args: list[str]):
        self.slurm, self.workdir, self.args = slurm, workdir, args
        self.cmd = _snakemake() + ["--profile", str(ROOT / "profiles" / "slurm"), "--directory", str(workdir)] + args
        self.start("snakemake.out")

    def start(self, log_name: str) -> None:
        self.log_path = self.workdir / log_name
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            self.cmd + ["--slurm-keep-successful-logs"],
            cwd=ROOT,
            env=self.slurm["env"],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def crash(self, when: str) -> tuple[Path, dict[str, list[str]]]:
        """Once a file matching the glob `when` exists under the workdir: SIGKILL the head (its lock
        stays), then scancel its running jobs. Returns that file and the SLURM job ids per rule."""
        deadline = time.time() + TIMEOUT
        while (found := next(iter(self.workdir.glob(when)), None)) is None:
            assert self.proc.poll() is None, self.log_path.read_text()[-4000:]
            assert time.time() < deadline, f"{when} not written within {TIMEOUT} s"
            time.sleep(0.2)
        self.proc.kill()
        self.proc.wait()
        self._log.close()
        ids = _submitted_ids(self.log_path.read_text())
        # Finished jobs make scancel complain; only the running ones matter.
        subprocess.run(["scancel", *[i for v in ids.values() for i in v]], env=self.slurm["env"], capture_output=True)
        return found, ids

    def result(self) -> tuple[str, dict[str, list[str]]]:
        """Wait; fail with the logs if snakemake failed; return its log and the SLURM job ids per rule."""
        rc = self.proc.wait(timeout=TIMEOUT)
        self._log.close()
        log = self.log_path.read_text()
        if rc != 0:
            # The cause is in the failed jobs' own logs (SLURM's output files).
            failed = [
                f"--- {p} ---\n{p.read_text()[-2000:]}"
                for p in sorted((self.workdir / ".snakemake" / "slurm_logs").rglob("*.log"))
                if "Error" in p.read_text()
            ]
            ctld = (self.slurm["state"] / "log" / "slurmctld.log").read_text()[-2000:]
            pytest.fail(
                f"snakemake failed ({rc}):\n{log[-5000:]}\n" + "\n".join(failed) + f"\n--- slurmctld.log ---\n{ctld}"
            )
        return log, _submitted_ids(log)

    def dry_run(self) -> str:
        return subprocess.run(
            self.cmd + ["-n"], cwd=ROOT, env=self.slurm["env"], capture_output=True, text=True, timeout=300
        ).stdout

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()  # snakemake cancels its SLURM jobs (scancel)
            self.proc.wait(timeout=120)


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    if os.geteuid() != 0:
        reason = "test_slurm: skipped, not root (slurmd and munged must run as root to start a cluster)"
        print(reason, file=sys.stderr)
        pytest.skip(reason)
    state = tmp_path_factory.mktemp("slurm")
    started = subprocess.run(
        ["bash", str(CLUSTER / "start_slurm.sh"), str(state)], capture_output=True, text=True, timeout=900
    )
    assert started.returncode == 0, f"start_slurm.sh failed:\n{started.stdout}\n{started.stderr}"
    pids = {name: int(pid) for name, pid in (line.split() for line in (state / "pids").read_text().splitlines())}
    assert set(pids) == {"munged", "slurmctld", "slurmd"}
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SLURM_", "SNAKEMAKE_")) and k not in ("CUDA_VISIBLE_DEVICES", "LORAEDIT_NUM_GPUS")
    }
    env["SLURM_CONF"] = str(state / "slurm.conf")
    env["PATH"] = f"{VENV_BIN}:{env.get('PATH', '/usr/bin:/bin')}"
    try:
        yield {"env": env, "state": state}
    finally:
        subprocess.run(["bash", str(CLUSTER / "stop_slurm.sh"), str(state)], timeout=120)
        for name, pid in pids.items():
            assert not Path(f"/proc/{pid}").exists(), f"{name} ({pid}) still running after stop_slurm.sh"


@pytest.fixture(scope="module")
def runs(slurm, tmp_path_factory):
    small_dir = tmp_path_factory.mktemp("small")
    demo_dir = tmp_path_factory.mktemp("demo")
    overlay = demo_dir / "overlay.yaml"
    overlay.write_text(yaml.safe_dump(DEMO_OVERLAY))
    started = {
        "small": ProfileRun(slurm, small_dir, ["-s", str(CLUSTER / "Snakefile"), "--config", "clips=3", "hold=1"]),
        "demo": ProfileRun(
            slurm,
            demo_dir,
            ["-s", str(ROOT / "Snakefile"), "--configfiles", str(ROOT / "config" / "config.yaml"), str(overlay)],
        ),
    }
    try:
        yield started
    finally:
        for run in started.values():
            run.stop()


def _job_info(slurm, job_id: str) -> dict[str, str]:
    """`scontrol show job` as a dict (finished jobs stay listed for MinJobAge)."""
    out = subprocess.run(
        ["scontrol", "show", "job", "-o", job_id], env=slurm["env"], capture_output=True, text=True, check=True
    ).stdout
    return dict(item.split("=", 1) for item in out.split() if "=" in item)


def _check_jobs(slurm, workdir: Path, ids: dict[str, list[str]], figures_for) -> None:
    """Every job completed, on the partition, GPU, memory and time limit the profile + config ask for."""
    for rule, rule_ids in ids.items():
        figures = figures_for(rule)
        gpu_rule = rule in GPU_RULES
        for job_id in rule_ids:
            info = _job_info(slurm, job_id)
            assert info["JobState"] == "COMPLETED", info
            assert info["Partition"] == ("gpu" if gpu_rule else "cpu"), (rule, info)
            assert ("gres:gpu:1" in info.get("TresPerJob", "")) == gpu_rule, (rule, info)
            assert info["MinMemoryNode"] == f"{figures['mem_mb']}M", (rule, info)
            assert info["TimeLimit"] == f"00:{figures['runtime']:02d}:00", (rule, info)
            assert list((workdir / ".snakemake" / "slurm_logs").rglob(f"{job_id}.log")), (rule, job_id)


def test_small_workflow_through_slurm_profile(slurm, runs):
    clips, run = 3, runs["small"]
    log, ids = run.result()
    assert {rule: len(v) for rule, v in ids.items()} == {"prepare": clips, "train_lora": clips, "aggregate": 1}, log

    out = run.workdir / "out"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["slurm_job_id"] == ids["aggregate"][0]
    gpu_records = summary["inputs"]
    assert sorted(r["slurm_job_id"] for r in gpu_records) == sorted(ids["train_lora"])
    assert sorted(r["inputs"][0]["slurm_job_id"] for r in gpu_records) == sorted(ids["prepare"])
    for i in range(clips):
        for step in ("cpu", "gpu"):
            assert json.loads((out / step / f"{i}.json").read_text())["slurm_job_id"]

    tiny = {"model": {"backend": "tiny"}}
    _check_jobs(slurm, run.workdir, ids, lambda rule: rule_resources(tiny, rule, frames=17, width=64, height=64))
    # Inside a GPU job SLURM chose the GPU (CUDA_VISIBLE_DEVICES from the gres), and the
    # slot allocator the rule runs under left that alone; CPU jobs see no GPU.
    for record in gpu_records:
        assert record["cuda_visible_devices"] in {"0", "1"}, record
        assert record["inputs"][0]["cuda_visible_devices"] is None


def test_demo_workflow_through_slurm_profile(slurm, runs):
    """The demo through the profile, crashed as in the README's "After a crash": head SIGKILLed and
    the training job cancelled mid-training; unlock, then the same command finishes the run."""
    run = runs["demo"]
    checkpoint, crashed = run.crash("results/*/mask/work/expert0/checkpoint.pt")
    assert _job_info(slurm, crashed["train_lora"][0])["JobState"] in ("CANCELLED", "COMPLETING"), crashed
    locked = subprocess.run(run.cmd, cwd=ROOT, env=slurm["env"], capture_output=True, text=True, timeout=300)
    assert locked.returncode != 0 and "--unlock" in locked.stdout + locked.stderr
    subprocess.run(run.cmd + ["--unlock"], cwd=ROOT, env=slurm["env"], check=True, capture_output=True, timeout=300)
    run.start("snakemake.rerun.out")
    log, ids = run.result()
    # Every rule but `all` ran as a SLURM job; the cancelled training was redone and resumed.
    done_before = {rule: v for rule, v in crashed.items() if rule != "train_lora"}
    assert set(ids) | set(done_before) == DEMO_RULES, log[-4000:]
    assert "train_lora" in ids and not set(ids) & set(done_before), (ids, done_before)
    clip_dir = checkpoint.parents[3]
    train_log = (run.workdir / "results" / "logs" / "train_lora" / f"{clip_dir.name}.mask.log").read_text()
    assert "resuming from" in train_log, train_log[-2000:]
    ids = {**done_before, **ids}

    # Every output of the DAG exists and is up to date.
    assert "Nothing to be done" in run.dry_run()
    res = run.workdir / "results"
    sheet = (res / "demo_data" / "samples.tsv").read_text().splitlines()
    assert len(sheet) == 2  # header + one clip
    clip = sheet[1].split("\t")[0]
    method = res / clip / "mask"
    for path in [
        res / clip / "caption.json",
        method / "lora" / "pytorch_lora_weights.safetensors",
        method / "lora" / "lora_wan.safetensors",
        method / "loss.csv",
        method / "output" / "output.mp4",
        res / clip / "side_by_side.mp4",
        res / "tables" / "metrics.md",
    ]:
        assert path.is_file() and path.stat().st_size > 0, path
    assert len(list((res / clip / "prepared" / "frames").glob("*.png"))) == 17
    assert len(list((method / "output" / "frames").glob("*.png"))) == 17
    assert len(list((res / clip / "masks").glob("*.png"))) == 17
    assert len((method / "loss.csv").read_text().strip().splitlines()) == 1 + DEMO_OVERLAY["train"]["steps"]
    json.loads((method / "scores.json").read_text())
    assert json.loads((res / "tables" / "manifest.json").read_text())
    metrics = (res / "tables" / "metrics.csv").read_text().splitlines()
    assert metrics[0].startswith("clip_id,method") and any(line.startswith(f"{clip},mask,") for line in metrics)
    assert list((res / "tables" / "charts").glob("*.png"))

    # Resources as rules/common.smk computes them from the config, at the demo's video size.
    config = {**yaml.safe_load((ROOT / "config" / "config.yaml").read_text()), "model": DEMO_OVERLAY["model"]}
    frames = config["prepare"]["num_frames"]
    width, height = config["prepare"]["landscape"]
    # Rules that declare none get the profile's default-resources.
    profile = yaml.safe_load((ROOT / "profiles" / "slurm" / "config.v8+.yaml").read_text())
    defaults = profile["default-resources"]
    with_resources = {"prepare", "caption", "masks", "train_lora", "infer", "score", "aggregate"}
    _check_jobs(
        slurm,
        run.workdir,
        ids,
        lambda rule: rule_resources(config, rule, 1, frames, width, height) if rule in with_resources else defaults,
    )
