#!/usr/bin/env bash
# A colcon workspace with the real `ros2 launch` (launch, launch_ros, ros2launch, ros2cli, ros2pkg and
# composition_interfaces from ../shared/ros2-src), vision_msgs (so the executor publishes
# dvfo/classification and dvfo/label_info) and a copy of a dvfo_ros checkout, built with the venv's ROS 2
# wheels, the way test/test_ros2_launch.py builds one (about 60-120 s on 2 cores):
#
#   scripts/build_ros2_ws.sh DEST [TREE]      # TREE: the checkout to copy (default: this one)
#   dvfo-bench overhead --ros2-ws DEST ...    # then the launched row runs `ros2 launch` from DEST
#
# On a robot with a ROS 2 distro, use your own workspace instead (README, "On a robot").
set -euo pipefail
dest=${1:?usage: scripts/build_ros2_ws.sh DEST [TREE]}
tree=$(cd "${2:-$(dirname "$0")/..}" && pwd)
ros2_src=${DVFO_ROS2_SRC:-$(dirname "$tree")/shared/ros2-src}
py=${PYTHON:-$tree/.venv/bin/python}
venv=$(cd "$(dirname "$py")/.." && pwd -P)
mkdir -p "$dest/src"
dest=$(cd "$dest" && pwd)
for pkg in launch launch_ros ros2launch ros2cli ros2pkg composition_interfaces vision_msgs; do
  [ -d "$ros2_src/$pkg" ] || { echo "build_ros2_ws: no $pkg in $ros2_src (set DVFO_ROS2_SRC)" >&2; exit 2; }
  rm -rf "${dest:?}/src/$pkg" && cp -r "$ros2_src/$pkg" "$dest/src/$pkg"
done
# the working tree as git sees it: tracked and untracked-not-ignored files (not .venv, build, out)
rm -rf "${dest:?}/src/dvfo_ros" && mkdir -p "$dest/src/dvfo_ros"
(cd "$tree" && git ls-files -co --exclude-standard -z | while IFS= read -r -d '' f; do
  if [ -f "$f" ]; then cp --parents "$f" "$dest/src/dvfo_ros/"; fi
done)
chmod -R u+w "$dest/src"
cd "$dest"
VIRTUAL_ENV=$venv AMENT_PREFIX_PATH=$venv CMAKE_PREFIX_PATH=$venv PATH=$venv/bin:$PATH \
  colcon build --cmake-args "-DPython3_EXECUTABLE=$py" -DBUILD_TESTING=OFF
echo "built $dest: dvfo-bench overhead --ros2-ws $dest"
