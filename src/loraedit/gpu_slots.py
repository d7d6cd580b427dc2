"""GPU slot allocator: give each GPU job of a multi-GPU workstation its own GPU.

`snakemake --resources gpu=4` limits how many GPU jobs run at once but does not
say *which* GPU each one gets (Snakemake sets no CUDA_VISIBLE_DEVICES). A GPU
job therefore takes a slot here::

    with gpu_slot(n=1):
        train(...)          # sees one GPU, as cuda:0

or, for a command: ``loraedit gpu-slot -- python train.py ...``.

A slot is an exclusive ``fcntl.flock`` on ``lock_dir/gpu<id>.lock``. The kernel
drops the lock when the holder exits or is killed, so a crashed job never keeps
a GPU. Enter the slot before anything initialises CUDA in the process: CUDA
reads CUDA_VISIBLE_DEVICES once.

Which GPUs are slots:
- inside a SLURM job that already has CUDA_VISIBLE_DEVICES (SLURM set it from
  the job's GRES): nothing to do, SLURM did the assignment;
- CUDA_VISIBLE_DEVICES set otherwise (a user's mask, e.g. "2,3"): those GPUs;
- else ``LORAEDIT_NUM_GPUS`` if set (tests, or to use only the first N GPUs);
- else the count from ``nvidia-smi -L``, or torch when the driver is there but
  nvidia-smi is not;
- no GPU: a no-op.
``LORAEDIT_GPU_LOCK_DIR`` overrides the lock folder (share one between several
workflow folders on the same machine).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

DEFAULT_LOCK_DIR = ".snakemake/gpu_slots"


def _count_gpus() -> int:
    override = os.environ.get("LORAEDIT_NUM_GPUS")
    if override not in (None, ""):
        return max(0, int(override))
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30).stdout
            return sum(1 for line in out.splitlines() if line.startswith("GPU "))
        except (OSError, subprocess.SubprocessError):
            pass
    # Driver present without nvidia-smi (or ROCm): ask torch, in a child process, because
    # initialising CUDA here would pin this process to all GPUs before we pick one.
    if any(Path(p).exists() for p in ("/dev/nvidiactl", "/dev/kfd")):
        try:
            out = subprocess.run(
                [sys.executable, "-c", "import torch; print(torch.cuda.device_count())"],
                capture_output=True,
                text=True,
                timeout=120,
            ).stdout
            return int(out.strip().splitlines()[-1])
        except (OSError, subprocess.SubprocessError, ValueError, IndexError):
            return 0
    return 0


def visible_gpus() -> list[str] | None:
    """The GPU ids that are slots (as CUDA_VISIBLE_DEVICES tokens); None when SLURM already assigned them."""
    cvd = os.environ.get("CUDA_VISIBLE_DEVICES")
    if cvd is not None and "SLURM_JOB_ID" in os.environ:
        return None
    if cvd is not None:
        # "" / "-1" / "none" hide every GPU; ids may be indices or GPU-UUIDs.
        ids = [tok.strip() for tok in cvd.split(",") if tok.strip()]
        return [] if not ids or ids[0] in ("-1", "none", "NoDevFiles") else ids
    return [str(i) for i in range(_count_gpus())]


def _lock_path(lock_dir: Path, gpu_id: str) -> Path:
    return lock_dir / f"gpu{re.sub(r'[^A-Za-z0-9_.-]', '_', gpu_id)}.lock"


def _try_lock(path: Path) -> int | None:
    """An fd holding an exclusive flock on ``path``, or None when another process holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    # The pid is for people looking at the folder; the lock itself is the truth.
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def acquire(
    n: int = 1, lock_dir: str | os.PathLike | None = None, timeout: float | None = None, poll: float = 0.2
) -> tuple[list[str], list[int]] | None:
    """Lock ``n`` free GPU slots, waiting while all are taken.

    Returns (gpu ids, lock fds), or None when there is nothing to allocate (no GPU, or
    SLURM already assigned the GPUs). Closing the fds (or exiting) frees the slots.
    Raises TimeoutError after ``timeout`` seconds (None: wait forever).
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    gpus = visible_gpus()
    if not gpus:
        return None
    if n > len(gpus):
        raise ValueError(f"asked for {n} GPUs, only {len(gpus)} visible ({','.join(gpus)})")
    lock_dir = Path(lock_dir or os.environ.get("LORAEDIT_GPU_LOCK_DIR") or DEFAULT_LOCK_DIR)
    lock_dir.mkdir(parents=True, exist_ok=True)
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        held: list[tuple[str, int]] = []
        for gpu in gpus:
            fd = _try_lock(_lock_path(lock_dir, gpu))
            if fd is not None:
                held.append((gpu, fd))
                if len(held) == n:
                    return [g for g, _ in held], [f for _, f in held]
        # All-or-nothing: give back a partial set so two n=2 jobs cannot deadlock on 1+1.
        for _, fd in held:
            os.close(fd)
        if deadline is not None and time.monotonic() >= deadline:
            raise TimeoutError(f"no {n} free GPU slot(s) of {len(gpus)} within {timeout} s (locks in {lock_dir})")
        time.sleep(poll)


@contextlib.contextmanager
def gpu_slot(
    n: int = 1, lock_dir: str | os.PathLike | None = None, timeout: float | None = None, poll: float = 0.2
) -> Iterator[list[str] | None]:
    """Hold ``n`` GPU slots and set CUDA_VISIBLE_DEVICES to them for the block; restore it after.

    Yields the GPU ids, or None (and changes nothing) when there is no GPU or SLURM assigned them.
    """
    got = acquire(n, lock_dir, timeout, poll)
    if got is None:
        yield None
        return
    ids, fds = got
    previous = os.environ.get("CUDA_VISIBLE_DEVICES")
    os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(ids)
    try:
        yield ids
    finally:
        if previous is None:
            os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = previous
        for fd in fds:
            os.close(fd)


def main(argv: list[str] | None = None) -> int:
    """``loraedit gpu-slot [-n N] [--lock-dir D] [--timeout S] -- cmd args``."""
    import argparse

    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" not in argv:
        print("usage: loraedit gpu-slot [-n N] [--lock-dir DIR] [--timeout S] -- cmd [args]", file=sys.stderr)
        return 2
    split = argv.index("--")
    parser = argparse.ArgumentParser(prog="loraedit gpu-slot", description="Run a command on its own GPU slot(s).")
    parser.add_argument("-n", type=int, default=1, help="number of GPUs (default 1)")
    parser.add_argument("--lock-dir", default=None, help=f"lock folder (default {DEFAULT_LOCK_DIR})")
    parser.add_argument("--timeout", type=float, default=None, help="give up after S seconds (default: wait)")
    args = parser.parse_args(argv[:split])
    cmd = argv[split + 1 :]
    if not cmd:
        parser.error("no command after --")
    got = acquire(args.n, args.lock_dir, args.timeout)
    if got is not None:
        ids, fds = got
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(ids)
        # exec keeps the locked fds open in the command itself: the slot lives exactly as
        # long as the command, and killing it frees the slot.
        for fd in fds:
            os.set_inheritable(fd, True)
    try:
        os.execvp(cmd[0], cmd)
    except OSError as err:
        print(f"loraedit.gpu_slots: cannot run {cmd[0]!r}: {err}", file=sys.stderr)
        return 127


if __name__ == "__main__":
    sys.exit(main())
