"""The long reliability runs: cloud killed and restarted under the composed pipeline, N robots
against one cloud, and the soak. Each returns a dict of measured numbers (python -m dvfo_ros.testing.reliability
prints and saves them). Also runnable as `python -m dvfo_ros.testing.reliability.runs load-client ...`: one
robot of the load figure, in its own process as a robot would be.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import threading
import time
from typing import Any, Callable, Dict, List, Optional

from dvfo_ros.testing.reliability.common import (REPO, CloudProcess, cloud_args, executor_params, free_port,
                                load_model, model_settings, percentile, proc_stats)

Log = Callable[[str], None]


def pipeline_params(ms: Dict[str, Any], endpoint: str, fps: float, deadline_ms: float,
                    offload: float = 0.5) -> Dict[str, Dict[str, Any]]:
    """The composed pipeline at `fps` with a static policy offloading `offload` of the channels."""
    return {
        "camera": {"source": "synthetic", "fps": float(fps), "width": 32, "height": 32},
        "governor": {"backend": "sim", "profile": "xavier_nx", "rate_hz": 10.0},
        "executor": dict(executor_params(ms), cloud_endpoint=endpoint, deadline_ms=float(deadline_ms),
                         offload_ratio=offload),
        "policy": {"policy_mode": "static", "offload_ratio": offload},
    }


def _quiet(_: str) -> None:
    pass


# ----------------------------------------------------------------------------- cloud killed + restarted

def restart_figure(seconds: float = 60.0, fps: float = 30.0, kill_at_s: Optional[float] = None,
                   down_s: Optional[float] = None, deadline_ms: float = 100.0, log: Log = print) -> Dict[str, Any]:
    """Composed pipeline at fps for `seconds`; the dvfo-cloud process is SIGKILLed at kill_at_s and
    a new one started down_s later on the same port. Every frame must still get its result."""
    from dvfo_ros.cli.pipeline import run
    ms = model_settings()
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    kill_at_s = seconds / 3 if kill_at_s is None else kill_at_s
    down_s = seconds / 6 if down_s is None else down_s
    state: Dict[str, Any] = {"cloud": CloudProcess(endpoint, cloud_args(ms)), "t_first": None, "t_kill": None,
                             "t_ready": None, "restart_startup_s": None, "error": ""}
    events: List[tuple] = []
    stop = threading.Event()

    def on_result(r: Dict[str, Any]) -> None:
        t = time.monotonic()
        if state["t_first"] is None:
            state["t_first"] = t
        events.append((t, bool(r["cloud_used"]), bool(r["fallback"])))

    def chaos() -> None:
        while state["t_first"] is None and not stop.wait(0.02):
            pass
        if state["t_first"] is None or stop.wait(max(0.0, state["t_first"] + kill_at_s - time.monotonic())):
            return
        state["cloud"].kill()
        state["t_kill"] = time.monotonic()
        log(f"restart: dvfo-cloud pid {state['cloud'].pid} killed with SIGKILL")
        if stop.wait(down_s):
            return
        try:
            new = CloudProcess(endpoint, cloud_args(ms))
        except RuntimeError as exc:
            state["error"] = str(exc)
            return
        assert new.t_ready is not None   # CloudProcess raises unless the server said it is ready
        state["cloud"], state["t_ready"] = new, new.t_ready
        state["restart_startup_s"] = new.t_ready - new.t_spawn
        log(f"restart: new dvfo-cloud pid {new.pid} ready {state['restart_startup_s']:.1f} s after spawn")

    frames = int(round(seconds * fps))
    thread = threading.Thread(target=chaos, daemon=True)
    thread.start()
    try:
        summary = run(pipeline_params(ms, endpoint, fps, deadline_ms), frames, timeout_s=3 * seconds + 120,
                      log=_quiet, on_result=on_result)
    finally:
        stop.set()
        thread.join(200)
        state["cloud"].kill()
    t_kill, t_ready = state["t_kill"], state["t_ready"]
    after = [e for e in events if t_ready is not None and e[0] >= t_ready]
    first_cloud = next((e[0] for e in after if e[1]), None)
    first_fb = next((e[0] for e in events if t_kill is not None and e[0] >= t_kill and e[2]), None)
    recovered_at = first_cloud if first_cloud is not None else None
    tail = [e for e in events if recovered_at is not None and e[0] > recovered_at]
    wall = events[-1][0] - events[0][0] if len(events) > 1 else 0.0
    return {
        "model": ms["label"], "fps_target": fps, "seconds": seconds, "deadline_ms": deadline_ms,
        "frames_in": summary["frames_in"], "results_out": summary["results_out"],
        "frames_lost": summary["frames_in"] - summary["results_out"],
        "fps_achieved": round((len(events) - 1) / wall, 2) if wall > 0 else 0.0,
        "cloud_used": summary["cloud_used"], "fallbacks": summary["fallbacks"],
        "fallbacks_while_down": sum(1 for e in events if t_kill and e[0] >= t_kill and (not t_ready or e[0] < t_ready)
                                    and e[2]),
        "fallbacks_after_recovery": sum(1 for e in tail if e[2]),
        "kill_to_first_fallback_s": round(first_fb - t_kill, 3) if first_fb and t_kill else None,
        "restart_startup_s": round(state["restart_startup_s"], 2) if state["restart_startup_s"] else None,
        "recovery_s": round(first_cloud - t_ready, 3) if first_cloud and t_ready else None,
        "killed": t_kill is not None, "restarted": t_ready is not None, "error": state["error"],
        "link": summary.get("link", {}),
    }


# ----------------------------------------------------------------------------- soak

def soak_figure(seconds: float = 600.0, fps: float = 30.0, deadline_ms: float = 100.0, sample_s: float = 1.0,
                plot: str = "", log: Log = print) -> Dict[str, Any]:
    """Composed pipeline at fps for `seconds` (this process) against a dvfo-cloud child: RSS and socket
    descriptors of both over time; growth is measured from the end of warm-up to the end."""
    from dvfo_ros.cli.pipeline import run
    ms = model_settings()
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    cloud = CloudProcess(endpoint, cloud_args(ms))
    gc.collect()
    rss_before, sockets_before = proc_stats()
    samples: List[tuple] = []
    stop = threading.Event()
    t0 = time.monotonic()

    def sample() -> None:
        while not stop.wait(sample_s):
            try:
                rss, socks = proc_stats()
                c_rss, c_socks = proc_stats(cloud.pid)
            except OSError:
                continue
            samples.append((time.monotonic() - t0, rss, socks, c_rss, c_socks))

    threading.Thread(target=sample, daemon=True).start()
    try:
        summary = run(pipeline_params(ms, endpoint, fps, deadline_ms), int(round(seconds * fps)),
                      timeout_s=2 * seconds + 120, log=_quiet)
    finally:
        stop.set()
        time.sleep(0.1)
    gc.collect()
    rss_after, sockets_after = proc_stats()
    cloud_alive = cloud.proc.poll() is None
    cloud.kill()
    run_s = samples[-1][0] if samples else 0.0
    warm_s = min(60.0, 0.2 * run_s)
    warm = [s for s in samples if s[0] >= warm_s]

    def growth(col: int) -> float:
        head = sorted(s[col] for s in warm[:5])
        tail = sorted(s[col] for s in warm[-5:])
        return 100.0 * (tail[len(tail) // 2] - head[len(head) // 2]) / head[len(head) // 2] if warm else 0.0

    if plot and samples:
        _plot_soak(samples, warm_s, plot)
    return {
        "model": ms["label"], "fps_target": fps, "seconds": seconds,
        "frames_in": summary["frames_in"], "results_out": summary["results_out"],
        "frames_lost": summary["frames_in"] - summary["results_out"], "fallbacks": summary["fallbacks"],
        "warmup_s": round(warm_s, 1),
        "rss_mb_start": round(warm[0][1] / 2 ** 20, 1) if warm else None,
        "rss_mb_end": round(warm[-1][1] / 2 ** 20, 1) if warm else None,
        "rss_growth_pct": round(growth(1), 2),
        "cloud_rss_growth_pct": round(growth(3), 2),
        "sockets_during": [min(s[2] for s in warm), max(s[2] for s in warm)] if warm else None,
        "cloud_sockets_during": [min(s[4] for s in warm), max(s[4] for s in warm)] if warm else None,
        "sockets_before_run": sockets_before, "sockets_after_run": sockets_after,
        "rss_mb_before_run": round(rss_before / 2 ** 20, 1), "rss_mb_after_run": round(rss_after / 2 ** 20, 1),
        "cloud_alive_at_end": cloud_alive, "plot": plot,
    }


def _plot_soak(samples: List[tuple], warm_s: float, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    t = [s[0] for s in samples]
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.5))
    ax[0].plot(t, [s[1] / 2 ** 20 for s in samples], label="pipeline (edge nodes)")
    ax[0].plot(t, [s[3] / 2 ** 20 for s in samples], label="dvfo-cloud")
    ax[0].axvline(warm_s, color="grey", ls=":", label="end of warm-up")
    ax[0].set(xlabel="time (s)", ylabel="RSS (MiB)", title="memory during the soak")
    ax[0].legend(fontsize=8)
    ax[1].plot(t, [s[2] for s in samples], label="pipeline")
    ax[1].plot(t, [s[4] for s in samples], label="dvfo-cloud")
    ax[1].set(xlabel="time (s)", ylabel="open sockets", title="socket descriptors")
    ax[1].legend(fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ----------------------------------------------------------------------------- N robots, one cloud

def load_figure(clients: int = 4, seconds: float = 60.0, fps: float = 30.0, deadline_ms: float = 100.0,
                offload: float = 0.5, log: Log = print) -> Dict[str, Any]:
    """`clients` robot processes (EdgeInference + CloudLink each) at fps against one dvfo-cloud process."""
    import tempfile
    ms = model_settings()
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    cloud = CloudProcess(endpoint, cloud_args(ms))
    tmp = tempfile.mkdtemp(prefix="dvfo-load-")
    procs: List[subprocess.Popen] = []
    try:
        for i in range(clients):
            out = os.path.join(tmp, f"client{i}.json")
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "dvfo_ros.testing.reliability.runs", "load-client", "--endpoint", endpoint,
                 "--seconds", str(seconds), "--fps", str(fps), "--deadline-ms", str(deadline_ms),
                 "--offload", str(offload), "--seed", str(i), "--out", out],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO))
        for p in procs:   # all loaded and connected, then all start together
            line = p.stdout.readline() if p.stdout else ""
            if line.strip() != "ready":
                raise RuntimeError(f"load client failed to start: {line.strip()!r}")
        for p in procs:
            assert p.stdin is not None   # Popen(stdin=PIPE)
            p.stdin.write("go\n")
            p.stdin.flush()
        for p in procs:
            p.wait(timeout=3 * seconds + 120)
        cloud_alive = cloud.proc.poll() is None
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        cloud.kill()
    per: List[Dict[str, Any]] = []
    for i in range(clients):
        with open(os.path.join(tmp, f"client{i}.json")) as f:
            per.append(json.load(f))
    recs = [r for c in per for r in c["records"]]
    answered = [r for r in recs if r["cloud_used"]]
    share = [100.0 * sum(r["cloud_used"] for r in c["records"]) / max(1, len(c["records"])) for c in per]
    return {
        "model": ms["label"], "clients": clients, "fps_target": fps, "seconds": seconds, "deadline_ms": deadline_ms,
        "offload_ratio": offload, "frames": len(recs), "answered": len(answered),
        "answered_pct": round(100.0 * len(answered) / max(1, len(recs)), 2),
        "answered_pct_per_client": [round(s, 1) for s in share],
        "frame_ms_p50": round(percentile([r["total_ms"] for r in recs], 50), 2),
        "frame_ms_p95": round(percentile([r["total_ms"] for r in recs], 95), 2),
        "cloud_rtt_ms_p50": round(percentile([r["rtt_ms"] for r in answered], 50), 2),
        "cloud_rtt_ms_p95": round(percentile([r["rtt_ms"] for r in answered], 95), 2),
        "fps_achieved_per_client": [round(len(c["records"]) / c["wall_s"], 2) for c in per],
        "late_start_frames": sum(1 for r in recs if r["lag_ms"] > 1000.0 / fps),
        "fallback_reasons": _count([r["reason"] for r in recs if r["reason"]]),
        "cloud_alive_at_end": cloud_alive,
    }


def _count(items: List[str]) -> Dict[str, int]:
    out: Dict[str, int] = {}
    for item in items:
        key = item.split(":")[0][:60]
        out[key] = out.get(key, 0) + 1
    return out


def load_client_main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m dvfo_ros.testing.reliability.runs load-client",
                                 description="one robot of the load figure")
    ap.add_argument("--endpoint", required=True)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--fps", type=float, default=30.0)
    ap.add_argument("--deadline-ms", type=float, default=100.0)
    ap.add_argument("--offload", type=float, default=0.5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    import numpy as np
    import torch
    torch.set_num_threads(1)
    from dvfo_ros.core.inference.edge import EdgeInference
    from dvfo_ros.core.wire.link import CloudLink
    model = load_model(model_settings()).eval()
    link = CloudLink(args.endpoint)
    link.wait_connected(10.0)
    engine = EdgeInference(model, link, args.deadline_ms)
    rng = np.random.default_rng(args.seed)
    images = [rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8) for _ in range(30)]
    for i in range(3):
        engine.process(images[i], 10 ** 9 + i, 0.0)   # warm-up, not counted, no offload
    print("ready", flush=True)
    sys.stdin.readline()
    n = int(round(args.seconds * args.fps))
    records: List[Dict[str, Any]] = []
    t0 = time.monotonic()
    for i in range(n):
        scheduled = t0 + i / args.fps
        time.sleep(max(0.0, scheduled - time.monotonic()))
        start = time.monotonic()
        r = engine.process(images[i % len(images)], i, args.offload)
        records.append({"lag_ms": (start - scheduled) * 1000.0, "total_ms": r.total_ms, "cloud_used": r.cloud_used,
                        "fallback": r.fallback, "reason": r.fallback_reason, "rtt_ms": r.transfer_ms + r.cloud_ms})
    wall = time.monotonic() - t0
    link.close()
    with open(args.out, "w") as f:
        json.dump({"records": records, "wall_s": wall, "link": link.stats}, f)
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "load-client":
        sys.exit(load_client_main(sys.argv[2:]))
    print("usage: python -m dvfo_ros.testing.reliability.runs load-client ... "
          "(run python -m dvfo_ros.testing.reliability for the figures)", file=sys.stderr)
    sys.exit(2)
