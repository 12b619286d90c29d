"""dvfo-pipeline: the whole pipeline in one process, without `ros2 launch`.

Runs the same nodes as launch/pipeline.launch.py (dvfo_ros.nodes.graph.NODES) with the same
config/pipeline.yaml, starts the cloud server as a child process when its endpoint is local and
nothing answers there, and prints a summary when N frames have their results.

    dvfo-pipeline --frames 100 --set policy.offload_ratio=0.25 --report out/run.json
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import re
import subprocess
import sys
import threading
import time
from typing import Any, Dict, List, Optional

import yaml

from dvfo_ros.core.errors import DvfoError
from dvfo_ros.core.io.yaml_file import read_yaml

DEFAULT_PARAMS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                              "config", "pipeline.yaml")


class PipelineError(RuntimeError, DvfoError):
    pass


def packaged_params_file() -> str:
    """config/pipeline.yaml of a source checkout, or of the installed share/dvfo_ros on a robot."""
    if os.path.isfile(DEFAULT_PARAMS):
        return DEFAULT_PARAMS
    try:
        from ament_index_python.packages import get_package_share_directory
        return os.path.join(get_package_share_directory("dvfo_ros"), "config", "pipeline.yaml")
    except Exception:  # noqa: BLE001
        raise PipelineError("config/pipeline.yaml not found; pass --params-file") from None


def _node_key_pattern(key: str) -> "re.Pattern[str]":
    """A params-file node key as rcl/rclcpp/rclpy match it against a node's fully qualified name:
    a key without a leading '/' is rooted ('camera' = '/camera'); '/**' stands for any number of
    namespace tokens (also none), '/*' for exactly one."""
    rooted = key if key.startswith("/") else "/" + key
    parts = []
    for tok in rooted.split("/")[1:]:
        parts.append(r"(/[^/]+)*" if tok == "**" else r"/[^/]+" if tok == "*" else "/" + re.escape(tok))
    return re.compile("".join(parts) or "/")


def _fqn(namespace: str, node: str) -> str:
    ns = "/" + namespace.strip("/") if namespace.strip("/") else ""
    return f"{ns}/{node}"


def load_params(path: str, namespace: str = "",
                nodes: Optional[List[str]] = None) -> Dict[str, Dict[str, Any]]:
    """{node: {param: value}} from a ROS 2 params file, applied the way rcl applies it to the node
    `<namespace>/<node>`: keys `/**/camera` (any namespace), `/camera` or `camera` (root only),
    `/robot1/camera`, `/*/camera`, `/**` (every node); when several keys match a node, later ones
    win, as in rclcpp/rclpy. `nodes` defaults to the pipeline's nodes (dvfo_ros.nodes.graph.NODES)
    plus every node the file names explicitly. Nodes no key matches are left out."""
    doc = read_yaml(path, "params file", PipelineError) or {}
    if not isinstance(doc, dict):
        raise PipelineError(f"params file {path}: expected 'node: ros__parameters: ...' mappings")
    entries = []
    for key, body in doc.items():
        if not isinstance(key, str) or not key.strip("/"):
            raise PipelineError(f"params file {path}: '{key}' is not a node name")
        if not isinstance(body, dict) or not isinstance(body.get("ros__parameters", {}), dict):
            raise PipelineError(f"params file {path}: '{key}' needs a 'ros__parameters' mapping")
        entries.append((_node_key_pattern(key), body.get("ros__parameters") or {}))
    if nodes is None:
        from dvfo_ros.nodes.graph import NODES
        nodes = [spec.name for spec in NODES]
        for key in doc:
            last = key.rstrip("/").rsplit("/", 1)[-1]
            if "*" not in last and last not in nodes:
                nodes.append(last)
    out: Dict[str, Dict[str, Any]] = {}
    for node in nodes:
        fqn = _fqn(namespace, node)
        for pattern, values in entries:
            if pattern.fullmatch(fqn):
                out.setdefault(node, {}).update(values)
    return out


def apply_sets(params: Dict[str, Dict[str, Any]], sets: List[str]) -> None:
    """--set node.param=value (value parsed as YAML: 0.5, true, text)."""
    for s in sets:
        key, sep, raw = s.partition("=")
        node, dot, name = key.partition(".")
        if not sep or not dot or not node or not name:
            raise PipelineError(f"--set expects node.param=value, got '{s}'")
        params.setdefault(node, {})[name] = yaml.safe_load(raw)


def is_local_endpoint(endpoint: str) -> bool:
    """True for an endpoint on this machine (loopback, ipc, inproc): the one a local dvfo-cloud can serve."""
    return endpoint.startswith(("tcp://127.", "tcp://localhost", "ipc://", "inproc://"))


def several_fronts(endpoint: str) -> str:
    """'' for one endpoint (or none); else why no local cloud server is started (dvfo-pipeline and both launch
    files say it): the robots fail over between fronts that each run their own dvfo-cloud."""
    if len([e for e in endpoint.split(",") if e.strip()]) < 2:
        return ""
    return (f"cloud_endpoint lists several fronts ({endpoint}): not starting a cloud server; each front must be "
            "running (dvfo-cloud behind each)")


def ensure_cloud(p: Dict[str, Dict[str, Any]], log) -> Optional[subprocess.Popen]:
    """Start dvfo-cloud as a child when the endpoint is local and nothing answers there."""
    ex = p.get("executor", {})
    endpoint = ex.get("cloud_endpoint", "tcp://127.0.0.1:5555")
    if several_fronts(endpoint):
        log(several_fronts(endpoint))
        return None
    if not endpoint or not is_local_endpoint(endpoint):
        return None
    from dvfo_ros.core.wire.link import CloudLink
    probe = CloudLink(endpoint)
    try:
        if probe.ping(0.3):
            log(f"using the cloud server already answering on {endpoint}")
            return None
    finally:
        probe.close()
    from dvfo_ros.nodes.graph import cloud_arguments
    # the server loads exactly what the executor loads: the executor's whole ModelSpec
    cmd = [sys.executable, "-m", "dvfo_ros.cli.cloud"] + cloud_arguments(endpoint, ex)
    log(f"starting cloud server: {' '.join(cmd[1:])}")
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    t0 = time.monotonic()
    lines: List[str] = []
    while time.monotonic() - t0 < 120:
        line = child.stdout.readline() if child.stdout else ""
        if not line and child.poll() is not None:
            raise PipelineError(f"cloud server exited with {child.returncode}: {' | '.join(lines[-3:])}")
        lines.append(line.strip())
        if "ready" in line:
            return child
    child.terminate()
    raise PipelineError("cloud server did not report ready within 120 s")


def ex_deadline_s(params: Dict[str, Dict[str, Any]]) -> float:
    return float(params.get("executor", {}).get("deadline_ms", 200.0)) / 1000.0


def stop_child(child: Optional[subprocess.Popen]) -> None:
    if child is None or child.poll() is not None:
        return
    child.terminate()
    try:
        child.wait(timeout=10)
    except subprocess.TimeoutExpired:
        child.kill()


def run(params: Dict[str, Dict[str, Any]], frames: int, timeout_s: float, log=print,
        on_result=None, until=None) -> Dict[str, Any]:
    """Build the graph, run until `frames` camera frames have results (or timeout), return the summary.
    on_result(dict) is called for every InferenceResult (tests, reliability runs and dvfo-bench overhead
    hook in here); until() -> True stops the run early."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from rclpy.parameter import Parameter
    from rclpy.qos import QoSProfile

    from dvfo_ros.core.io.summary import summarise
    from dvfo_ros.msg import InferenceResult
    from dvfo_ros.nodes.graph import NODES, linked_params

    params.setdefault("camera", {})["max_frames"] = int(frames)
    params.setdefault("executor", {}).update(linked_params(params["camera"], params["executor"]))
    child = ensure_cloud(params, log)
    results: List[Dict[str, Any]] = []
    nodes: List[Any] = []
    context = rclpy.Context()
    rclpy.init(args=[], context=context)
    try:
        for spec in NODES:
            overrides = [Parameter(k, value=v) for k, v in params.get(spec.name, {}).items()]
            nodes.append(spec.load()(context=context, parameter_overrides=overrides))
        camera = nodes[0]
        collector = Node("dvfo_pipeline_summary", context=context)
        def collect(m: InferenceResult) -> None:
            r = {"seq": m.seq, "total_ms": m.total_ms, "energy_j": m.energy_j, "bytes_sent": m.bytes_sent,
                 "fallback": m.fallback, "cloud_used": m.cloud_used, "label": m.label, "correct": m.correct,
                 "offload_ratio": m.offload_ratio, "fallback_reason": m.fallback_reason,
                 "error": m.error, "error_reason": m.error_reason, "split_index": m.split_index,
                 "target": m.target, "stamp_ns": m.header.stamp.sec * 1_000_000_000 + m.header.stamp.nanosec}
            results.append(r)
            if on_result is not None:
                on_result(r)

        collector.create_subscription(InferenceResult, "dvfo/inference", collect, QoSProfile(depth=1000))
        nodes.append(collector)
        # An executor and a thread per node, except the camera, which shares the executor node's: a wait
        # then covers one or two nodes' entities (rclpy rebuilds its wait set in Python on every wake-up,
        # so one executor over all nodes paid for every node's services and events on each callback), and
        # the governor's, policy's and summary's callbacks run while the executor node is inside torch
        # (which drops the GIL). The camera ticks only while the executor node is free, as before: the
        # composed pipeline takes every frame it publishes (its figures count frames lost from the cloud).
        groups = [[nodes[0], nodes[2]]] + [[n] for i, n in enumerate(nodes) if i not in (0, 2)]
        executors = [SingleThreadedExecutor(context=context) for _ in groups]
        for executor, group in zip(executors, groups):
            for n in group:
                executor.add_node(n)
        spinners = [threading.Thread(target=executor.spin, name=f"dvfo-pipeline-{group[-1].get_name()}",
                                     daemon=True) for executor, group in zip(executors, groups)]
        for spinner in spinners:
            spinner.start()
        deadline = time.monotonic() + timeout_s
        grace = None
        while time.monotonic() < deadline and all(t.is_alive() for t in spinners):
            time.sleep(0.05)
            if until is not None and until():
                break
            done = camera.finished or camera.frames_published >= frames
            if done and len({r["seq"] for r in list(results)}) >= camera.frames_published:
                break
            if done and grace is None:
                grace = time.monotonic() + max(5.0, 4 * ex_deadline_s(params))
            if grace is not None and time.monotonic() > grace:
                break
        for executor in executors:
            executor.shutdown(timeout_sec=5.0)
        for spinner in spinners:
            spinner.join(timeout=30.0)
        gov, ex, pol = nodes[1], nodes[2], nodes[3]
        return summarise(camera.frames_published, results, pol.params["policy_mode"], gov.params["profile"],
                         model=ex.model.meta["model"], backend=gov.backend.name,
                         timing=("twin" if ex.engine.twin is not None else "measured"),
                         link=(dict(ex.link.stats) if ex.link is not None else {}))
    finally:
        for n in reversed(nodes):
            try:
                n.destroy_node()
            except Exception:  # noqa: BLE001 - keep tearing down
                pass
        try:
            rclpy.shutdown(context=context)
        except Exception:  # noqa: BLE001
            pass
        stop_child(child)


