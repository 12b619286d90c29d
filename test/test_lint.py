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


_MYPY: dict = {}


def start_mypy() -> None:
    """Start mypy in the background (conftest calls this when collection ends); idempotent."""
    if "proc" not in _MYPY:
        path = os.path.join(BIN, "mypy")
        if os.path.exists(path) or shutil.which("mypy"):
            _MYPY["proc"] = subprocess.Popen(
                [path if os.path.exists(path) else "mypy", "--cache-dir", os.path.join(REPO, "build", "mypy_cache")],
                cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_mypy_finds_nothing():
    _tool("mypy")
    start_mypy()
    out, _ = _MYPY["proc"].communicate(timeout=300)
    assert _MYPY["proc"].returncode == 0, out[-8000:]
