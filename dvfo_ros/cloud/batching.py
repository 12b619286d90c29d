"""BCEdge-style dynamic batching for the cloud server: requests for the same network and feature
shape that arrive within a few milliseconds run as one batch, bounded by their deadlines.

Why: a cloud GPU serving several robots spends most of a single-frame tail on kernel launches;
one batch of B frames costs little more than one frame. BCEdge (Zhang et al. 2023) schedules
batch size against latency SLOs; here the window closes early enough that the earliest deadline
in the batch is still met given the measured batch run time (an EWMA per batch size).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Hashable, List, Optional, Tuple

import numpy as np

Item = Tuple[Dict[str, Any], np.ndarray, np.ndarray]          # (header, feat [k,h,w], channel_idx [k])
BatchRunner = Callable[[List[Item]], List[np.ndarray]]        # items of one batch key -> logits each

log = logging.getLogger("dvfo_ros.cloud")


def default_batch_key(header: Dict[str, Any]) -> Hashable:
    """Requests that may share one batch: same network and the same [k,h,w] (same offload share)."""
    return (header["model"], header["split"], header["artifact_id"], tuple(header["shape"]))


def looping_batch_runner(runner: Callable[[Dict[str, Any], np.ndarray, np.ndarray], np.ndarray]) -> BatchRunner:
    """Batch runner that runs a per-request runner once per item (no speed-up, same results)."""
    def run(items: List[Item]) -> List[np.ndarray]:
        return [runner(h, f, i) for h, f, i in items]
    return run


@dataclass
class BatchPolicy:
    """How long to hold a batch open: at most window_s, and never past what the deadlines allow.

    Requests that queue up while a batch runs are batched for free (the server drains the queue);
    holding the batch open costs every request in it latency, so the window is used only while
    several clients are active AND requests arrive faster than one per window (an EWMA of
    inter-arrival gaps): a lone robot, which waits for each reply, never waits for a batch.
    """

    max_batch: int = 8
    window_s: float = 0.003
    ewma: float = 0.2
    run_s: Dict[int, float] = field(default_factory=dict)  # measured batch run time per batch size
    gap_s: float = float("inf")                             # EWMA of request inter-arrival time
    last_arrival: Optional[float] = None
    active_s: float = 1.0                                   # a client counts as active this long
    clients: Dict[Hashable, float] = field(default_factory=dict)  # client -> last arrival

    def note_arrival(self, now_mono: float, client: Hashable = None) -> None:
        if self.last_arrival is not None:
            gap = now_mono - self.last_arrival
            self.gap_s = gap if self.gap_s == float("inf") else (1 - self.ewma) * self.gap_s + self.ewma * gap
        self.last_arrival = now_mono
        self.clients[client] = now_mono
        if len(self.clients) > 64:
            cutoff = now_mono - self.active_s
            self.clients = {c: t for c, t in self.clients.items() if t >= cutoff}

    def worth_waiting(self, now_mono: Optional[float] = None) -> bool:
        if self.window_s <= 0 or self.gap_s >= self.window_s or self.last_arrival is None:
            return False
        now = self.last_arrival if now_mono is None else now_mono
        return sum(1 for t in self.clients.values() if now - t <= self.active_s) >= 2

    def expected_run_s(self, size: int) -> float:
        known = [s for s in self.run_s if s <= size]
        return self.run_s[max(known)] * size / max(known) if known else 0.0

    def close_by(self, opened_at: float, earliest_deadline_wall: float, now_wall: float,
                 now_mono: float, size: int) -> float:
        """Monotonic time at which the open batch must run (earliest deadline minus its run time)."""
        slack = earliest_deadline_wall - now_wall - self.expected_run_s(size + 1)
        return min(opened_at + self.window_s, now_mono + max(0.0, slack))

    def record(self, size: int, seconds: float) -> None:
        old = self.run_s.get(size)
        self.run_s[size] = seconds if old is None else (1 - self.ewma) * old + self.ewma * seconds


def collab_batch_runner(model: Any, device: str) -> Tuple[BatchRunner, Callable[[Dict[str, Any]], Hashable]]:
    """(batch runner, batch key) for a CollaborativeModel's cloud tail.

    Frames offload different channel subsets, so a batch scatters each frame's channels into a
    zero map of all C channels and runs the full-width cloud tail once at the batch's xi level;
    an entry conv reading zeros on the missing channels computes exactly what it computes on the
    subset. If the model lacks the slimmable internals (or the check in `verify_batching` fails),
    the runner falls back to one cloud_tail call per frame.
    """
    import torch

    channels = int(model.channels)
    can_scatter = all(hasattr(model, a) for a in ("cloud_net", "cloud_state", "_cloud_level", "_cloud_lock"))

    def one(item: Item) -> np.ndarray:
        _, feat, idx = item
        with torch.inference_mode():
            out = model.cloud_tail(torch.from_numpy(feat).unsqueeze(0).to(device), torch.from_numpy(idx).to(device))
        return out[0].float().cpu().numpy()

    def run(items: List[Item]) -> List[np.ndarray]:
        if len(items) == 1 or not can_scatter:
            return [one(item) for item in items]
        k, h, w = items[0][1].shape
        with torch.inference_mode():
            x = torch.zeros(len(items), channels, h, w, device=device)
            for b, (_, feat, idx) in enumerate(items):
                x[b, torch.from_numpy(idx).to(device)] = torch.from_numpy(feat).to(device)
            with model._cloud_lock:
                model.cloud_state.level = model._cloud_level(k)
                model.cloud_state.keep_idx = None
                out = model.cloud_net(x)
        return list(out.float().cpu().numpy())

    def key(header: Dict[str, Any]) -> Hashable:
        return default_batch_key(header)

    return run, key


def verify_batching(model: Any, device: str, batch: int = 3, offload_ratio: float = 0.5,
                    seed: int = 0) -> float:
    """Largest |batched - one-by-one| logit difference on random maps with different subsets."""
    import torch

    runner, _ = collab_batch_runner(model, device)
    c, h, w = (int(v) for v in model.feature_shape)
    k = max(1, int(round(offload_ratio * c)))
    gen = torch.Generator().manual_seed(seed)
    items: List[Item] = []
    for _ in range(batch):
        idx = torch.randperm(c, generator=gen)[:k].numpy()
        feat = torch.relu(torch.randn(k, h, w, generator=gen)).numpy()
        items.append(({"shape": [k, h, w]}, feat, idx))
    batched = runner(items)
    single = [runner([item])[0] for item in items]
    return float(max(np.abs(a - b).max() for a, b in zip(batched, single)))


def check_batching(model: Any, device: str, tolerance: float = 1e-3) -> Optional[str]:
    """None if batched and per-frame results agree, else a one-line reason to disable batching."""
    try:
        diff = verify_batching(model, device)
    except Exception as exc:  # noqa: BLE001 - any failure simply means: do not batch this model
        return f"batched cloud tail failed ({type(exc).__name__}: {exc})"
    if diff > tolerance:
        return f"batched cloud tail differs from per-frame by {diff:.2g} (> {tolerance:g})"
    return None
