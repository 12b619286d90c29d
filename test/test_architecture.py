"""The layout is the architecture: the ROS-free core sits below nodes, CLIs and the cloud server,
test harnesses stay out of the product core, and no module grows past what a reader takes in."""
from __future__ import annotations

import ast
import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PKG = os.path.join(REPO, "dvfo_ros")
CORE_SUBPACKAGES = {"mdp", "twin", "inference", "wire", "policies", "io", "hardware"}


def _modules(root: str):
    for d, _, files in os.walk(root):
        for f in files:
            if f.endswith(".py"):
                yield os.path.join(d, f)


def _imports(path: str):
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield a.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module


def test_core_imports_nothing_above_it_and_no_ros():
    above = ("dvfo_ros.nodes", "dvfo_ros.cli", "dvfo_ros.cloud", "dvfo_ros.testing", "dvfo_ros.msg", "rclpy")
    bad = [(os.path.relpath(p, REPO), m) for p in _modules(os.path.join(PKG, "core"))
           for m in _imports(p) if m == "rclpy" or m.startswith(above)]
    assert not bad, f"core must stay ROS-free and below nodes/cli/cloud/testing: {bad}"


def test_core_is_split_by_concern():
    entries = {e for e in os.listdir(os.path.join(PKG, "core")) if not e.startswith("__")}
    packages = {e for e in entries if os.path.isdir(os.path.join(PKG, "core", e))}
    assert CORE_SUBPACKAGES <= packages
    loose = sorted(e for e in entries - packages if e.endswith(".py"))
    assert len(loose) <= 3, f"flat modules in core/ (put them in a sub-package): {loose}"


def test_no_module_past_400_lines():
    long = [(os.path.relpath(p, REPO), n) for p in _modules(PKG)
            if (n := sum(1 for _ in open(p, encoding="utf-8"))) > 400]
    assert not long, f"modules past 400 lines ask to be split: {long}"
