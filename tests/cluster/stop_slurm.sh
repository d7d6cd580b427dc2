#!/usr/bin/env bash
# Stop the daemons that start_slurm.sh started: exactly the pids in STATE_DIR/pids.
#
#   tests/cluster/stop_slurm.sh [STATE_DIR]      # default /var/tmp/loraedit-slurm
set -uo pipefail

STATE=${1:-${LORAEDIT_SLURM_STATE:-/var/tmp/loraedit-slurm}}
PIDS="$STATE/pids"
[ -f "$PIDS" ] || { echo "stop_slurm.sh: nothing to stop ($PIDS missing)"; exit 0; }

# Reverse start order: slurmd, slurmctld, then munged (they need munge to say goodbye).
tac "$PIDS" | while read -r name pid; do
    [ -n "${pid:-}" ] || continue
    # Only signal the pid if it still is the daemon we started (pids get reused).
    if [ -r "/proc/$pid/comm" ] && [ "$(cat "/proc/$pid/comm")" = "$name" ]; then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
        echo "stopped $name ($pid)"
    fi
done
rm -f "$PIDS"
# The /etc/slurm/slurm.conf symlink start_slurm.sh made, if it still points here.
if [ -f "$STATE/linked_conf" ]; then
    link=$(cat "$STATE/linked_conf")
    if [ -L "$link" ] && [ "$(readlink "$link")" = "$STATE/slurm.conf" ]; then rm -f "$link"; fi
    rm -f "$STATE/linked_conf"
fi
