# Sourced by .ci/run before `make test`: the Debian packages tests/test_slurm.py needs
# (slurmctld, slurmd, munged and the client commands). Idempotent: installs only what is
# missing. The cluster itself is started and stopped by the test (tests/cluster/).
if ! command -v slurmctld >/dev/null 2>&1 || ! command -v slurmd >/dev/null 2>&1 \
    || ! command -v sbatch >/dev/null 2>&1 || ! command -v munged >/dev/null 2>&1; then
    if [ "$(id -u)" -eq 0 ]; then
        DEBIAN_FRONTEND=noninteractive apt-get update -q
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends slurm-wlm munge
    else
        echo "10-slurm.sh: not root, cannot install slurm-wlm/munge; tests/test_slurm.py will skip" >&2
    fi
fi
