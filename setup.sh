#!/usr/bin/env bash
# Idempotent set-up on a fresh machine (Debian 12, Python 3.11, no GPU, package registries only):
# creates .venv/ in the repository root, installs the pinned lock file (CPU torch from local disk,
# never a CUDA build) and builds the ROS 2 message package into the venv.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
if [[ ! -x .venv/bin/python ]]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.deltaworld-lock-$(sha256sum requirements.lock | cut -c1-16)
if [[ ! -f $stamp ]]; then
  # --no-deps: the lock is complete; nothing may resolve to an unpinned (CUDA) torch.
  .venv/bin/python -m pip install -q --disable-pip-version-check --no-deps -r requirements.lock
  rm -f .venv/.deltaworld-lock-*
  touch "$stamp"
fi
if [[ -x scripts/build_interfaces.sh ]]; then
  scripts/build_interfaces.sh
fi
