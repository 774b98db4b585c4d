#!/usr/bin/env bash
# `make gpu-check [DEVICE=cuda] [QUICK=1] [OUT=folder] [ARGS=...]`: benchmarks/gpu_check.py with this project's
# virtual environment where there is one, else (a GPU machine that reaches no package registry) with the
# machine's python3 and the wheels of `make gpu-wheels` carried in .whl/, installed into a folder of their own.
set -euo pipefail
cd "$(dirname "$0")/.."
DEVICE=${DEVICE:-cuda}
args=(--device "$DEVICE")
[ -n "${QUICK:-}" ] && [ "${QUICK}" != 0 ] && args+=(--quick) || args+=(--record)
[ -n "${OUT:-}" ] && args+=(--out "$OUT")
if [ -x .venv/bin/python ]; then
  PY=.venv/bin/python
else
  PY=${PYTHON3:-python3}
  if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
    site=${GPU_CHECK_SITE:-/tmp/lic-sweep-site}
    echo "installing the carried wheels of .whl/ into $site (no index)"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" .whl/*.whl
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
  else
    echo "no .venv and no .whl/: run \`make gpu-wheels\` on a machine with a package registry and carry .whl/" >&2
  fi
fi
export WANDB_MODE=${WANDB_MODE:-offline} WANDB_SILENT=true PYTHONUNBUFFERED=1
# An outer bound (default 9.5 minutes, under a borrowed machine's 10 per command): its TERM lets the check write
# what it finished before the KILL 20 s later.
# shellcheck disable=SC2086
exec timeout -s TERM -k 20 "${GPU_CHECK_TIMEOUT:-570}" "$PY" benchmarks/gpu_check.py "${args[@]}" ${ARGS:-}
