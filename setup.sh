#!/usr/bin/env bash
# Idempotent set-up on a fresh machine (Debian 12, Python 3.11, no GPU, package registries only):
# creates .venv/ in the repository root, installs the pinned lock file (CPU torch from local disk,
# never a CUDA build), installs this project into it editable (pip install -e) and builds the ROS 2
# package (messages, lib/deltaworld_ros executables) into it.
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
# The project itself, editable: `import deltaworld_core` works from any folder and sees every
# change at once (no copy); --no-build-isolation: setuptools and wheel come from the lock above.
editable=.venv/.deltaworld-editable-$( (cat setup.py pyproject.toml; echo "$PWD") | sha256sum | cut -c1-16)
root=$PWD
if [[ ! -f $editable ]] || ! (cd / && "$root/.venv/bin/python" -c "import sys, importlib.util as u
sys.exit(u.find_spec('deltaworld_core').submodule_search_locations[0] != sys.argv[1])" "$root/deltaworld_core") 2>/dev/null; then
  .venv/bin/python -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
  rm -f .venv/.deltaworld-editable-*
  touch "$editable"
fi
if [[ -x scripts/build_interfaces.sh ]]; then
  scripts/build_interfaces.sh
fi
