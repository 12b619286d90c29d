"""The real `ros2 launch`, as a robot runs it: a colcon workspace built once per session from
../shared/ros2-src (launch, launch_ros, ros2launch, ros2cli, ros2pkg, composition_interfaces) and a
copy of this working tree, then `ros2 launch dvfo_ros pipeline.launch.py` and `fleet.launch.py
robots:=2` as separate processes, watched by an rclpy probe in this process.

Skips where ../shared/ros2-src is absent (a user's own clone) or colcon is not installed.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from typing import Dict, List, Optional

import pytest

# the session's colcon build (~40 s, up to BUILD_TIMEOUT_S on a loaded machine) counts against the first test
pytestmark = [pytest.mark.ros, pytest.mark.timeout(900)]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROS2_SRC = os.path.join(os.path.dirname(ROOT), "shared", "ros2-src")
ROS2_PACKAGES = ("launch", "launch_ros", "ros2launch", "ros2cli", "ros2pkg", "composition_interfaces")
BUILD_TIMEOUT_S = 600
START_TIMEOUT_S = 90       # torch imports in 5-9 processes on 2 cores
WINDOW_S = 6.0             # frames counted after every namespace has its first result
SETTLE_S = 2.0             # a frame's result may arrive this long after its label


def _venv_bin() -> str:
    return os.path.dirname(sys.executable)


def _colcon() -> Optional[str]:
    return shutil.which("colcon", path=_venv_bin() + os.pathsep + os.environ.get("PATH", ""))


def _copy_working_tree(dest: str) -> None:
    """Tracked + untracked-not-ignored files of this checkout (the code under test, not HEAD)."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for rel in filter(None, listed):
        src = os.path.join(ROOT, rel)
        if not os.path.isfile(src):      # deleted in the working tree but still tracked
            continue
        os.makedirs(os.path.dirname(os.path.join(dest, rel)), exist_ok=True)
        shutil.copy2(src, os.path.join(dest, rel))


def _with_vision_msgs_underlay(env: Dict[str, str]) -> Dict[str, str]:
    """vision_msgs (as a distro has it) under the workspace: the colcon build test/vision_ws.py caches,
    sourced before the build so the workspace's setup.bash chains to it; unchanged where it cannot be built."""
    import vision_ws
    try:
        vision = vision_ws.install_prefix()
    except pytest.skip.Exception:
        return env
    setup = os.path.join(os.path.dirname(vision), "setup.bash")
    out = subprocess.run(["bash", "-c", f". {setup} && env -0"], env=env, capture_output=True, check=True).stdout
    return dict(item.split("=", 1) for item in out.decode().split("\0") if "=" in item)


@pytest.fixture(scope="session")
def ros2_env(tmp_path_factory) -> Dict[str, str]:
    """Build the workspace once; the environment of `. install/setup.bash` over it."""
    missing = [p for p in ROS2_PACKAGES if not os.path.isdir(os.path.join(ROS2_SRC, p))]
    if missing:
        pytest.skip(f"no ROS 2 launch sources at {ROS2_SRC} (missing {', '.join(missing)}): "
                    "the real `ros2 launch` test runs where ../shared/ros2-src exists")
    colcon = _colcon()
    if colcon is None:
        pytest.skip("colcon is not installed (pip install -r requirements/dev.txt)")
    if shutil.which("git") is None or not os.path.isdir(os.path.join(ROOT, ".git")):
        pytest.skip("not a git checkout: cannot list the working tree's files")
    ws = str(tmp_path_factory.mktemp("ros2_ws"))
    src = os.path.join(ws, "src")
    os.makedirs(src)
    for pkg in ROS2_PACKAGES:
        shutil.copytree(os.path.join(ROS2_SRC, pkg), os.path.join(src, pkg))
    _copy_working_tree(os.path.join(src, "dvfo_ros"))
    subprocess.run(["chmod", "-R", "u+w", src], check=True)   # ../shared is read-only in CI
    prefix = sys.prefix
    env = dict(os.environ, VIRTUAL_ENV=prefix, AMENT_PREFIX_PATH=prefix, CMAKE_PREFIX_PATH=prefix,
               PATH=_venv_bin() + os.pathsep + os.environ.get("PATH", ""))
    env = _with_vision_msgs_underlay(env)
    t0 = time.monotonic()
    build = subprocess.run([colcon, "build", "--cmake-args", f"-DPython3_EXECUTABLE={sys.executable}",
                            "-DBUILD_TESTING=OFF"], cwd=ws, env=env, capture_output=True, text=True,
                           timeout=BUILD_TIMEOUT_S)
    assert build.returncode == 0, f"colcon build failed:\n{build.stdout[-3000:]}\n{build.stderr[-3000:]}"
    print(f"colcon build of {len(ROS2_PACKAGES) + 1} packages: {time.monotonic() - t0:.1f} s")
    out = subprocess.run(["bash", "-c", ". install/setup.bash && env -0"], cwd=ws, env=env,
                         capture_output=True, check=True).stdout.decode()
    sourced = dict(item.split("=", 1) for item in out.split("\0") if "=" in item)
    sourced["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    sourced["FASTDDS_BUILTIN_TRANSPORTS"] = "SHM"
    sourced["ROS_DOMAIN_ID"] = os.environ["ROS_DOMAIN_ID"]
    sourced["PYTHONUNBUFFERED"] = "1"
    sourced["DVFO_WS"] = ws
    assert shutil.which("ros2", path=sourced["PATH"]), "install/setup.bash did not put ros2 on PATH"
    return sourced


class Launch:
    """`ros2 launch ...` in its own process group; SIGINT goes to the launch process only."""

    def __init__(self, env: Dict[str, str], args: List[str], log_path: str):
        self.log_path = log_path
        self._log = open(log_path, "w")
        self.proc = subprocess.Popen(["ros2", "launch", "dvfo_ros"] + args, env=env, stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True)

    def text(self) -> str:
        with open(self.log_path) as f:
            return f.read()

    def stop(self, timeout_s: float = 40.0) -> Optional[int]:
        rc = None
        try:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGINT)
            rc = self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            pass
        finally:
            if self.proc.poll() is None:           # never leave a launch behind
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
            self._log.close()
        return rc


