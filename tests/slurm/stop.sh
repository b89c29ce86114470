#!/usr/bin/env bash
# Stop the daemons tests/slurm/start.sh started: slurmd, slurmctld, slurmdbd and its MariaDB
# (by their pid files, never by name). munged stays up unless ZSBENCH_SLURM_STOP_MUNGE=1
# (other software may use it). The state folders stay, so a later start.sh is quick.
set -uo pipefail
DIR="${ZSBENCH_SLURM_DIR:-/var/spool/zsbench-slurm}"
stop() {  # pid file, expected process name: a stale pid file's recycled pid is left alone
  local pidfile=$1 name=$2 pid
  [ -s "$pidfile" ] || return 0
  pid="$(cat "$pidfile")"
  [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$name" ] || return 0
  kill "$pid" 2>/dev/null || return 0
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
}
stop "$DIR/slurmd.pid" slurmd
stop "$DIR/slurmctld.pid" slurmctld
stop "$DIR/slurmdbd.pid" slurmdbd
stop "$DIR/dbrun/db.pid" mariadbd
if [ "${ZSBENCH_SLURM_STOP_MUNGE:-0}" = 1 ]; then
  stop /run/munge/munged.pid munged
fi
