#!/usr/bin/env bash
# Start a private one-node Slurm cluster for the launcher tests: its own munged (key, socket), slurmctld
# and slurmd on 127.0.0.1 with their own ports, configuration, spool, state, logs and PID files, all
# under .ci/slurm/run/. Nothing under /etc is read or written; clients find it through SLURM_CONF
# (`source .ci/slurm/run/env`). stop.sh ends exactly the processes recorded here.
#
# Refuses, naming why, where the machine has a Slurm of its own (a slurm.conf in /etc/slurm, SLURM_CONF
# set to another cluster, or slurmctld/slurmd/munged running that this script did not start):
# `bash .ci/slurm/start.sh --force` starts the private cluster anyway (it still touches nothing of theirs).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
run="$here/run"
conf="$run/slurm.conf"
force=0
[ "${1:-}" = "--force" ] && force=1
for tool in slurmctld slurmd munged sinfo; do
  command -v "$tool" >/dev/null || { echo "start.sh: $tool is not installed; run: bash .ci/slurm/install.sh" >&2; exit 1; }
done

ours() {  # the PIDs this script recorded and that are still alive
  for f in "$run"/munged.pid "$run"/slurmctld.pid "$run"/slurmd.pid; do
    [ -s "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null && cat "$f"
  done
  return 0
}
if [ "$force" = 0 ]; then
  if [ -e /etc/slurm/slurm.conf ]; then
    echo "start.sh: /etc/slurm/slurm.conf exists: this machine has a Slurm cluster of its own. Not starting a" \
         "test cluster beside it (use --force to start the private one anyway; /etc is never touched)." >&2
    exit 1
  fi
  if [ -n "${SLURM_CONF:-}" ] && [ "$SLURM_CONF" != "$conf" ]; then
    echo "start.sh: SLURM_CONF=$SLURM_CONF points at another cluster; unset it or use --force." >&2
    exit 1
  fi
  mine=" $(ours | tr '\n' ' ') "
  for name in slurmctld slurmd munged; do
    for pid in $(pgrep -x "$name" || true); do
      if [[ "$mine" != *" $pid "* ]]; then
        echo "start.sh: $name (PID $pid) is running and was not started by this script: refusing to start a" \
             "test cluster beside a real one (use --force to start the private one anyway)." >&2
        exit 1
      fi
    done
  done
fi

if [ -n "$(ours)" ] && SLURM_CONF="$conf" sinfo -h -o "%t" 2>/dev/null | grep -qE "idle|mix|alloc"; then
  echo "private cluster already running (source $run/env)"
  exit 0
fi
bash "$here/stop.sh" >/dev/null 2>&1 || true
rm -rf "$run"
mkdir -p "$run/munge" "$run/spool/slurmd" "$run/state" "$run/log"
chmod 700 "$run/munge"
dd if=/dev/urandom of="$run/munge/munge.key" bs=1024 count=1 2>/dev/null
chmod 400 "$run/munge/munge.key"
: > "$run/plugstack.conf"

host=$(hostname -s)
cpus=$(nproc)
mem_mb=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))
cat > "$conf" <<CONF
ClusterName=licsweep-test
SlurmctldHost=${host}(127.0.0.1)
SlurmctldPort=16817
SlurmdPort=16818
SlurmUser=root
AuthType=auth/munge
AuthInfo=socket=$run/munge/munge.socket
CredType=cred/munge
PlugStackConfig=$run/plugstack.conf
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
JobRequeue=1
MpiDefault=none
SlurmctldPidFile=$run/slurmctld.pid
SlurmdPidFile=$run/slurmd.pid
SlurmdSpoolDir=$run/spool/slurmd
StateSaveLocation=$run/state
SlurmctldLogFile=$run/log/slurmctld.log
SlurmdLogFile=$run/log/slurmd.log
MinJobAge=600
KillWait=10
NodeName=${host} NodeAddr=127.0.0.1 CPUs=${cpus} RealMemory=${mem_mb} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
echo "export SLURM_CONF=$conf" > "$run/env"

munged --force --socket="$run/munge/munge.socket" --key-file="$run/munge/munge.key" \
  --pid-file="$run/munged.pid" --log-file="$run/log/munged.log" --seed-file="$run/munge/munged.seed"
export SLURM_CONF="$conf"
slurmctld -f "$conf"
slurmd -f "$conf"
for _ in $(seq 1 30); do
  if sinfo -h -o "%t" 2>/dev/null | grep -qE "idle|mix|alloc"; then
    sinfo
    echo "private cluster up: source $run/env (SLURM_CONF=$conf)"
    exit 0
  fi
  scontrol update nodename="$host" state=resume >/dev/null 2>&1 || true
  sleep 1
done
echo "slurm did not come up; logs in $run/log" >&2
tail -n 20 "$run"/log/*.log >&2 || true
exit 1
