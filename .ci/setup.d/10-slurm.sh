#!/usr/bin/env bash
# tests/test_slurm.py runs a real one-node SLURM (started and stopped by the test: tests/cluster/).
exec bash "$(dirname "$0")/../need-debian.sh" "the SLURM tests" "slurm-wlm munge" slurmctld slurmd sbatch munged