class Probe:
    """rclpy node counting frames (camera/label) and results (dvfo/inference) per namespace."""

    def __init__(self, namespaces: List[str]):
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import QoSProfile

        from diagnostic_msgs.msg import DiagnosticArray

        from dvfo_ros.msg import FrameLabel, InferenceResult
        self.ctx = rclpy.Context()
        rclpy.init(args=[], context=self.ctx)
        self.node = rclpy.create_node("launch_probe", context=self.ctx)
        self.executor = SingleThreadedExecutor(context=self.ctx)
        self.executor.add_node(self.node)
        self.labels: Dict[str, Dict[int, float]] = {ns: {} for ns in namespaces}
        self.results: Dict[str, Dict[int, object]] = {ns: {} for ns in namespaces}
        self.diagnostics: set = set()
        self.node.create_subscription(DiagnosticArray, "/diagnostics",
                                      lambda m: self.diagnostics.update(st.name for st in m.status),
                                      QoSProfile(depth=50))
        for ns in namespaces:
            self.node.create_subscription(FrameLabel, f"{ns}/camera/label",
                                          lambda m, ns=ns: self.labels[ns].setdefault(int(m.seq), time.monotonic()),
                                          QoSProfile(depth=100))
            self.node.create_subscription(InferenceResult, f"{ns}/dvfo/inference",
                                          lambda m, ns=ns: self.results[ns].setdefault(int(m.seq), m),
                                          QoSProfile(depth=100))

    def spin(self, seconds: float, until=None) -> bool:
        t_end = time.monotonic() + seconds
        while time.monotonic() < t_end:
            if until is not None and until():
                return True
            self.executor.spin_once(timeout_sec=0.05)
        return until() if until is not None else True

    def parameters(self, node_name: str, names: List[str]) -> Dict[str, object]:
        """Values through the node's parameter service (what `ros2 param get` reads)."""
        from rclpy.parameter import parameter_value_to_python
        from rclpy.parameter_client import AsyncParameterClient
        client = AsyncParameterClient(self.node, node_name)
        assert self.spin(20.0, lambda: client.services_are_ready()), f"{node_name}: no parameter service"
        future = client.get_parameters(names)
        assert self.spin(10.0, future.done), f"{node_name}: get_parameters timed out"
        return {n: parameter_value_to_python(v) for n, v in zip(names, future.result().values)}

    def close(self) -> None:
        import rclpy
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.ctx)


