"""The rows of `dvfo-bench overhead` that need ROS: the composed pipeline (dvfo-pipeline's ``run``, every
node in this process) and the launched one (``ros2 launch dvfo_ros pipeline.launch.py``, one process per
node, watched by an rclpy probe in this process).

Both run the packaged params file with what the benchmark needs on top: the camera's synthetic source
at the model's input size, the static policy at a fixed xi (so only the pipeline's cost is measured),
the governor on the sim backend (never this machine's clocks) and the executor timing measured.
"""
from __future__ import annotations

import copy
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

from dvfo_ros.core.errors import DvfoError, one_line
from dvfo_ros.core.inference.overhead import (Arrival, Progress, descendants, paced_stats, pids_cpu_s,
                                              throughput_stats)

START_TIMEOUT_S = 180.0     # torch imports in four processes on a loaded 2-core machine
LAUNCH_ARGS = ("start_cloud:=false",)   # the benchmark runs its own cloud server for every row


class BenchError(ValueError, DvfoError):
    """A benchmark that cannot run as asked (one line)."""


def pipeline_params(model: str, input_size: int, num_classes: int, seed: int, xi: float, endpoint: str,
                    threads: int, deadline_ms: float, top_k: int) -> Dict[str, Dict[str, Any]]:
    """{node: {param: value}}: the packaged config/pipeline.yaml with the benchmark's settings on top."""
    from dvfo_ros.cli.pipeline import load_params, packaged_params_file
    p = load_params(packaged_params_file())
    p.setdefault("camera", {}).update(source="synthetic", location="", width=input_size, height=input_size,
                                      seed=seed, loop=True, wait_for_subscribers=True)
    p.setdefault("governor", {}).update(backend="sim")
    p.setdefault("executor", {}).update(model=model, artifact="none", split_index=-1, num_classes=num_classes,
                                        input_size=input_size, cloud_endpoint=endpoint, timing="measured",
                                        offload_ratio=float(xi), fusion_weight=-1.0, threads=threads,
                                        deadline_ms=float(deadline_ms), top_k=top_k)
    p.setdefault("policy", {}).update(policy_mode="static", checkpoint="", learning=False,
                                      offload_ratio=float(xi), fusion_weight=-1.0)
    return p


def _bar(progress: Progress, desc: str, total: int) -> Any:
    return progress(desc, total, "frame") if progress is not None else None


def _close(bar: Any) -> None:
    if bar is not None:
        bar.close()


# ---- composed: dvfo-pipeline's run in this process -------------------------------------------------
def composed_row(params: Dict[str, Dict[str, Any]], frames: int, warmup: int, fps: float, unthrottled_fps: float,
                 timeout_s: float, cloud_cpu: Callable[[], float], progress: Progress = None,
                 desc: str = "composed") -> Dict[str, Any]:
    """Paced: warmup + frames camera frames at ``fps``. Unthrottled: the camera at ``unthrottled_fps``
    until warmup + frames results have arrived. CPU: this process (every node runs in it)."""
    from dvfo_ros.cli import pipeline

    def collect(into: List[Arrival], bar: Any) -> Callable[[Dict[str, Any]], None]:
        def on_result(r: Dict[str, Any]) -> None:
            into.append((int(r["seq"]), int(r["stamp_ns"]), time.time_ns(), time.process_time(), cloud_cpu(),
                         float(r["total_ms"])))
            if bar is not None:
                bar.update(1)
        return on_result

    paced: List[Arrival] = []
    p = copy.deepcopy(params)
    p["camera"]["fps"] = float(fps)
    bar = _bar(progress, desc, warmup + frames)
    try:
        summary = pipeline.run(p, warmup + frames, timeout_s, log=lambda s: None, on_result=collect(paced, bar))
    finally:
        _close(bar)
    row = paced_stats(paced, warmup, frames)
    row.update(fallbacks=int(summary["fallbacks"]), cloud_used=int(summary.get("cloud_used", 0)))
    fast: List[Arrival] = []
    p = copy.deepcopy(params)
    p["camera"]["fps"] = float(unthrottled_fps)
    bar = _bar(progress, desc + " unthrottled", warmup + frames)
    try:
        pipeline.run(p, 10**9, timeout_s, log=lambda s: None, on_result=collect(fast, bar),
                     until=lambda: len(fast) >= warmup + frames)
    finally:
        _close(bar)
    row.update(throughput_stats(fast, warmup))
    return row


