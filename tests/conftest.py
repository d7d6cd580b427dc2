"""Suite-wide settings: one intra-op thread, so timings and float reductions are the same on
every 2-core machine and parallel subprocesses (Snakemake jobs, SLURM) do not oversubscribe.

`make test` runs the suite on two pytest-xdist workers, a test file per worker at a time
(`--dist loadfile`, so a module's fixture runs once). The whole-workflow files go first, longest
first, so that no long file is left alone at the end while the other worker idles."""

import pytest
import torch

from loraedit.backends import registry

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def models():
    """The tiny Wan2.1-I2V (seeded random weights of the real classes), encoders and transformer."""
    return registry.load_models({"backend": "tiny", "seed": 0}, torch.device("cpu"), torch.float32)


# Seconds measured on 2 cores in one process (`pytest --durations`, 2026-11-28), longest first.
LONGEST_FIRST = [
    "test_slurm.py",  # 235: two SLURM workflows, mostly waiting on the plugin's status checks
    "test_workflow.py",  # 200: the plumbing DAG, about 50 Snakemake jobs
    "test_toy_demo.py",  # 111: make demo's config on one clip
    "test_toy_benchmark.py",  # 88: the reduced benchmark and the broken-method runs
    "test_resume.py",  # 125: killed and resumed runs (train_lora, train_prior)
    "test_toy_prior.py",  # 50: 10 steps from the toy prior against 10 cold ones
    "test_workflow_hunyuan.py",  # 45
]


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: file order kept otherwise
