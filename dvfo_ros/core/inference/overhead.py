"""What the pipeline costs over running the network yourself: the reference loop a user would write
without dvfo_ros, and the measurements `dvfo-bench overhead` makes of every row (ROS-free; the rows
that need ROS, the composed and the launched pipeline, live in dvfo_ros.cli.bench_overhead_ros).

Every row meets the same frames (the camera's synthetic source, same size and seed) and is measured
the same way:
- latency: from the frame's camera stamp (its tick at ``fps``) to its result, mean and p95;
- throughput: results per second with frames offered faster than they can be taken (unthrottled);
- CPU time per frame: user + system time of every process the row runs in, over the frames counted.
"""
from __future__ import annotations

import os
import time
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import torch

from dvfo_ros.core.inference.collab import IMAGENET_MEAN, IMAGENET_STD

# (seq, camera stamp ns, received ns, CPU s of the row's processes then, CPU s of the cloud server then)
# (seq, camera stamp ns, received ns, CPU s so far, cloud CPU s so far, the edge core's own ms for the frame)
Arrival = Tuple[int, int, int, float, float, float]
Progress = Optional[Callable[[str, Optional[int], str], Any]]


def bench_frames(size: int, count: int, seed: int = 0) -> List[np.ndarray]:
    """The first ``count`` frames of the camera's synthetic source at ``size`` x ``size`` (what the
    camera node publishes with source=synthetic, the same width, height and seed)."""
    from dvfo_ros.core.io.camera import synthetic_frames
    gen = synthetic_frames(size, size, seed)
    return [next(gen)[0] for _ in range(count)]


class PlainLoop:
    """The network as a user runs it without dvfo_ros: torchvision to_tensor + normalize, forward,
    softmax, top-k. Same architecture, classes and weight seed as the collaborative model."""

    def __init__(self, model: str, num_classes: int, seed: int = 0, top_k: int = 5) -> None:
        from dvfo_ros.core.inference.models import build_model
        self.net = build_model(model, num_classes=num_classes, seed=seed).eval()
        self.top_k = top_k

    @torch.inference_mode()
    def __call__(self, rgb: np.ndarray) -> Tuple[List[int], List[float]]:
        import torchvision.transforms.functional as TF
        x = TF.normalize(TF.to_tensor(rgb), IMAGENET_MEAN, IMAGENET_STD)[None]
        probs = torch.softmax(self.net(x)[0], dim=0)
        top = torch.topk(probs, min(self.top_k, probs.numel()))
        return top.indices.tolist(), top.values.tolist()


def _bar(progress: Progress, desc: str, total: int) -> Any:
    return progress(desc, total, "frame") if progress is not None else None


def run_loop(fns: Sequence[Callable[[np.ndarray, int], Any]], frames: Sequence[np.ndarray], warmup: int,
             fps: float, cloud_cpu: Callable[[], float] = lambda: 0.0, progress: Progress = None,
             desc: str = "") -> List[List[Arrival]]:
    """Each ``fn(frame, seq)`` over the frames in this process, interleaved frame by frame (in turn, the
    order reversed every other frame), so that a machine whose speed drifts during the run slows them
    alike; one arrival list per fn. ``fps`` > 0: each call has its own tick (1 / fps after the one
    before) and starts then, or when the call before is done if that is later (as a camera frame waits
    in the queue), and is stamped at its tick; ``fps`` <= 0: back to back, stamped when it starts. The
    first ``warmup`` frames run back to back and are returned too (seq < warmup).

    CPU time and, back to back, the time a result is received run on each fn's own clock (its calls
    only), so that per-fn throughput and CPU per frame are what each would show alone."""
    out: List[List[Arrival]] = [[] for _ in fns]
    own_cpu = [0.0] * len(fns)
    own_ns = [time.time_ns()] * len(fns)
    bar = _bar(progress, desc, len(frames) * len(fns))
    t0, slot = None, 0
    for i, frame in enumerate(frames):
        order = list(range(len(fns))) if i % 2 == 0 else list(range(len(fns)))[::-1]
        for k in order:
            now = time.perf_counter()
            if i >= warmup and fps > 0:
                if t0 is None:
                    t0 = now
                tick = t0 + slot / fps
                slot += 1
                if tick > now:
                    time.sleep(tick - now)
                start = tick
            else:
                start = now
            cpu0 = time.process_time()
            fns[k](frame, i)
            done = time.perf_counter()
            own_cpu[k] += time.process_time() - cpu0
            if fps > 0 and i >= warmup:
                received_ns = time.time_ns()
                stamp_ns = received_ns - int((done - start) * 1e9)
            else:
                own_ns[k] += int((done - start) * 1e9)
                received_ns = stamp_ns = own_ns[k]
            out[k].append((i, stamp_ns, received_ns, own_cpu[k], cloud_cpu(), (done - start) * 1e3))
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    return out