# ---- launched: ros2 launch, one process per node ---------------------------------------------------
def _underlay() -> Dict[str, str]:
    """This environment, plus this interpreter's venv when it runs in one: the ROS 2 wheels a workspace
    built by scripts/build_ros2_ws.sh stands on (its nodes run `python3` from PATH)."""
    env = dict(os.environ)
    if sys.prefix != sys.base_prefix:
        bin_dir = os.path.dirname(sys.executable)
        env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
        env["VIRTUAL_ENV"] = sys.prefix
        for key in ("AMENT_PREFIX_PATH", "CMAKE_PREFIX_PATH"):
            env[key] = os.pathsep.join(p for p in (env.get(key, ""), sys.prefix) if p)
    return env


def ros2_environment(ws: str) -> Tuple[Optional[Dict[str, str]], str]:
    """(environment to run ``ros2 launch dvfo_ros ...`` in, '') or (None, why the launched row is skipped).
    ``ws``: a colcon workspace (its install/setup.bash is sourced); '' = ``ros2`` on PATH as it is. A
    workspace that was named but does not work is an error (BenchError), not a skip."""
    if ws:
        candidates = [os.path.join(ws, "install", "setup.bash"), os.path.join(ws, "setup.bash")]
        setup = next((c for c in candidates if os.path.isfile(c)), None)
        if setup is None:
            raise BenchError(f"--ros2-ws {ws}: no install/setup.bash there (colcon build the workspace first)")
        out = subprocess.run(["bash", "-c", f". {shlex.quote(setup)} >/dev/null && env -0"], capture_output=True,
                             env=_underlay(), timeout=120)
        if out.returncode != 0:
            raise BenchError(f"--ros2-ws {ws}: sourcing {setup} failed (exit {out.returncode})")
        env = dict(item.split("=", 1) for item in out.stdout.decode().split("\0") if "=" in item)
    else:
        if shutil.which("ros2") is None:
            return None, ("launched: skipped, no `ros2` on PATH and no --ros2-ws (or $DVFO_ROS2_WS): "
                          "source a ROS 2 workspace with dvfo_ros in it to measure ros2 launch")
        env = dict(os.environ)
    for key in ("ROS_AUTOMATIC_DISCOVERY_RANGE", "FASTDDS_BUILTIN_TRANSPORTS", "ROS_DOMAIN_ID"):
        if key in os.environ:       # the probe in this process must see the same graph
            env[key] = os.environ[key]
    env["PYTHONUNBUFFERED"] = "1"
    try:
        found = subprocess.run(["ros2", "pkg", "prefix", "dvfo_ros"], env=env, capture_output=True, timeout=120)
        lines = found.stderr.decode(errors="replace").strip().splitlines() or [f"exit {found.returncode}"]
        why = "" if found.returncode == 0 else lines[-1]
    except (OSError, subprocess.TimeoutExpired) as exc:
        why = one_line(exc)
    if why:
        msg = f"`ros2 pkg prefix dvfo_ros` failed ({why})"
        if ws:
            raise BenchError(f"--ros2-ws {ws}: {msg}")
        return None, f"launched: skipped, {msg}: dvfo_ros is not installed in this ROS 2 environment"
    return env, ""


