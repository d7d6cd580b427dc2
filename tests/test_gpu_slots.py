"""GPU slot allocator, tested with real concurrent processes and real file locks."""

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from loraedit import gpu_slots
from loraedit.gpu_slots import acquire, gpu_slot, visible_gpus

# A worker process: take a slot, record the interval it held it and what it saw.
WORKER = textwrap.dedent("""
    import json, os, sys, time
    from loraedit.gpu_slots import gpu_slot
    lock_dir, out, n, hold = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    with gpu_slot(n=n, lock_dir=lock_dir, poll=0.02) as ids:
        start = time.monotonic()
        seen = os.environ["CUDA_VISIBLE_DEVICES"]
        time.sleep(hold)
        end = time.monotonic()
    with open(out, "w") as f:
        json.dump({"ids": ids, "seen": seen, "start": start, "end": end,
                   "after": os.environ.get("CUDA_VISIBLE_DEVICES")}, f)
""")


@pytest.fixture
def gpu_env(monkeypatch, tmp_path):
    """Pretend there are GPUs; nothing inherited from the machine or a SLURM job."""
    for var in ("CUDA_VISIBLE_DEVICES", "SLURM_JOB_ID", "LORAEDIT_GPU_LOCK_DIR"):
        monkeypatch.delenv(var, raising=False)

    def set_gpus(n):
        monkeypatch.setenv("LORAEDIT_NUM_GPUS", str(n))
        return tmp_path / "locks"

    return set_gpus


def _run_workers(lock_dir, tmp_path, jobs, hold=0.3):
    """Start all jobs (n per job) at once; return their records."""
    procs = []
    for i, n in enumerate(jobs):
        out = tmp_path / f"rec{i}.json"
        procs.append(
            (subprocess.Popen([sys.executable, "-c", WORKER, str(lock_dir), str(out), str(n), str(hold)]), out)
        )
    for p, _ in procs:
        assert p.wait(timeout=60) == 0
    return [json.loads(out.read_text()) for _, out in procs]


def _assert_no_shared_slot(records):
    by_gpu = {}
    for r in records:
        for gpu in r["ids"]:
            by_gpu.setdefault(gpu, []).append((r["start"], r["end"]))
    for gpu, spans in by_gpu.items():
        spans.sort()
        for (s0, e0), (s1, e1) in zip(spans, spans[1:]):
            assert s1 >= e0, f"gpu {gpu} held twice at once: {s0:.3f}-{e0:.3f} and {s1:.3f}-{e1:.3f}"
    return by_gpu


def test_concurrent_holders_never_share_a_slot(gpu_env, tmp_path):
    lock_dir = gpu_env(3)
    records = _run_workers(lock_dir, tmp_path, [1] * 8)
    for r in records:
        assert len(r["ids"]) == 1 and r["seen"] == r["ids"][0]  # the job sees exactly its GPU
        assert r["after"] is None  # restored (was unset)
    by_gpu = _assert_no_shared_slot(records)
    assert set(by_gpu) == {"0", "1", "2"}  # every GPU was used
    # GPU jobs really overlapped in time (3 slots, 8 jobs): at some moment 3 ran at once.
    starts = sorted(r["start"] for r in records)
    assert any(sum(r["start"] <= t < r["end"] for r in records) == 3 for t in starts)


def test_multi_gpu_jobs_are_all_or_nothing(gpu_env, tmp_path):
    lock_dir = gpu_env(3)
    records = _run_workers(lock_dir, tmp_path, [2, 2, 1, 2, 1], hold=0.2)
    for r in records:
        assert r["seen"] == ",".join(r["ids"]) and len(set(r["ids"])) == len(r["ids"])
    assert sorted(len(r["ids"]) for r in records) == [1, 1, 2, 2, 2]
    _assert_no_shared_slot(records)


def _wait_for(path, timeout=20):
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


