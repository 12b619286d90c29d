"""Real vision_msgs for in-process tests: built from ../shared/ros2-src/vision_msgs with colcon (as
../shared/ros2-src/README.md and scripts/build_ros2_ws.sh build it), once per source version, cached
under build/vision_msgs_ws/, then loaded into this interpreter.

A robot has vision_msgs from its distro; here it has no wheel. Loading a colcon install into a running
interpreter needs two things `. install/setup.bash` would give a fresh process: the Python package on
sys.path, and the typesupport libraries, which rmw dlopen()s by bare name, already loaded (the dynamic
loader read LD_LIBRARY_PATH at start-up, so setting it now would not be seen).
"""
from __future__ import annotations

import ctypes
import fcntl
import glob
import hashlib
import importlib
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROS2_SRC = os.environ.get("DVFO_ROS2_SRC") or os.path.join(os.path.dirname(ROOT), "shared", "ros2-src")
SOURCE = os.path.join(ROS2_SRC, "vision_msgs")
CACHE = os.path.join(ROOT, "build", "vision_msgs_ws")
BUILD_TIMEOUT_S = 600


def _source_key() -> str:
    h = hashlib.sha256(sys.executable.encode())
    for path in sorted(glob.glob(os.path.join(SOURCE, "**", "*"), recursive=True)):
        if os.path.isfile(path):
            h.update(os.path.relpath(path, SOURCE).encode())
            with open(path, "rb") as f:
                h.update(f.read())
    return h.hexdigest()[:16]


def install_prefix() -> str:
    """<ws>/install/vision_msgs, built if needed; pytest.skip where it cannot be built here."""
    if not os.path.isfile(os.path.join(SOURCE, "package.xml")):
        pytest.skip(f"no vision_msgs sources at {SOURCE} (set DVFO_ROS2_SRC): the vision_msgs tests need them")
    colcon = shutil.which("colcon", path=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    if colcon is None:
        pytest.skip("colcon is not installed (pip install -r requirements/dev.txt): cannot build vision_msgs")
    ws = os.path.join(CACHE, _source_key())
    prefix = os.path.join(ws, "install", "vision_msgs")
    stamp = os.path.join(ws, "built")
    os.makedirs(CACHE, exist_ok=True)
    with open(os.path.join(CACHE, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)       # two pytest runs at once build it once
        if os.path.exists(stamp):
            return prefix
        shutil.rmtree(ws, ignore_errors=True)
        shutil.copytree(SOURCE, os.path.join(ws, "src", "vision_msgs"))
        subprocess.run(["chmod", "-R", "u+w", os.path.join(ws, "src")], check=True)   # ../shared is read-only
        venv = sys.prefix
        env = dict(os.environ, VIRTUAL_ENV=venv, AMENT_PREFIX_PATH=venv, CMAKE_PREFIX_PATH=venv,
                   PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
        build = subprocess.run([colcon, "build", "--cmake-args", f"-DPython3_EXECUTABLE={sys.executable}",
                                "-DBUILD_TESTING=OFF", f"-DCMAKE_INSTALL_RPATH={prefix}/lib"],
                               cwd=ws, env=env, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
        assert build.returncode == 0, f"colcon build of vision_msgs failed:\n{build.stdout[-3000:]}\n" \
                                      f"{build.stderr[-3000:]}"
        with open(stamp, "w") as f:
            f.write("ok\n")
    return prefix


def load() -> str:
    """Make `from vision_msgs.msg import ...` work in this process, publish and subscribe included."""
    try:
        import vision_msgs.msg  # noqa: F401 - a distro's own (a robot, a ROS 2 container)
        return os.path.dirname(vision_msgs.msg.__file__)
    except ImportError:
        pass
    prefix = install_prefix()
    site = glob.glob(os.path.join(prefix, "lib", "python3*", "site-packages"))
    assert site, f"no site-packages under {prefix}"
    if site[0] not in sys.path:
        sys.path.insert(0, site[0])
    pending = sorted(glob.glob(os.path.join(prefix, "lib", "*.so")))
    while pending:                              # in dependency order, whatever the names' order
        failed = []
        for lib in pending:
            try:
                ctypes.CDLL(lib, mode=ctypes.RTLD_GLOBAL)
            except OSError:
                failed.append(lib)
        if len(failed) == len(pending):
            raise OSError(f"cannot load {failed}")
        pending = failed
    os.environ["AMENT_PREFIX_PATH"] = os.pathsep.join(filter(None, [prefix, os.environ.get("AMENT_PREFIX_PATH")]))
    importlib.invalidate_caches()
    importlib.import_module("vision_msgs.msg")     # fails here, with the reason, rather than inside a node
    return prefix
