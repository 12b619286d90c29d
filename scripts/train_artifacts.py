#!/usr/bin/env python3
"""Train the DVFO collaborative artifacts (one file per model x data set) on this machine's CPU.

The full set behind the accuracy table, one `dvfo-artifact train` per model x data set (one
artifact: `dvfo-artifact train --model M --dataset D`, or `python -m dvfo_ros.cli.artifact`).

Why train instead of ship: a resnet18 with its edge and cloud tails is ~20 M parameters (~40 MB
even in fp16), far past "a few MB"; at 32 px input it trains on 2 CPU cores in minutes.

    python scripts/train_artifacts.py --quick        # setup: resnet18/digits in ~2 min, skipped if present
    python scripts/train_artifacts.py                # the full set behind the accuracy table
    python scripts/train_artifacts.py --models resnet18 --datasets digits --epochs 20 --force
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true",
                   help="only resnet18/digits under a ~100 s training budget (what setup runs)")
    p.add_argument("--models", nargs="+", default=["resnet18", "mobilenet_v2"], help="zoo models to train")
    p.add_argument("--datasets", nargs="+", default=["scenes", "digits"],
                   help="digits, scenes, or ImageFolder / torchvision dataset directories")
    p.add_argument("--epochs", type=float, default=None, help="epochs (default: 25 digits, 8 scenes)")
    p.add_argument("--input-size", type=int, default=32, help="image side in px the models train at")
    p.add_argument("--budget-s", type=float, default=None, help="training time budget per model (s)")
    p.add_argument("--out-dir", default=None, help="where artifacts go (default: $DVFO_ARTIFACT_DIR, "
                   "else $XDG_CACHE_HOME/dvfo_ros/artifacts, as dvfo-artifact train)")
    p.add_argument("--batch-size", type=int, default=64, help="training batch size")
    p.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (AdamW, cosine)")
    p.add_argument("--offload-sparsity", type=float, default=0.0,
                   help="L1 weight on the channels offloaded at each step (sparser wire maps, fewer bytes)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--seed", type=int, default=0, help="training seed")
    p.add_argument("--force", action="store_true", help="retrain even when the artifact exists")
    p.add_argument("--resume", action="store_true", help="continue training from the existing artifact")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p.parse_args(argv)


def main(argv=None) -> int:
    """Each job is `dvfo-artifact train` (dvfo_ros.core.inference.artifacts.train_artifact)."""
    args = parse_args(argv)
    import torch
    from dvfo_ros.core.inference.artifacts import ArtifactJob, train_artifact
    torch.set_num_threads(max(1, args.threads))
    jobs = [("resnet18", "digits")] if args.quick else [(m, d) for d in args.datasets for m in args.models]
    for model, dataset in jobs:
        job = ArtifactJob(model=model, dataset=dataset, quick=args.quick, epochs=args.epochs,
                          budget_s=args.budget_s, input_size=args.input_size, batch_size=args.batch_size,
                          lr=args.lr, offload_sparsity=args.offload_sparsity, seed=args.seed,
                          resume=args.resume and not args.quick)
        train_artifact(job, out_dir=args.out_dir, force=args.force, progress=not args.no_progress,
                       log=lambda s: print(f"[train] {s}", flush=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
