#!/usr/bin/env bash
# Stop the private cluster started by start.sh: only the processes whose PIDs it recorded in
# .ci/slurm/run/, and only while the PID still belongs to the program it was recorded for.
set -u
run="$(cd "$(dirname "$0")" && pwd)/run"
for name in slurmd slurmctld munged; do
  f="$run/$name.pid"
  [ -s "$f" ] || continue
  pid=$(cat "$f")
  if [ "$(cat /proc/"$pid"/comm 2>/dev/null)" = "$name" ]; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  fi
  rm -f "$f"
done
exit 0