def test_killed_holder_frees_its_slot(gpu_env, tmp_path):
    lock_dir = gpu_env(1)
    ready = tmp_path / "ready"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
        import time, pathlib
        from loraedit.gpu_slots import gpu_slot
        with gpu_slot(lock_dir={str(lock_dir)!r}):
            pathlib.Path({str(ready)!r}).touch()
            time.sleep(120)
    """),
        ]
    )
    try:
        _wait_for(ready)
        # The only slot is taken: a second job waits and times out.
        t0 = time.monotonic()
        with pytest.raises(TimeoutError):
            acquire(1, lock_dir, timeout=0.5, poll=0.05)
        assert time.monotonic() - t0 >= 0.5
        holder.send_signal(signal.SIGKILL)  # no cleanup code runs
        holder.wait(timeout=10)
        with gpu_slot(lock_dir=lock_dir, timeout=5) as ids:
            assert ids == ["0"] and os.environ["CUDA_VISIBLE_DEVICES"] == "0"
    finally:
        holder.kill()
        holder.wait()


def test_waiting_job_gets_the_slot_when_holder_exits(gpu_env, tmp_path):
    lock_dir = gpu_env(1)
    ids, fds = acquire(1, lock_dir)
    waiter = subprocess.Popen([sys.executable, "-c", WORKER, str(lock_dir), str(tmp_path / "w.json"), "1", "0"])
    time.sleep(0.5)
    assert waiter.poll() is None  # still waiting for the slot
    released = time.monotonic()
    for fd in fds:
        os.close(fd)
    assert waiter.wait(timeout=20) == 0
    assert json.loads((tmp_path / "w.json").read_text())["start"] >= released


def test_cli_runs_command_in_a_slot_and_the_command_holds_it(gpu_env, tmp_path):
    lock_dir = gpu_env(2)
    cli = [sys.executable, "-m", "loraedit.gpu_slots", "--lock-dir", str(lock_dir), "--"]
    out = subprocess.run(
        cli + [sys.executable, "-c", "import os; print(os.environ['CUDA_VISIBLE_DEVICES'])"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0 and out.stdout.strip() == "0", out.stderr
    # Exit codes pass through (exec, no wrapper process).
    assert subprocess.run(cli + ["sh", "-c", "exit 7"], timeout=60).returncode == 7
    # The exec'd command itself holds the lock: while it runs, slot 0 is taken.
    ready = tmp_path / "ready"
    sleeper = subprocess.Popen(cli + ["sh", "-c", f"touch {ready}; exec sleep 120"])
    try:
        _wait_for(ready)
        ids, fds = acquire(1, lock_dir, timeout=2)
        assert ids == ["1"]
        with pytest.raises(TimeoutError):
            acquire(1, lock_dir, timeout=0.3)
        sleeper.kill()
        sleeper.wait(timeout=10)
        ids2, fds2 = acquire(1, lock_dir, timeout=5)
        assert ids2 == ["0"]
        for fd in fds + fds2:
            os.close(fd)
    finally:
        sleeper.kill()
        sleeper.wait()
    assert subprocess.run([sys.executable, "-m", "loraedit.gpu_slots", "echo"], capture_output=True).returncode == 2


def test_no_gpu_is_a_no_op(gpu_env, monkeypatch):
    lock_dir = gpu_env(0)
    with gpu_slot(lock_dir=lock_dir) as ids:
        assert ids is None and "CUDA_VISIBLE_DEVICES" not in os.environ
    assert not lock_dir.exists()
    # A mask that hides every GPU counts as none.
    monkeypatch.setenv("LORAEDIT_NUM_GPUS", "4")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with gpu_slot(lock_dir=lock_dir) as ids:
        assert ids is None and os.environ["CUDA_VISIBLE_DEVICES"] == ""


def test_slurm_assignment_is_left_alone(gpu_env, monkeypatch):
    lock_dir = gpu_env(4)
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    with gpu_slot(lock_dir=lock_dir) as ids:
        assert ids is None and os.environ["CUDA_VISIBLE_DEVICES"] == "1"
    assert not lock_dir.exists()


def test_user_mask_limits_the_slots_and_is_restored(gpu_env, monkeypatch):
    lock_dir = gpu_env(8)  # the explicit mask wins over the count
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,5")
    assert visible_gpus() == ["2", "5"]
    first, fds = acquire(1, lock_dir, timeout=1)  # another job holds the first GPU of the mask
    assert first == ["2"]
    with gpu_slot(lock_dir=lock_dir, timeout=1) as ids:
        assert ids == ["5"] and os.environ["CUDA_VISIBLE_DEVICES"] == "5"
    for fd in fds:
        os.close(fd)
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "2,5"
    assert sorted(p.name for p in Path(lock_dir).iterdir()) == ["gpu2.lock", "gpu5.lock"]
    with pytest.raises(ValueError):
        acquire(3, lock_dir)


def test_gpu_count_from_nvidia_smi(monkeypatch, tmp_path):
    for var in ("CUDA_VISIBLE_DEVICES", "SLURM_JOB_ID", "LORAEDIT_NUM_GPUS"):
        monkeypatch.delenv(var, raising=False)
    fake = tmp_path / "bin" / "nvidia-smi"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho 'GPU 0: NVIDIA H100 (UUID: GPU-a)'\necho 'GPU 1: NVIDIA H100 (UUID: GPU-b)'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}:{os.environ['PATH']}")
    assert gpu_slots.visible_gpus() == ["0", "1"]


# --- the workstation profile: Snakemake counts GPUs, the allocator places the jobs ----------

ROOT = Path(__file__).resolve().parents[1]


def _snakemake(args, cwd, env, timeout=300):
    exe = ROOT / ".venv" / "bin" / "snakemake"
    cmd = ([str(exe)] if exe.exists() else [sys.executable, "-m", "snakemake"]) + args
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return proc.stdout + proc.stderr


def test_workstation_profile_runs_gpu_jobs_at_once_each_on_its_own_gpu(tmp_path):
    # A copy of the small test workflow, so that its code can be edited below.
    for name in ("Snakefile", "record_job.py"):
        (tmp_path / name).write_text((ROOT / "tests" / "cluster" / name).read_text())
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_") and k != "CUDA_VISIBLE_DEVICES"}
    env["LORAEDIT_NUM_GPUS"] = "4"
    profile = ["--profile", str(ROOT / "profiles" / "workstation")]
    _snakemake(profile + ["--cores", "8", "--resources", "gpu=4", "--config", "clips=6", "hold=1.5"], tmp_path, env)

    records = [json.loads((tmp_path / "out" / "gpu" / f"{i}.json").read_text()) for i in range(6)]
    for r in records:
        r["ids"] = [r["cuda_visible_devices"]]
    _assert_no_shared_slot(records)
    assert {r["cuda_visible_devices"] for r in records} == {"0", "1", "2", "3"}
    # Four GPU jobs ran at the same moment (six jobs, four GPUs, 1.5 s each).
    assert max(sum(o["start"] <= r["start"] < o["end"] for o in records) for r in records) == 4

    # rerun-triggers without `code`: editing a rule's command does not rerun finished jobs...
    snakefile = tmp_path / "Snakefile"
    snakefile.write_text(
        snakefile.read_text().replace(
            '"{sys.executable} -m loraedit.gpu_slots', '"true && {sys.executable} -m loraedit.gpu_slots'
        )
    )
    assert "Nothing to be done" in _snakemake(profile + ["-n", "--config", "clips=6"], tmp_path, env)
    # ...while Snakemake's default triggers would retrain every clip.
    out = _snakemake(["-n", "--cores", "1", "--config", "clips=6"], tmp_path, env)
    assert re.search(r"train_lora\s+6", out), out
