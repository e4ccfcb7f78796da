#!/usr/bin/env bash
# Builds the ament_cmake package deltaworld_ros (its rosidl messages and the node) with plain CMake
# into the virtual environment's prefix, so `from deltaworld_ros.msg import Futures` works with no
# environment variables. A development install: the node's Python modules are not copied but read
# from this source tree (DELTAWORLD_PYTHON_SOURCE), and deltaworld_core comes from the editable
# install of the project (setup.sh), so lib/deltaworld_ros/* (`ros2 run`/launch) always run the
# current source. Idempotent: skipped when nothing it installs has changed since the last build
# (a hash stamp in the venv). Usage: scripts/build_interfaces.sh [--force]
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VIRTUAL_ENV:-$PWD/.venv}
PY=$VENV/bin/python
BUILD=build/deltaworld_ros

shopt -s nullglob
inputs=(CMakeLists.txt package.xml cmake/*.cmake msg/*.msg scripts/build_interfaces.sh launch/* config/*)
hash=$( (cat "${inputs[@]}"; echo "$PWD") | sha256sum | cut -c1-16)
stamp=$VENV/.deltaworld-interfaces-$hash
# Up to date: stamped, and from outside the repository the package resolves to this source tree.
root=$PWD
if [[ -f $stamp && ${1:-} != --force ]] && (cd / && "$PY" -c "import sys, deltaworld_ros.msg, deltaworld_ros as p
sys.exit(p.__path__[0] != sys.argv[1])" "$root/deltaworld_ros") 2>/dev/null; then
  exit 0
fi

mkdir -p "$(dirname "$BUILD")"
# The PyPI wheels install CMake packages under $VENV/share; ament finds them through this path.
export AMENT_PREFIX_PATH=$VENV
export PATH=$VENV/bin:$PATH
cmake -S . -B "$BUILD" -Wno-dev \
  -DCMAKE_INSTALL_PREFIX="$VENV" \
  -DCMAKE_PREFIX_PATH="$VENV" \
  -DCMAKE_PROJECT_INCLUDE="$PWD/cmake/drop_missing_include_dirs.cmake" \
  -DPython3_EXECUTABLE="$PY" \
  -DPYTHON_INSTALL_DIR="$("$PY" -c 'import sysconfig; print(sysconfig.get_path("purelib"))' | sed "s|^$VENV/||")" \
  -DDELTAWORLD_INSTALL_CORE=OFF \
  -DDELTAWORLD_PYTHON_SOURCE="$PWD" \
  -DBUILD_TESTING=OFF > "$BUILD.log" 2>&1 || { cat "$BUILD.log"; exit 1; }
cmake --build "$BUILD" -j "$(nproc)" >> "$BUILD.log" 2>&1 || { tail -50 "$BUILD.log"; exit 1; }
cmake --install "$BUILD" >> "$BUILD.log" 2>&1 || { tail -50 "$BUILD.log"; exit 1; }
rm -f "$VENV"/.deltaworld-interfaces-*
touch "$stamp"
echo "deltaworld_ros built into $VENV"
