"""Suite-wide settings: one intra-op thread, so timings and float reductions are the same on
every 2-core machine and parallel subprocesses (Snakemake jobs, SLURM) do not oversubscribe."""

import torch

torch.set_num_threads(1)