def _run(env, args, namespaces, tmp_path, name):
    """Launch, wait for every namespace's first result, count a window of frames, read parameters,
    SIGINT the launch; returns (probe, launch log text, return code, window stats, params)."""
    probe = Probe(namespaces)
    launch = Launch(env, args, str(tmp_path / f"{name}.log"))
    rc = None
    try:
        started = probe.spin(START_TIMEOUT_S, lambda: all(probe.results[ns] for ns in namespaces)
                             or launch.proc.poll() is not None)
        assert started and launch.proc.poll() is None, \
            f"no results in every namespace within {START_TIMEOUT_S} s:\n{launch.text()[-4000:]}"
        t0 = time.monotonic() + 1.0           # subscriptions of late joiners settle
        probe.spin(WINDOW_S + 1.0)
        t1 = time.monotonic()
        probe.spin(SETTLE_S)
        window = {}
        for ns in namespaces:
            frames = sorted(s for s, t in probe.labels[ns].items() if t0 <= t <= t1)
            answered = [s for s in frames if s in probe.results[ns]]
            labelled = [probe.results[ns][s] for s in answered if probe.results[ns][s].label >= 0]
            window[ns] = {"frames": len(frames), "answered": len(answered),
                          "missing": [s for s in frames if s not in probe.results[ns]],
                          "labelled": len(labelled), "correct": sum(bool(r.correct) for r in labelled)}
        params = {ns: {"camera": probe.parameters(f"{ns}/camera", ["width", "height", "fps", "source"]),
                       "executor": probe.parameters(f"{ns}/executor", ["dataset", "model", "cloud_endpoint"]),
                       "governor": probe.parameters(f"{ns}/governor", ["profile", "backend"]),
                       "policy": probe.parameters(f"{ns}/policy", ["offload_ratio", "profile", "policy_mode"])}
                  for ns in namespaces}
    finally:
        rc = launch.stop()
        probe.close()
    print(f"{name}: {window}; launch rc {rc}; diagnostics {sorted(probe.diagnostics)}")
    return launch.text(), rc, window, params, probe.diagnostics


def _assert_every_frame_answered(window):
    for ns, w in window.items():
        assert w["frames"] >= 0.8 * WINDOW_S * 5, f"{ns or '/'}: only {w['frames']} frames in {WINDOW_S} s"
        assert not w["missing"], f"{ns or '/'}: frames without a result: {w['missing']} ({w})"


def _assert_trained_model(log, window, namespaces) -> Optional[str]:
    """None when checked; else why not (no trained artifact here: the test skips at its end)."""
    from dvfo_ros.core.inference.collab import default_artifact
    if default_artifact("resnet18", "digits") is None:
        return "no trained resnet18/digits artifact here (dvfo-artifact train; the executor warns)"
    for ns in namespaces:
        logger = (ns.strip("/") + "." if ns else "") + "executor"
        assert re.search(rf"\[{re.escape(logger)}\]: resnet18 split \d+ \(digits\)", log), \
            f"{logger} did not load the digits artifact"
        w = window[ns]
        assert w["labelled"] and w["correct"] >= 0.8 * w["labelled"], f"{ns or '/'}: {w}"
    return None


def _assert_clean_exit(log, rc):
    started = re.findall(r"\[INFO\] \[([\w.-]+-\d+)\]: process started with pid", log)
    assert started, log[-3000:]
    unclean = [p for p in started if f"[{p}]: process has finished cleanly" not in log]
    assert rc is not None, f"ros2 launch did not exit after SIGINT:\n{log[-3000:]}"
    if unclean:
        died = re.findall(r"process has died \[[^\]]*exit code (-?\d+)", log)
        if set(died) <= {"-2"} and any(p.startswith(("camera", "policy")) for p in unclean):
            pytest.xfail(f"issue 12 item 5, in progress: {unclean} exit code {died} on SIGINT")
        pytest.fail(f"not finished cleanly after SIGINT: {unclean}\n{log[-3000:]}")


def test_pipeline_launch_runs_the_params_file_trained_and_exits_cleanly(ros2_env, tmp_path):
    log, rc, window, params, diagnostics = _run(ros2_env, ["pipeline.launch.py"], [""], tmp_path, "pipeline")
    p = params[""]
    # config/pipeline.yaml's values, not the nodes' built-in defaults (synthetic 224x224)
    assert (p["camera"]["width"], p["camera"]["height"], p["camera"]["source"]) == (32, 32, "dataset"), p
    assert p["executor"]["dataset"] == "digits" and p["executor"]["model"] == "resnet18", p
    assert p["executor"]["cloud_endpoint"] == "tcp://127.0.0.1:5555", p
    assert "[cloud-" in log and "dvfo-cloud ready" in log, "the cloud server was not started"
    assert "executor: inference" in diagnostics, diagnostics
    _assert_every_frame_answered(window)
    untrained = _assert_trained_model(log, window, [""])
    _assert_clean_exit(log, rc)
    if untrained:
        pytest.skip(untrained)


