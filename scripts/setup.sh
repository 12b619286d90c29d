#!/usr/bin/env bash
# One-shot, idempotent setup: .venv with the ROS 2 wheels, torch, the rest, and msg/ built.
# A second run does nothing slow: each stage leaves a stamp and is skipped when its inputs are unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV=${VENV:-$ROOT/.venv}
PY=${PYTHON:-python3}
STAMPS=$VENV/.stamps
mkdir -p "$ROOT/build"

say() { printf '[setup] %s\n' "$*"; }
stamp_ok() { [ -f "$STAMPS/$1" ] && [ "$(cat "$STAMPS/$1")" = "$2" ]; }
stamp_set() { mkdir -p "$STAMPS"; echo "$2" >"$STAMPS/$1"; }
hash_of() { cat "$@" 2>/dev/null | sha256sum | cut -c1-16; }

if [ ! -x "$VENV/bin/python" ]; then
  say "creating $VENV"
  "$PY" -m venv "$VENV"
fi
VPY=$VENV/bin/python

REQ_HASH=$(hash_of requirements/*.txt)
if ! stamp_ok pip "$REQ_HASH"; then
  say "installing Python packages (first run: a few minutes; torch comes from this machine's disk)"
  "$VPY" -m pip install -q --upgrade pip wheel setuptools 2>&1 | { grep -v "is ignored" || true; }
  "$VPY" -m pip install -q -r requirements/ros.txt 2>&1 | { grep -v "is ignored" || true; }
  "$VPY" -m pip install -q -r requirements/base.txt 2>&1 | { grep -v "is ignored" || true; }
  "$VPY" -m pip install -q -r requirements/dev.txt 2>&1 | { grep -v "is ignored" || true; }
  stamp_set pip "$REQ_HASH"
fi

# --- msg/ -> generated interfaces, built with the ament/rosidl wheels (three traps: ENVIRONMENT.md) ---
PREFIX=$ROOT/build/prefix
SITE=$("$VPY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
if ! stamp_ok cmakefix "$REQ_HASH"; then
  # Trap 3: the wheels' exported cmake targets name the wheel build host's include dirs.
  "$VPY" - "$VENV" <<'PYFIX'
import pathlib, sys, sysconfig
import numpy
venv = pathlib.Path(sys.argv[1])
inc = sysconfig.get_paths()["include"]
npinc = numpy.get_include()
subs = {"/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include": npinc,
        "/opt/python/cp311-cp311/include/python3.11": inc}
n = 0
for f in (venv / "share").rglob("*.cmake"):
    text = f.read_text(errors="surrogateescape")
    new = text
    for a, b in subs.items():
        new = new.replace(a, b)
    if new != text:
        f.write_text(new, errors="surrogateescape")
        n += 1
print(f"[setup] rewrote build-host paths in {n} cmake files")
PYFIX
  stamp_set cmakefix "$REQ_HASH"
fi

MSG_HASH=$(hash_of msg/*.msg CMakeLists.txt package.xml)
if ! stamp_ok msgs "$MSG_HASH-$REQ_HASH" || [ ! -d "$PREFIX/lib" ]; then
  say "building msg/ (rosidl, ~20 s)"
  rm -rf "$ROOT/build/cmake" "$PREFIX" "$ROOT/build/msgsrc"
  # CMake refuses include dirs inside the source dir, and .venv lives in the repo: build the
  # interfaces from a staged copy of the package files (messages only; DVFO_INSTALL_PYTHON=OFF).
  mkdir -p "$ROOT/build/msgsrc"
  cp -r msg CMakeLists.txt package.xml "$ROOT/build/msgsrc/"
  mkdir -p "$ROOT/build/msgsrc/launch" "$ROOT/build/msgsrc/config"
  export AMENT_PREFIX_PATH=$VENV CMAKE_PREFIX_PATH=$VENV
  PATH=$VENV/bin:$PATH cmake -S "$ROOT/build/msgsrc" -B "$ROOT/build/cmake" -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_INSTALL_PREFIX="$PREFIX" -DCMAKE_PREFIX_PATH="$VENV" -DPython3_EXECUTABLE="$VPY" \
    -DDVFO_INSTALL_PYTHON=OFF -DBUILD_TESTING=OFF \
    -DCMAKE_INSTALL_RPATH="$PREFIX/lib" >"$ROOT/build/cmake.log" 2>&1 \
    || { tail -30 "$ROOT/build/cmake.log"; echo "[setup] cmake configure failed (full log: build/cmake.log)"; exit 1; }
  PATH=$VENV/bin:$PATH cmake --build "$ROOT/build/cmake" -j2 >>"$ROOT/build/cmake.log" 2>&1 \
    && PATH=$VENV/bin:$PATH cmake --install "$ROOT/build/cmake" >>"$ROOT/build/cmake.log" 2>&1 \
    || { tail -30 "$ROOT/build/cmake.log"; echo "[setup] msg build failed (full log: build/cmake.log)"; exit 1; }
  stamp_set msgs "$MSG_HASH-$REQ_HASH"
fi

# rmw dlopen()s the typesupport libraries by name; the ROS wheels' bootstrapper puts $VENV/lib on
# LD_LIBRARY_PATH, so link ours there.
for lib in "$PREFIX"/lib/libdvfo_ros__*.so; do ln -sf "$lib" "$VENV/lib/$(basename "$lib")"; done

# Source tree first (live edits), then the generated messages; dvfo_ros/__init__.py joins the two.
printf '%s\n%s\n' "$ROOT" "$PREFIX/lib/python3.11/site-packages" >"$SITE/dvfo_ros_dev.pth"

SETUP_HASH=$(hash_of setup.py)
if ! stamp_ok editable "$SETUP_HASH-$ROOT"; then
  say "installing dvfo_ros (editable) and its console scripts"
  "$VPY" -m pip install -q --no-deps --no-build-isolation -e . --config-settings editable_mode=compat >"$ROOT/build/pip-editable.log" 2>&1 \
    || { cat "$ROOT/build/pip-editable.log"; exit 1; }
  printf '%s\n%s\n' "$ROOT" "$PREFIX/lib/python3.11/site-packages" >"$SITE/dvfo_ros_dev.pth"
  stamp_set editable "$SETUP_HASH-$ROOT"
fi
# A trained DVFO artifact for the demo: resnet18 on scikit-learn's real handwritten digits. Too large
# to ship (~44 MB with both tails), quick to train here: ~2 min on 2 cores, once. It goes to the
# per-user location every install searches ($DVFO_ARTIFACT_DIR, else ~/.cache/dvfo_ros/artifacts).
if ! "$VPY" -c 'import sys; from dvfo_ros.core.inference.collab import default_artifact; sys.exit(0 if default_artifact("resnet18", "digits") else 1)' 2>/dev/null; then
  say "training the demo's resnet18 artifact on scikit-learn's digits (~2 min, once) into the per-user dir"
  "$VPY" -m dvfo_ros.cli.artifact train --model resnet18 --dataset digits --quick --no-progress
fi
# The demo's DVFO policy, trained in the twin for what the demo runs (Xavier NX twin, resnet18 at 32 px,
# 10 classes, a 10 fps camera): ~45 s, once. Retrained when the MDP, the twin or the agent change.
DEMO_CKPT=$ROOT/build/demo/dvfo_xavier_nx_resnet18_32px.pt
DEMO_HASH=$(hash_of dvfo_ros/core/mdp/*.py dvfo_ros/core/twin/*.py dvfo_ros/core/policies/dvfo.py dvfo_ros/core/policies/base.py \
  dvfo_ros/core/io/traces.py dvfo_ros/core/twin/profiles/xavier_nx.yaml)
if ! stamp_ok demo_policy "$DEMO_HASH" || [ ! -f "$DEMO_CKPT" ]; then
  say "training the demo's DVFO policy in the twin (~45 s, once)"
  mkdir -p "$ROOT/build/demo"
  "$VPY" -m dvfo_ros.cli.train --device xavier_nx --model resnet18 --input-size 32 --num-classes 10 --fps 10 \
    --trace mix --steps 3000 --eval-frames 300 --eval-traces none --out "$DEMO_CKPT" >"$ROOT/build/demo/train.log" 2>&1 \
    || { tail -20 "$ROOT/build/demo/train.log"; echo "[setup] demo policy training failed"; exit 1; }
  stamp_set demo_policy "$DEMO_HASH"
fi
say "ready: $VENV"
