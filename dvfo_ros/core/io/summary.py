"""The pipeline's summary: what a user reads after a run (and what --report writes as JSON)."""
from __future__ import annotations

from collections import Counter
from typing import Any, Dict, Iterable, List

import numpy as np

from dvfo_ros.core.io.tables import format_table as _table

KEYS = ("frames_in", "results_out", "errors", "fallbacks", "latency_ms_mean", "latency_ms_p95", "energy_j_per_frame",
        "bytes_sent_per_frame", "policy", "device_profile")


def summarise(frames_in: int, results: Iterable[Dict[str, Any]], policy: str, device_profile: str,
              **extra: Any) -> Dict[str, Any]:
    """results: one dict per InferenceResult (seq, total_ms, energy_j, bytes_sent, fallback, cloud_used, label,
    correct, error, error_reason). Error frames (not classified: a bad encoding, corrupt data) are counted, with
    their reasons, and left out of the latency, energy and accuracy figures."""
    by_seq: Dict[int, Dict[str, Any]] = {}
    for r in results:
        by_seq.setdefault(int(r["seq"]), r)
    answered: List[Dict[str, Any]] = list(by_seq.values())
    errors = [r for r in answered if r.get("error")]
    reasons = Counter(str(r.get("error_reason") or "unknown") for r in errors)
    rs = [r for r in answered if not r.get("error")]
    lat = np.array([r["total_ms"] for r in rs], dtype=float)
    labelled = [r for r in rs if r.get("label", -1) >= 0]
    out: Dict[str, Any] = {
        "frames_in": int(frames_in),
        "results_out": len(answered),
        "errors": len(errors),
        "error_reasons": dict(reasons.most_common()),
        "fallbacks": int(sum(bool(r["fallback"]) for r in rs)),
        "cloud_used": int(sum(bool(r.get("cloud_used")) for r in rs)),
        "latency_ms_mean": float(lat.mean()) if len(lat) else 0.0,
        "latency_ms_p95": float(np.percentile(lat, 95)) if len(lat) else 0.0,
        "energy_j_per_frame": float(np.mean([r["energy_j"] for r in rs])) if rs else 0.0,
        "bytes_sent_per_frame": float(np.mean([r["bytes_sent"] for r in rs])) if rs else 0.0,
        "offload_ratio_mean": float(np.mean([r.get("offload_ratio", 0.0) for r in rs])) if rs else 0.0,
        "accuracy": (float(np.mean([bool(r["correct"]) for r in labelled])) if labelled else None),
        "labelled_frames": len(labelled),
        "policy": policy,
        "device_profile": device_profile,
        # the cut each frame ran at, most used first: the executor's DVFO split, or a policy's whole-layer cuts
        "splits": {str(k): n for k, n in
                   Counter(int(r["split_index"]) for r in rs if "split_index" in r).most_common()},
        # where each frame ran (a policy's target, mdp.TARGETS), most used first; '' frames (DVFO's split) left out
        "targets": dict(Counter(str(r["target"]) for r in rs if r.get("target")).most_common()),
    }
    out.update(extra)
    return out


def error_cell(s: Dict[str, Any]) -> str:
    """'0', or the count and the commonest reason ('3: unsupported encoding ...'), cut to fit a table."""
    n = int(s.get("errors", 0))
    if not n:
        return "0"
    reason = next(iter(s.get("error_reasons") or {"unknown": n}))     # most common first
    return f"{n}: {reason if len(reason) <= 48 else reason[:45] + '...'}"


def format_table(s: Dict[str, Any]) -> str:
    """The summary as the boxed two-column table dvfo-pipeline prints."""
    rows = [
        ("frames in", s["frames_in"]), ("results out", s["results_out"]),
        ("error frames (not classified)", error_cell(s)),
        ("cloud fallbacks", s["fallbacks"]), ("frames fused with cloud", s.get("cloud_used", 0)),
        ("latency mean (ms)", f"{s['latency_ms_mean']:.2f}"), ("latency p95 (ms)", f"{s['latency_ms_p95']:.2f}"),
        ("energy per frame (J)", f"{s['energy_j_per_frame']:.4f}"),
        ("bytes offloaded per frame", f"{s['bytes_sent_per_frame']:.0f}"),
        ("mean offload ratio xi", f"{s.get('offload_ratio_mean', 0.0):.2f}"),
        ("accuracy (labelled frames)", "n/a" if s.get("accuracy") is None
         else f"{100 * s['accuracy']:.1f}% of {s['labelled_frames']}"),
        ("policy", s["policy"]), ("device profile", s["device_profile"]),
    ]
    if s.get("splits"):
        rows.append(("split (frames)", ", ".join(f"{k} ({n})" for k, n in list(s["splits"].items())[:4])))
    if s.get("targets"):
        rows.append(("target (frames)", ", ".join(f"{k} ({n})" for k, n in s["targets"].items())))
    for k in ("model", "backend", "timing"):
        if k in s:
            rows.append((k, s[k]))
    lines = _table(((k, str(v)) for k, v in rows), fmt="psql", align=("left", "right"), numparse=False).splitlines()
    title = "dvfo_ros pipeline summary"
    return "\n".join([lines[0], f"| {title:<{len(lines[0]) - 4}} |", *lines])
