"""dvfo-accuracy: what offloading a share xi of the channels costs in accuracy and saves on the edge.

    dvfo-accuracy --model resnet18 --dataset scenes --json out.json --plot out.png

For each xi: top-1 accuracy of the fused edge+cloud answer (the cloud sees int8-dequantised
channels, exactly what the codec delivers), the loss against the same model run whole on the
edge (xi = 0), bytes on the wire over the raw float32 size of the offloaded channels (real
codec frames, header included), and the edge tail's multiply-accumulates and measured CPU time.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from typing import Any, Dict, List, Optional, Sequence

from dvfo_ros.core.errors import DvfoError

DEFAULT_XI = (0.0, 0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1.0)


class UsageError(ValueError, DvfoError):
    """Bad command-line input: one line, exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dvfo-accuracy", description=__doc__.splitlines()[0])
    p.add_argument("--model", default="resnet18",
                   help="zoo model: resnet18, mobilenet_v2, efficientnet_b0")
    p.add_argument("--dataset", default="scenes",
                   help="digits, scenes, or an ImageFolder / torchvision dataset directory")
    p.add_argument("--artifact", default=None,
                   help="trained artifact file (default: the one trained for model/dataset)")
    p.add_argument("--json", dest="json_path", default=None, help="write the rows as JSON here")
    p.add_argument("--plot", default=None, help="PNG path (default: accuracy_<model>_<dataset>.png)")
    p.add_argument("--no-plot", action="store_true", help="do not write a PNG")
    p.add_argument("--xi", type=float, nargs="+", default=list(DEFAULT_XI), help="offload ratios to measure")
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N test images")
    p.add_argument("--bytes-frames", type=int, default=100,
                   help="frames encoded with the real codec for the bytes ratio")
    p.add_argument("--timing-runs", type=int, default=30, help="edge-tail timing repetitions per xi (median)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (edge ms is this thread's CPU time: keep 1 for timings)")
    return p


def load_net(model: str, dataset: str, artifact: Optional[str]) -> Any:
    """(CollaborativeModel, path) of an artifact; a missing or mismatched one is a UsageError."""
    from dvfo_ros.core.inference.collab import ArtifactError
    from dvfo_ros.core.inference.spec import ModelSpec
    spec = ModelSpec(model=model, dataset=dataset, artifact=artifact or "").pinned()
    path = spec.artifact
    if path == "none":
        raise UsageError(f"no trained artifact for {model}/{os.path.basename(os.path.normpath(dataset))}; "
                         f"train one: python scripts/train_artifacts.py --models {model} --datasets {dataset}")
    try:
        net = spec.load()
    except ArtifactError as exc:
        raise UsageError(str(exc)) from None
    return net, path


def bytes_ratio(net: Any, feats: Any, xi: float) -> float:
    """Wire bytes / raw float32 bytes of the offloaded channels, summed over frames (real codec)."""
    from dvfo_ros.core.wire.codec import encode_features, raw_float32_bytes, wire_bytes
    wire = raw = 0
    for i in range(len(feats)):
        feat = feats[i:i + 1]
        _, off = net.split_channels(feat, xi)
        if len(off) == 0:
            continue
        frames = encode_features(feat[0, off].numpy(), off.numpy(), model=net.meta["model"],
                                 split=int(net.meta["split"]), seq=i, deadline=time.time() + 1.0,
                                 total_channels=net.channels, artifact_id=str(net.meta["artifact_id"]))
        wire += wire_bytes(frames)
        raw += raw_float32_bytes(frames)
    return wire / raw if raw else 0.0


def edge_ms(net: Any, feat: Any, xi: float, runs: int) -> float:
    """Median CPU time (this thread's, so other processes on a busy machine do not inflate it) of
    the edge tail on one frame at this xi; 0 when nothing stays. Run with one torch thread."""
    import torch
    keep, _ = net.split_channels(feat, xi)
    if len(keep) == 0:
        return 0.0
    x = feat[:, keep].contiguous()
    times = []
    with torch.no_grad():
        for r in range(runs + 3):
            t0 = time.thread_time_ns()
            net.edge_tail(x, keep)
            if r >= 3:  # warm-up runs excluded
                times.append((time.thread_time_ns() - t0) / 1e6)
    return statistics.median(times)


