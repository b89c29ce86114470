#!/usr/bin/env bash
# Stop the daemons tests/slurm/start.sh started: slurmd, slurmctld, slurmdbd and its MariaDB
# (by their pid files, never by name). munged stays up unless ZSBENCH_SLURM_STOP_MUNGE=1
# (other software may use it). The state folders stay, so a later start.sh is quick.
set -uo pipefail
DIR="${ZSBENCH_SLURM_DIR:-/var/spool/zsbench-slurm}"
stop() {
  local pidfile=$1 pid
  [ -s "$pidfile" ] || return 0
  pid="$(cat "$pidfile")"
  kill "$pid" 2>/dev/null || return 0
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
}
stop "$DIR/slurmd.pid"
stop "$DIR/slurmctld.pid"
stop "$DIR/slurmdbd.pid"
stop "$DIR/dbrun/db.pid"
if [ "${ZSBENCH_SLURM_STOP_MUNGE:-0}" = 1 ]; then
  stop /run/munge/munged.pid
fi
