"""The package holds together: docs, params file, launch file and entry points agree with the code."""
import ast
import importlib
import os
import re

import pytest
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _read(*parts):
    with open(os.path.join(ROOT, *parts)) as f:
        return f.read()


def test_readme_documents_every_declared_parameter():
    import sys
    sys.path.insert(0, os.path.join(ROOT, "scripts"))
    from params_table import rows
    readme = _read("README.md")
    missing = [f"{n}.{p}" for n, p, *_ in rows() if f"| {n} | `{p}` |" not in readme]
    assert not missing, f"README parameter table lacks {missing}: regenerate with scripts/params_table.py"


def test_params_file_sets_only_declared_parameters():
    from dvfo_ros.cli.pipeline import load_params
    from dvfo_ros.nodes.graph import NODES
    doc = yaml.safe_load(_read("config", "pipeline.yaml"))
    assert all(key.startswith("/**/") for key in doc), "keys must apply under any namespace: /**/<node>"
    for ns in ("", "/robot1"):
        params = load_params(os.path.join(ROOT, "config", "pipeline.yaml"), namespace=ns)
        assert set(params) == {spec.name for spec in NODES}
    for spec in NODES:
        declared = {p.name for p in importlib.import_module(spec.module).PARAMS}
        given = set(params[spec.name])
        assert given <= declared, f"{spec.name}: unknown {given - declared}"


def test_launch_file_and_runner_share_the_node_list():
    from dvfo_ros.nodes.graph import NODES
    launch = _read("launch", "pipeline.launch.py")
    assert "from dvfo_ros.nodes.graph import" in launch
    cmake = _read("CMakeLists.txt")
    for spec in NODES:
        assert os.access(os.path.join(ROOT, "scripts", "nodes", spec.name), os.X_OK)
        assert spec.name in cmake


def test_package_xml_is_valid_format_3():
    from catkin_pkg.package import parse_package
    pkg = parse_package(os.path.join(ROOT, "package.xml"))
    assert pkg.package_format == 3 and pkg.name == "dvfo_ros"
    deps = {d.name for d in pkg.exec_depends + pkg.build_depends + pkg.buildtool_depends}
    for needed in ("rclpy", "sensor_msgs", "diagnostic_msgs", "cv_bridge", "python3-zmq", "python3-opencv",
                   "rosidl_default_generators"):
        assert needed in deps


def test_every_console_script_resolves_to_a_main():
    tree = ast.parse(_read("setup.py"))
    scripts = next(n for n in ast.walk(tree) if isinstance(n, ast.Assign)
                   and getattr(n.targets[0], "id", "") == "CONSOLE_SCRIPTS")
    for entry in ast.literal_eval(scripts.value):
        name, target = (s.strip() for s in entry.split("="))
        module, func = target.split(":")
        assert callable(getattr(importlib.import_module(module), func)), name


@pytest.mark.parametrize("sub", ["core", "cloud"])
def test_core_and_cloud_never_import_rclpy(sub):
    offenders = []
    for dirpath, _, files in os.walk(os.path.join(ROOT, "dvfo_ros", sub)):
        for f in files:
            if f.endswith(".py"):
                text = _read(dirpath, f)
                if re.search(r"^\s*(import rclpy|from rclpy)", text, re.M):
                    offenders.append(f)
    assert not offenders