def measure(model: str, dataset: str, artifact: Optional[str] = None, xis: Sequence[float] = DEFAULT_XI,
            limit: Optional[int] = None, bytes_frames: int = 100, timing_runs: int = 30) -> Dict[str, Any]:
    """The accuracy table as data: {"model", "dataset", "artifact", "baseline", "rows": [...]}."""
    import numpy as np
    import torch
    from dvfo_ros.core.io.datasets import DatasetError, load_dataset
    from dvfo_ros.core.inference.training import head_features, tail_logits, to_tensor
    for xi in xis:
        if not 0.0 <= xi <= 1.0:
            raise UsageError(f"--xi values must be in [0, 1], got {xi}")
    net, path = load_net(model, dataset, artifact)
    try:
        images, labels, names = load_dataset(dataset, "test", int(net.meta["input_size"]))
    except DatasetError as exc:
        raise UsageError(str(exc)) from None
    if len(names) != int(net.meta["num_classes"]):
        raise UsageError(f"{dataset} has {len(names)} classes, "
                         f"the artifact was trained for {net.meta['num_classes']}")
    if limit:
        images, labels = images[:limit], labels[:limit]
    x, y = to_tensor(images), torch.from_numpy(np.array(labels, copy=True))
    all_feats = head_features(net, x)
    feats = all_feats[:max(1, bytes_frames)]

    def accuracy(xi: float) -> float:
        y_e, y_c = tail_logits(net, all_feats, xi)
        fused = net.fuse(y_e, y_c, net.fusion_weight(xi))
        return float((fused.argmax(1) == y).float().mean())

    baseline = accuracy(0.0)
    rows: List[Dict[str, Any]] = []
    from tqdm import tqdm
    for xi in tqdm(list(xis), desc=f"{model}/{os.path.basename(os.path.normpath(dataset))}", leave=False):
        acc = accuracy(xi)
        rows.append({"xi": float(xi), "accuracy": acc, "accuracy_loss": baseline - acc,
                     "lambda": net.fusion_weight(xi), "bytes_ratio": bytes_ratio(net, feats, xi),
                     "edge_flops": int(net.edge_tail_flops(xi)),
                     "edge_ms": edge_ms(net, feats[:1], xi, timing_runs)})
    return {"model": model, "dataset": dataset, "artifact": path, "artifact_id": net.meta["artifact_id"],
            "input_size": int(net.meta["input_size"]), "test_images": int(len(y)),
            "baseline": baseline, "rows": rows}


def format_table(result: Dict[str, Any]) -> str:
    from dvfo_ros.cli.common import format_table as table
    title = (f"{result['model']} on {result['dataset']} ({result['test_images']} test images, "
             f"{result['input_size']} px; whole-on-edge top-1 {result['baseline']:.4f}; "
             f"artifact {result['artifact_id']})")
    rows = [(r["xi"], r["accuracy"], r["accuracy_loss"], r["lambda"], r["bytes_ratio"], r["edge_flops"] / 1e6,
             r["edge_ms"]) for r in result["rows"]]
    return title + "\n" + table(rows, ("xi", "top1", "loss", "lambda", "bytes", "edge MMAC", "edge ms"),
                                floatfmt=(".3f", ".4f", "+.4f", ".2f", ".3f", ".2f", ".3f"))


def plot(result: Dict[str, Any], path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = result["rows"]
    xi = [r["xi"] for r in rows]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    ax1.plot(xi, [100 * r["accuracy"] for r in rows], "o-", label="collaborative (fused)")
    ax1.axhline(100 * result["baseline"], color="gray", ls="--", label="whole model on the edge")
    ax1.axhline(100 * (result["baseline"] - 0.01), color="red", ls=":", label="-1 % target")
    ax1.set_xlabel("offload ratio xi (share of channels sent to the cloud)")
    ax1.set_ylabel("top-1 accuracy (%)")
    ax1.set_title(f"{result['model']} / {os.path.basename(os.path.normpath(result['dataset']))}: accuracy")
    ax1.legend(loc="lower left")
    ax1.grid(alpha=0.3)
    full = max(rows[0]["edge_flops"], 1) if rows else 1
    ax2.plot(xi, [r["edge_flops"] / full for r in rows], "s-", label="edge tail MACs (x of xi=0)")
    t0 = max(rows[0]["edge_ms"], 1e-9) if rows else 1
    ax2.plot(xi, [r["edge_ms"] / t0 for r in rows], "^-", label="edge tail CPU ms (x of xi=0)")
    sent = [r for r in rows if r["xi"] > 0]  # nothing is sent at xi = 0
    ax2.plot([r["xi"] for r in sent], [r["bytes_ratio"] for r in sent], "d-", label="wire / raw float32 bytes")
    ax2.axhline(1 / 8, color="red", ls=":", label="1/8 bytes target")
    ax2.set_xlabel("offload ratio xi")
    ax2.set_title("edge cost and wire size")
    ax2.legend(loc="upper right")
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    import torch
    torch.set_num_threads(max(1, args.threads))
    try:
        if args.limit is not None and args.limit < 1:
            raise UsageError("--limit must be >= 1")
        result = measure(args.model, args.dataset, args.artifact, args.xi, args.limit,
                         args.bytes_frames, args.timing_runs)
    except UsageError as exc:
        print(f"dvfo-accuracy: error: {exc}", file=sys.stderr)
        return 2
    print(format_table(result))
    if args.json_path:
        with open(args.json_path, "w") as fh:
            json.dump(result["rows"], fh, indent=1)
        print(f"rows -> {args.json_path}")
    if not args.no_plot:
        path = args.plot or f"accuracy_{args.model}_{os.path.basename(os.path.normpath(args.dataset))}.png"
        plot(result, path)
        print(f"plot -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