class _Probe:
    """rclpy node in this process: every dvfo/inference result with the launched processes' CPU time."""

    def __init__(self, cloud_cpu: Callable[[], float]) -> None:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import QoSProfile

        from dvfo_ros.msg import InferenceResult
        self.ctx = rclpy.Context()
        rclpy.init(args=[], context=self.ctx)
        self.node = rclpy.create_node("dvfo_bench_overhead_probe", context=self.ctx)
        self.executor = SingleThreadedExecutor(context=self.ctx)
        self.executor.add_node(self.node)
        self.pids: List[int] = []
        self.arrivals: List[Arrival] = []
        self.bar: Any = None
        self.cloud_cpu = cloud_cpu
        self.node.create_subscription(InferenceResult, "dvfo/inference", self._on_result, QoSProfile(depth=100))

    def _on_result(self, m: Any) -> None:
        stamp = m.header.stamp.sec * 1_000_000_000 + m.header.stamp.nanosec
        self.arrivals.append((int(m.seq), stamp, time.time_ns(), pids_cpu_s(self.pids), self.cloud_cpu(),
                              float(m.total_ms)))
        if self.bar is not None:
            self.bar.update(1)

    def spin_until(self, cond: Callable[[], bool], timeout_s: float) -> bool:
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            if cond():
                return True
            self.executor.spin_once(timeout_sec=0.05)
        return cond()

    def set_parameter(self, node_name: str, name: str, value: Any, timeout_s: float = 20.0) -> None:
        from rclpy.parameter import Parameter
        from rclpy.parameter_client import AsyncParameterClient
        client = AsyncParameterClient(self.node, node_name)
        if not self.spin_until(client.services_are_ready, timeout_s):
            raise BenchError(f"{node_name} offers no parameter service")
        future = client.set_parameters([Parameter(name, value=value)])
        result = future.result() if self.spin_until(future.done, timeout_s) else None
        if result is None or not all(r.successful for r in result.results):
            raise BenchError(f"could not set {node_name} {name}={value}")

    def close(self) -> None:
        import rclpy
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.ctx)


def _stop(proc: subprocess.Popen) -> None:
    """SIGINT to ros2 launch (it stops its nodes), then the whole process group if it lingers."""
    try:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        proc.wait(timeout=40)
    except subprocess.TimeoutExpired:
        pass
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _tail(path: str, lines: int = 3) -> str:
    try:
        with open(path, errors="replace") as f:
            return " | ".join(line.strip() for line in f.read().strip().splitlines()[-lines:])
    except OSError:
        return ""


def launched_row(env: Dict[str, str], params: Dict[str, Dict[str, Any]], frames: int, warmup: int, fps: float,
                 unthrottled_fps: float, timeout_s: float, cloud_cpu: Callable[[], float],
                 progress: Progress = None, desc: str = "launched") -> Dict[str, Any]:
    """One ``ros2 launch``: warmup + frames results at ``fps``, then the camera's fps parameter set to
    ``unthrottled_fps`` and warmup + frames more. CPU: ros2 launch and every process under it."""
    import yaml
    tmp = tempfile.mkdtemp(prefix="dvfo-bench-overhead-")
    p = copy.deepcopy(params)
    p["camera"].update(fps=float(fps), max_frames=0)
    params_file = os.path.join(tmp, "params.yaml")
    with open(params_file, "w") as f:
        yaml.safe_dump({f"/**/{node}": {"ros__parameters": v} for node, v in p.items()}, f)
    log_path = os.path.join(tmp, "launch.log")
    probe = _Probe(cloud_cpu)
    log = open(log_path, "w")
    proc = subprocess.Popen(["ros2", "launch", "dvfo_ros", "pipeline.launch.py", f"params_file:={params_file}",
                             *LAUNCH_ARGS], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        if not probe.spin_until(lambda: bool(probe.arrivals) or proc.poll() is not None, START_TIMEOUT_S) \
                or not probe.arrivals:
            why = f"ros2 launch exited ({proc.returncode})" if proc.poll() is not None else \
                f"no result within {START_TIMEOUT_S:.0f} s"
            raise BenchError(f"{why}: {_tail(log_path)}")
        probe.pids = descendants(proc.pid)      # every node is up once a result came through
        probe.arrivals.clear()
        probe.bar = _bar(progress, desc, warmup + frames)
        try:
            ok = probe.spin_until(lambda: any(a[0] >= warmup + frames - 1 for a in probe.arrivals)
                                  or proc.poll() is not None, timeout_s)
        finally:
            _close(probe.bar)
        if not ok or proc.poll() is not None:
            raise BenchError(f"{len(probe.arrivals)} of {warmup + frames} results: {_tail(log_path)}")
        row = paced_stats(probe.arrivals, warmup, frames)
        probe.set_parameter("/camera", "fps", float(unthrottled_fps))
        probe.arrivals = []
        probe.bar = _bar(progress, desc + " unthrottled", warmup + frames)
        try:
            probe.spin_until(lambda: len(probe.arrivals) >= warmup + frames or proc.poll() is not None, timeout_s)
        finally:
            _close(probe.bar)
        row.update(throughput_stats(probe.arrivals, warmup))
        row["processes"] = len(probe.pids)
        return row
    finally:
        _stop(proc)
        log.close()
        probe.close()
