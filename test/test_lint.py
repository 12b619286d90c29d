"""Lint and types as tests, as ROS 2 packages ship test_flake8.py / test_mypy.py: zero findings.

ruff (pycodestyle, pyflakes, blind-except; ruff.toml) over the whole repo, mypy (mypy.ini) over the
package. A finding fails the test with the tool's own report.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)


def _tool(name: str) -> str:
    path = os.path.join(BIN, name)
    if not os.path.exists(path):
        path = shutil.which(name) or ""
    if not path:
        pytest.skip(f"{name} is not installed (requirements/dev.txt installs it)")
    return path


def test_ruff_finds_nothing():
    proc = subprocess.run([_tool("ruff"), "check", "--output-format", "concise", "."], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_mypy_finds_nothing():
    proc = subprocess.run([_tool("mypy"), "--cache-dir", os.path.join(REPO, "build", "mypy_cache")], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