def _window(arrivals: Sequence[Arrival], counted: Sequence[int]) -> Tuple[float, float, int]:
    """(CPU s, cloud CPU s, frames) from the arrival before the first counted one (or the first counted
    one) to the last counted one."""
    if not counted:
        return 0.0, 0.0, 0
    first, last = counted[0], counted[-1]
    start = first - 1 if first > 0 else first
    frames = last - start
    if frames <= 0:
        return 0.0, 0.0, 0
    return arrivals[last][3] - arrivals[start][3], arrivals[last][4] - arrivals[start][4], frames


def paced_stats(arrivals: Sequence[Arrival], warmup: int, frames: int) -> Dict[str, Any]:
    """Latency (camera stamp -> result) and CPU per frame over frames warmup .. warmup + frames - 1, in
    arrival order; each seq counts once, frames that never arrived are counted as missing."""
    seen: set = set()
    counted = []
    for k, a in enumerate(arrivals):
        if warmup <= a[0] < warmup + frames and a[0] not in seen:
            seen.add(a[0])
            counted.append(k)
    lat = np.array([(arrivals[k][2] - arrivals[k][1]) / 1e6 for k in counted], dtype=float)
    core = np.array([arrivals[k][5] for k in counted], dtype=float)
    cpu, cloud, n = _window(arrivals, counted)
    return {"frames": len(counted), "missing": frames - len(counted),
            "latency_ms_mean": float(lat.mean()) if len(lat) else None,
            "latency_ms_p50": float(np.percentile(lat, 50)) if len(lat) else None,
            "latency_ms_p95": float(np.percentile(lat, 95)) if len(lat) else None,
            "cpu_ms_per_frame": 1000.0 * cpu / n if n else None,
            "cloud_cpu_ms_per_frame": 1000.0 * cloud / n if n else None,
            # where the time goes: the edge core's own time (EdgeInference.process, the executor's total_ms)
            # and the rest of stamp -> result (camera, DDS, callbacks, conversion, publishing, waiting)
            "core_ms_mean": float(core.mean()) if len(core) else None,
            "outside_core_ms_mean": float((lat - core).mean()) if len(lat) else None}


def throughput_stats(arrivals: Sequence[Arrival], warmup: int) -> Dict[str, Any]:
    """Results per second and CPU per frame from the arrivals after the first ``warmup`` (in arrival
    order, whatever their seq: an unthrottled camera's frames are dropped when the executor is busy)."""
    a = list(arrivals)[warmup:]
    if len(a) < 2 or a[-1][2] <= a[0][2]:
        return {"throughput_fps": None, "cpu_ms_per_frame_unthrottled": None, "frames_unthrottled": len(a)}
    n = len(a) - 1
    return {"throughput_fps": n / ((a[-1][2] - a[0][2]) / 1e9),
            "cpu_ms_per_frame_unthrottled": 1000.0 * (a[-1][3] - a[0][3]) / n, "frames_unthrottled": len(a)}


RATIOS = (("latency_mean_x", "latency_ms_mean"), ("latency_p95_x", "latency_ms_p95"),
          ("throughput_x", "throughput_fps"), ("cpu_x", "cpu_ms_per_frame"))


def add_ratios(rows: Iterable[Dict[str, Any]], reference: Dict[str, Any]) -> None:
    """Each row's figures over the reference's (the plain loop): latency and CPU > 1 = the row costs
    more, throughput < 1 = the row is slower. None where either side has no figure."""
    for row in rows:
        for key, field in RATIOS:
            mine, ref = row.get(field), reference.get(field)
            row[key] = float(mine) / float(ref) if mine is not None and ref else None


# ---- CPU time of other processes (Linux /proc) ---------------------------------------------------
_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def pid_cpu_s(pid: int) -> float:
    """User + system CPU seconds of one live process (0 when it is gone or /proc is not there)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _TICK      # utime, stime (fields 14, 15)
    except (OSError, IndexError, ValueError):
        return 0.0


def descendants(root: int) -> List[int]:
    """``root`` and every live process below it (from /proc; [root] where /proc is not there)."""
    children: Dict[int, List[int]] = {}
    try:
        names = os.listdir("/proc")
    except OSError:
        return [root]
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                ppid = int(f.read().rsplit(b")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def pids_cpu_s(pids: Iterable[int]) -> float:
    return float(sum(pid_cpu_s(p) for p in pids))
