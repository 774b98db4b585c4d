#!/usr/bin/env bash
# Install Debian's slurm-wlm and munge when missing (the only system-wide step; start.sh writes nothing
# outside .ci/slurm/run/).
set -euo pipefail
if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null
fi