def _user_params(tmp_path) -> str:
    """A team's own params file: the packaged one with other fps, profile, offload share."""
    import yaml
    with open(os.path.join(ROOT, "config", "pipeline.yaml")) as f:
        doc = yaml.safe_load(f)
    doc["/**/camera"]["ros__parameters"]["fps"] = 8.0
    doc["/**/governor"]["ros__parameters"]["profile"] = "orin_nx"
    doc["/**/policy"]["ros__parameters"].update(profile="orin_nx", offload_ratio=0.25)
    path = tmp_path / "team.yaml"
    path.write_text(yaml.safe_dump(doc))
    return str(path)


def test_fleet_launch_two_namespaces_user_params_shared_cloud(ros2_env, tmp_path):
    namespaces = ["/robot1", "/robot2"]
    log, rc, window, params, diagnostics = _run(ros2_env, ["fleet.launch.py", "robots:=2",
                                              f"params_file:={_user_params(tmp_path)}"],
                                   namespaces, tmp_path, "fleet")
    for ns in namespaces:
        p = params[ns]
        # the file applies in every namespace, and the user's values win without launch arguments
        assert (p["camera"]["width"], p["camera"]["fps"], p["executor"]["dataset"]) == (32, 8.0, "digits"), (ns, p)
        assert p["governor"]["profile"] == "orin_nx" and p["policy"]["profile"] == "orin_nx", (ns, p)
        assert p["policy"]["offload_ratio"] == 0.25 and p["policy"]["policy_mode"] == "static", (ns, p)
        assert p["executor"]["cloud_endpoint"] == "tcp://127.0.0.1:5555", (ns, p)
        assert re.search(rf"\[{ns.strip('/')}\.camera\]: publishing dataset frames 32x32", log), ns
        # each robot's own /diagnostics names
        assert f"{ns.strip('/')}/executor: inference" in diagnostics, diagnostics
        assert f"{ns.strip('/')}/governor: clocks" in diagnostics, diagnostics
    assert len(re.findall(r"\[INFO\] \[cloud-\d+\]: process started", log)) == 1, "one shared cloud server"
    _assert_every_frame_answered(window)
    untrained = _assert_trained_model(log, window, namespaces)
    _assert_clean_exit(log, rc)
    if untrained:
        pytest.skip(untrained)


def test_own_camera_driver_edge_only_under_a_namespace(ros2_env, tmp_path):
    """use_camera:=false image_topic:=... feeds the executor from another driver; edge_only:=true starts
    no cloud; namespace:= puts every node under it."""
    import numpy as np
    from sensor_msgs.msg import Image
    from rclpy.qos import qos_profile_sensor_data
    probe = Probe(["/r7"])
    pub = probe.node.create_publisher(Image, "/my_driver/image_raw", qos_profile_sensor_data)
    launch = Launch(ros2_env, ["pipeline.launch.py", "use_camera:=false", "image_topic:=/my_driver/image_raw",
                               "edge_only:=true", "namespace:=r7"], str(tmp_path / "driver.log"))
    sent = [0]

    def publish():
        img = Image(height=32, width=32, encoding="rgb8", step=96, data=np.zeros(32 * 32 * 3, np.uint8).tobytes())
        img.header.stamp = probe.node.get_clock().now().to_msg()
        pub.publish(img)
        sent[0] += 1

    probe.node.create_timer(0.1, publish)
    try:
        assert probe.spin(START_TIMEOUT_S, lambda: bool(probe.results["/r7"]) or launch.proc.poll() is not None) \
            and launch.proc.poll() is None, f"no results on /r7/dvfo/inference:\n{launch.text()[-4000:]}"
        before, sent_before = len(probe.results["/r7"]), sent[0]
        probe.spin(3.0)
        endpoint = probe.parameters("/r7/executor", ["cloud_endpoint"])["cloud_endpoint"]
    finally:
        rc = launch.stop()
        probe.close()
    log = launch.text()
    got = len(probe.results["/r7"]) - before
    print(f"driver: {got} results for {sent[0] - sent_before} frames in 3 s; launch rc {rc}")
    assert got >= 0.8 * (sent[0] - sent_before) and endpoint == "", (got, endpoint)
    assert "[cloud-" not in log and "[camera-" not in log and "[r7.executor]: " in log
    if "vision_msgs" in ros2_env.get("AMENT_PREFIX_PATH", ""):
        assert "vision_msgs is not installed" not in log        # the launched executor publishes vision_msgs
    _assert_clean_exit(log, rc)