def comparison(ours: Dict[str, Any], theirs: Dict[str, Any]) -> str:
    """The same frames under two policies side by side, the saving as ratios, and where figures come from."""
    from dvfo_ros.core.io.tables import format_table as table
    rows = [[s["policy"], s["energy_j_per_frame"], s["latency_ms_mean"], s["latency_ms_p95"],
             "n/a" if s.get("accuracy") is None else f"{100 * s['accuracy']:.1f} %"] for s in (ours, theirs)]
    text = table(rows, ["policy", "energy J/frame", "latency mean ms", "latency p95 ms", "accuracy"],
                 floatfmt=("", ".4f", ".2f", ".2f", ""))
    e_ratio = ours["energy_j_per_frame"] / theirs["energy_j_per_frame"] if theirs["energy_j_per_frame"] else 0.0
    l_ratio = ours["latency_ms_mean"] / theirs["latency_ms_mean"] if theirs["latency_ms_mean"] else 0.0
    lines = [text, f"{ours['policy']} vs {theirs['policy']} on the same {ours['frames_in']} frames: "
             f"energy x{e_ratio:.3f} ({100 * (1 - e_ratio):+.1f} % saved), latency x{l_ratio:.3f}"]
    if ours.get("timing") == "twin":
        lines.append(f"energy and edge compute time come from the {ours['device_profile']} twin (backend "
                     f"{ours.get('backend')}, timing=twin), not a measurement; transfer and cloud times are measured")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="dvfo-pipeline", description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=60, help="camera frames to run (default 60)")
    ap.add_argument("--params-file", default=None, help="ROS 2 params file (default: config/pipeline.yaml)")
    ap.add_argument("--set", action="append", default=[], metavar="NODE.PARAM=VALUE",
                    help="override one parameter, e.g. policy.offload_ratio=0.25 (repeatable)")
    ap.add_argument("--report", default=None, help="write the summary as JSON to this file")
    ap.add_argument("--timeout-s", type=float, default=300.0, help="give up after this long (default 300)")
    ap.add_argument("--compare", default=None, metavar="POLICY",
                    help="then run the same frames under this policy (e.g. edge_only) and print both side by side")
    args = ap.parse_args(argv)
    if args.frames < 1:
        ap.error("--frames must be >= 1")
    # Demo defaults keep DDS on this machine; a robot's own settings win when already set.
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    os.environ.setdefault("FASTDDS_BUILTIN_TRANSPORTS", "SHM")
    from dvfo_ros.core.io.summary import format_table
    try:
        params = load_params(args.params_file or packaged_params_file())
        apply_sets(params, args.set)
        log = lambda s: print(f"[dvfo-pipeline] {s}", file=sys.stderr, flush=True)  # noqa: E731
        baseline_params = copy.deepcopy(params)
        summary = run(params, args.frames, args.timeout_s, log=log)
        baseline = None
        if args.compare:
            pol = baseline_params.setdefault("policy", {})
            pol["policy_mode"], pol["checkpoint"] = args.compare, ""
            baseline = run(baseline_params, args.frames, args.timeout_s, log=log)
    except (PipelineError, ValueError, OSError) as e:
        print(f"dvfo-pipeline: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    print(format_table(summary))
    if baseline is not None:
        summary["compared_with"] = baseline
        print(comparison(summary, baseline))
    if args.report:
        os.makedirs(os.path.dirname(os.path.abspath(args.report)), exist_ok=True)
        with open(args.report, "w") as f:
            json.dump(summary, f, indent=2)
    ok = summary["results_out"] == summary["frames_in"]
    if baseline is not None:
        ok = ok and baseline["results_out"] == baseline["frames_in"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
