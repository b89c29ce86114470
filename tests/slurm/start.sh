#!/usr/bin/env bash
# A one-node Slurm on this machine, for tests/test_slurm.py and for trying `--launcher slurm`:
#
#   bash tests/slurm/start.sh          # (`make slurm-up`) install, configure, start
#   export SLURM_CONF=/var/spool/zsbench-slurm/slurm.conf
#   bash tests/slurm/stop.sh           # (`make slurm-down`) stop what start.sh started
#   bash tests/slurm/start.sh --install-only   # the packages only (`make install` installs them)
#
# Debian packages slurm-wlm, slurmdbd, munge and mariadb-server (apt-get, as root). Started:
# munged (as user munge), a private MariaDB on 127.0.0.1:16306 for job accounting (so that
# `sacct` shows array jobs), slurmdbd, slurmctld and slurmd, one node with this machine's short
# hostname and $ZSBENCH_SLURM_CPUS (default: nproc) CPUs. Everything lives under
# $ZSBENCH_SLURM_DIR (default /var/spool/zsbench-slurm): slurm.conf, slurmdbd.conf, state
# folders, the database, logs, pid files. The config is private (clients find it through
# SLURM_CONF) and every daemon has its own port, so a machine's own Slurm or MariaDB is never
# touched. Idempotent: daemons that are already up are reused.
set -euo pipefail

DIR="${ZSBENCH_SLURM_DIR:-/var/spool/zsbench-slurm}"
CONF="$DIR/slurm.conf"
CPUS="${ZSBENCH_SLURM_CPUS:-$(nproc)}"
HOST="$(hostname -s)"
DB_PORT=16306
export SLURM_CONF="$CONF"

die() { echo "slurm: $*" >&2; exit 1; }
# pid file, process name: alive only if that pid still runs that program (pids get recycled)
alive() { [ -s "$1" ] && [ "$(cat "/proc/$(cat "$1")/comm" 2>/dev/null)" = "$2" ]; }
wait_for() { # wait_for SECONDS COMMAND...: retry COMMAND every 0.2 s
  local n=$(($1 * 5)); shift
  for _ in $(seq "$n"); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  return 1
}
[ "$(id -u)" = 0 ] || die "needs root (apt-get install; munged, slurmd and MariaDB are started)"

need=()
for pair in slurmctld:slurm-wlm slurmdbd:slurmdbd munged:munge mariadbd:mariadb-server; do
  command -v "${pair%%:*}" >/dev/null || PATH="$PATH:/usr/sbin" command -v "${pair%%:*}" \
    >/dev/null || need+=("${pair##*:}")
done
if [ ${#need[@]} -gt 0 ]; then
  command -v apt-get >/dev/null || die "missing ${need[*]} and there is no apt-get"
  echo "slurm: installing Debian packages ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
export PATH="$PATH:/usr/sbin"
[ "${1:-}" = --install-only ] && exit 0

# munge: its folders belong to user munge, the key exists; munged runs as munge.
mkdir -p /etc/munge /var/lib/munge /var/log/munge /run/munge
[ -s /etc/munge/munge.key ] || dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
chown -R munge:munge /etc/munge /var/lib/munge /var/log/munge /run/munge
chmod 0700 /etc/munge /var/log/munge && chmod 0755 /run/munge && chmod 0400 /etc/munge/munge.key
if ! munge -n </dev/null >/dev/null 2>&1; then
  runuser -u munge -- munged
  wait_for 10 munge -n || die "munged did not start (see /var/log/munge/munged.log)"
fi

mkdir -p "$DIR/ctld" "$DIR/d" "$DIR/log"

# MariaDB for slurmdbd: a private instance (own datadir, socket and port).
db() { mariadb --no-defaults --socket="$DIR/dbrun/db.sock" -uroot "$@"; }
if [ ! -d "$DIR/db/mysql" ]; then
  mkdir -p "$DIR/db" && chown mysql:mysql "$DIR/db"
  mariadb-install-db --no-defaults --user=mysql --datadir="$DIR/db" --skip-test-db \
    --auth-root-authentication-method=socket >"$DIR/log/mariadb-install.log" 2>&1 \
    || die "mariadb-install-db failed (see $DIR/log/mariadb-install.log)"
fi
if ! alive "$DIR/dbrun/db.pid" mariadbd; then  # its socket, pid and log in a folder of user mysql
  mkdir -p "$DIR/dbrun" && chown mysql:mysql "$DIR/dbrun"
  setsid mariadbd --no-defaults --user=mysql --datadir="$DIR/db" --socket="$DIR/dbrun/db.sock" \
    --pid-file="$DIR/dbrun/db.pid" --port=$DB_PORT --bind-address=127.0.0.1 \
    --log-error="$DIR/dbrun/mariadb.log" </dev/null >/dev/null 2>&1 &
  wait_for 60 db -e "select 1" || die "MariaDB did not start (see $DIR/dbrun/mariadb.log)"
fi
db -e "CREATE USER IF NOT EXISTS 'slurm'@'%' IDENTIFIED BY 'zsbench';
       GRANT ALL ON slurm_acct_db.* TO 'slurm'@'%'; FLUSH PRIVILEGES;"

cat >"$DIR/slurmdbd.conf" <<CONF
# Written by zsbench tests/slurm/start.sh
AuthType=auth/munge
DbdHost=localhost
DbdPort=16819
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=zsbench
StorageLoc=slurm_acct_db
PidFile=$DIR/slurmdbd.pid
LogFile=$DIR/log/slurmdbd.log
CONF
chmod 0600 "$DIR/slurmdbd.conf"

cat >"$CONF.new" <<CONF
# Written by zsbench tests/slurm/start.sh: one node ($HOST, $CPUS CPUs), everything local.
ClusterName=zsbench
SlurmctldHost=$HOST(127.0.0.1)
SlurmctldPort=16817
SlurmdPort=16818
SlurmUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=16819
StateSaveLocation=$DIR/ctld
SlurmdSpoolDir=$DIR/d
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ReturnToService=2
MpiDefault=none
KillWait=5
InactiveLimit=0
MinJobAge=300
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$CPUS State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
CONF
mv "$CONF.new" "$CONF"

if ! alive "$DIR/slurmdbd.pid" slurmdbd; then
  slurmdbd   # reads slurmdbd.conf next to $SLURM_CONF
  wait_for 30 sacctmgr -n list cluster || die "slurmdbd did not answer (see $DIR/log/slurmdbd.log)"
fi
sacctmgr -n list cluster format=cluster | grep -qw zsbench \
  || sacctmgr -i add cluster zsbench >/dev/null
alive "$DIR/slurmctld.pid" slurmctld || slurmctld -f "$CONF"
alive "$DIR/slurmd.pid" slurmd || slurmd -f "$CONF"

up() { sinfo -h -o %T | grep -qE '^(idle|mixed|allocated|completing)'; }
if ! wait_for 20 up; then
  scontrol update NodeName="$HOST" State=RESUME >/dev/null 2>&1 || true
  wait_for 10 up || die "node state '$(sinfo -h -o %T 2>&1)' (logs: $DIR/log/)"
fi
echo "slurm: up ($HOST, $CPUS CPUs); export SLURM_CONF=$CONF"
