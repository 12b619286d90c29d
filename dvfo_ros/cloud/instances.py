"""Concurrent model instances of the cloud tail, and the measurement the server twin is fitted to.

An instance is its own copy of the collaborative model with its own batch runner (the runner holds a
per-model lock, so two batches on one copy would only take turns). ``InstancePool`` runs up to c
batches at once on worker threads (torch releases the GIL inside its kernels, so on a CPU they
use separate cores and on a GPU they overlap as separate streams of work).

``measure_tail`` is what ``dvfo-profile cloud`` runs: the real batch runner at each batch size on 1..c
instances running together, the median time of one batch, ready for ``ServerProfile.fit``.
"""
from __future__ import annotations

import copy
import queue
import statistics
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from dvfo_ros.cloud.batching import BatchRunner, Item, collab_batch_runner


def clone_model(model: Any) -> Any:
    """An independent copy of a collaborative model (weights and state), with locks of its own."""
    lock_type = type(threading.Lock())
    memo = {id(v): threading.Lock() for v in vars(model).values() if isinstance(v, lock_type)}
    return copy.deepcopy(model, memo)


def sample_items(model: Any, batch: int, offload_ratio: float = 0.5, seed: int = 0) -> List[Item]:
    """``batch`` requests as the edge sends them: a random channel subset of the split's map each."""
    rng = np.random.default_rng(seed)
    c, h, w = (int(v) for v in model.feature_shape)
    k = max(1, int(round(offload_ratio * c)))
    items: List[Item] = []
    for _ in range(batch):
        idx = np.sort(rng.permutation(c)[:k]).astype(np.int64)
        feat = np.maximum(rng.standard_normal((k, h, w)), 0).astype(np.float32)
        items.append(({"shape": [k, h, w]}, feat, idx))
    return items


class InstancePool:
    """``size`` copies of the cloud tail, each behind one worker thread; submit a batch, get a callback."""

    def __init__(self, model: Any, device: str, size: int, warmup: bool = True) -> None:
        self.runners: List[BatchRunner] = []
        for i in range(max(1, int(size))):
            m = model if i == 0 else clone_model(model)
            runner, _ = collab_batch_runner(m, device)
            if warmup:                 # the first calls of a fresh copy are slow; no request should pay them
                for b in (1, 4):
                    runner(sample_items(model, b, seed=b))
            self.runners.append(runner)
        self._jobs: "queue.Queue[Optional[Tuple[List[Item], Callable[[Any, float], None]]]]" = queue.Queue()
        self._threads = [threading.Thread(target=self._work, args=(r,), daemon=True, name=f"dvfo-tail-{i}")
                         for i, r in enumerate(self.runners)]
        self.busy = 0
        self._lock = threading.Lock()
        for t in self._threads:
            t.start()

    @property
    def size(self) -> int:
        return len(self.runners)

    def submit(self, items: List[Item], done: Callable[[Any, float], None]) -> None:
        """Run ``items`` as one batch on a free instance; ``done(outputs or exception, seconds)`` from its thread."""
        with self._lock:
            self.busy += 1
        self._jobs.put((items, done))

    def _work(self, runner: BatchRunner) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            items, done = job
            t0 = time.perf_counter()
            try:
                out: Any = runner(items)
            except Exception as exc:  # noqa: BLE001 - handed to the caller, which answers each request
                out = exc
            with self._lock:
                self.busy -= 1
            done(out, time.perf_counter() - t0)

    def close(self) -> None:
        for _ in self._threads:
            self._jobs.put(None)
        for t in self._threads:
            t.join(timeout=5.0)


def measure_tail(model: Any, device: str, batches: Sequence[int] = tuple(range(1, 9)),
                 instances: Sequence[int] = (1, 2, 3, 4), repeats: int = 10, warmup: int = 2,
                 progress: Optional[Callable[[str], None]] = None) -> Dict[Tuple[int, int], float]:
    """Median ms of one batch of B requests while c instances each run such batches back to back."""
    import torch

    model = model.to(device).eval()
    copies = [model] + [clone_model(model) for _ in range(max(instances) - 1)]
    runners = [collab_batch_runner(m, device)[0] for m in copies]
    table: Dict[Tuple[int, int], float] = {}
    for c in instances:
        for b in batches:
            items = sample_items(model, b, seed=b)
            times: List[float] = []
            lock = threading.Lock()
            barrier = threading.Barrier(c)

            def loop(runner: BatchRunner) -> None:
                for _ in range(warmup):
                    runner(items)
                barrier.wait()
                for _ in range(repeats):
                    t0 = time.perf_counter()
                    runner(items)
                    if device.startswith("cuda"):
                        torch.cuda.synchronize()
                    with lock:
                        times.append((time.perf_counter() - t0) * 1000.0)

            threads = [threading.Thread(target=loop, args=(runners[i],)) for i in range(c)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            table[(b, c)] = statistics.median(times)
            if progress is not None:
                progress(f"B={b} c={c}: {table[(b, c)]:.2f} ms")
    return table
