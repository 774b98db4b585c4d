#!/usr/bin/env bash
# Stop the one-node Slurm cluster started by start.sh.
pkill -x slurmd 2>/dev/null || true
pkill -x slurmctld 2>/dev/null || true
pkill -x munged 2>/dev/null || true
exit 0
