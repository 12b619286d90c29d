#!/usr/bin/env python3
"""Train the DVFO collaborative artifacts (one file per model x data set) on this machine's CPU.

Why train instead of ship: a resnet18 with its edge and cloud tails is ~20 M parameters (~40 MB
even in fp16), far past "a few MB"; at 32 px input it trains on 2 CPU cores in minutes.

    python scripts/train_artifacts.py --quick        # setup: resnet18/digits in ~2 min, skipped if present
    python scripts/train_artifacts.py                # the full set behind the accuracy table
    python scripts/train_artifacts.py --models resnet18 --datasets digits --epochs 20 --force
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

FULL_EPOCHS = {"digits": 25.0, "scenes": 8.0}


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
    p.add_argument("--out-dir", default=None, help="where artifacts go (default: the first writable "
                   "of $DVFO_ARTIFACT_DIR, <repo>/artifacts/cache, ~/.cache/dvfo_ros/artifacts)")
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
    args = parse_args(argv)
    import torch
    from dvfo_ros.core.inference.collab import artifact_name, default_artifact_dir
    from dvfo_ros.core.inference.training import TrainConfig, train_collab
    torch.set_num_threads(max(1, args.threads))
    out_dir = args.out_dir or default_artifact_dir()
    os.makedirs(out_dir, exist_ok=True)
    jobs = [("resnet18", "digits")] if args.quick else [(m, d) for d in args.datasets for m in args.models]
    for model, dataset in jobs:
        path = os.path.join(out_dir, artifact_name(model, dataset))
        if os.path.isfile(path) and not (args.force or args.resume):
            print(f"[train] {path} exists; skipping (--force retrains)")
            continue
        if args.quick:
            cfg = TrainConfig(model=model, dataset=dataset, input_size=args.input_size, epochs=3.0,
                              time_budget_s=args.budget_s or 100.0, calib_images=256, max_val=500,
                              seed=args.seed)
        else:
            cfg = TrainConfig(model=model, dataset=dataset, input_size=args.input_size,
                              epochs=args.epochs or FULL_EPOCHS.get(dataset, 10.0), batch_size=args.batch_size,
                              lr=args.lr, time_budget_s=args.budget_s, seed=args.seed,
                              offload_sparsity=args.offload_sparsity,
                              init_artifact=path if args.resume and os.path.isfile(path) else None)
        t0 = time.monotonic()
        net, report = train_collab(cfg, progress=not args.no_progress, log=lambda s: print(f"[train] {s}"))
        net.save_artifact(path)
        with open(path[:-3] + ".train.json", "w") as fh:
            json.dump({"meta": net.meta, "report": report}, fh, indent=1, default=str)
        print(f"[train] wrote {path} ({os.path.getsize(path) / 1e6:.1f} MB) in {time.monotonic() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
