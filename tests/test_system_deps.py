"""`make test` sets up the Debian packages its tests need, or stops at once with one line saying
what to install (never a row of failures ten minutes in)."""

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SETUPS = sorted((REPO / ".ci" / "setup.d").glob("*.sh"))
NEEDS = {"10-slurm.sh": ("slurmctld", "slurmd", "sbatch", "munged"), "20-chromium.sh": ("chromium",)}


def shim_path(tmp_path: Path, uid: int, commands=()) -> str:
    """A PATH holding only bash and dirname (real), a fake `id` reporting `uid` and the given (fake) commands."""
    bin_dir = tmp_path / f"bin{uid}-{len(commands)}"
    bin_dir.mkdir()
    for real in ("bash", "dirname"):
        (bin_dir / real).symlink_to(shutil.which(real))
    for name, body in [("id", f"echo {uid}"), *[(c, "exit 0") for c in commands]]:
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    return str(bin_dir)


def test_make_test_runs_the_system_setup_first():
    plan = subprocess.run(["make", "-n", "test"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    lines = [line for line in plan.splitlines() if line.strip()]
    setup = next(i for i, line in enumerate(lines) if ".ci/setup.d/" in line)
    pytest_line = next(i for i, line in enumerate(lines) if "pytest" in line)
    assert setup < pytest_line
    assert "make test" in (REPO / ".ci" / "run").read_text()


@pytest.mark.parametrize("script", SETUPS, ids=lambda p: p.name)
def test_missing_packages_without_root_stop_with_one_line(script, tmp_path):
    res = subprocess.run(
        ["/bin/bash", str(script)], env={"PATH": shim_path(tmp_path, 1000)}, capture_output=True, text=True, timeout=30
    )
    assert res.returncode == 1
    message = res.stderr.strip()
    assert len(message.splitlines()) == 1 and "apt-get install" in message, message
    assert res.stdout == ""


@pytest.mark.parametrize("script", SETUPS, ids=lambda p: p.name)
def test_present_packages_need_nothing(script, tmp_path):
    path = shim_path(tmp_path, 1000, NEEDS[script.name])
    res = subprocess.run(["/bin/bash", str(script)], env={"PATH": path}, capture_output=True, text=True, timeout=30)
    assert (res.returncode, res.stdout, res.stderr) == (0, "", "")
