"""dvfo-artifact: train and list the trained model artifacts the executor and dvfo-cloud load.

    dvfo-artifact train --model resnet18 --dataset digits          # ~2 min on 2 CPU cores
    dvfo-artifact train --model resnet18 --dataset digits --quick  # what `make setup` runs
    dvfo-artifact list
    dvfo-artifact import --arch resnet18 --state-dict my.pt --labels labels.txt --dataset my_images \
        --out my_resnet18.pt                                       # your own model (TorchScript: --torchscript)
    python -m dvfo_ros.cli.artifact ...                            # the same from a colcon install

Artifacts go to a per-user location every install searches: $DVFO_ARTIFACT_DIR, else
$XDG_CACHE_HOME/dvfo_ros/artifacts (default ~/.cache/dvfo_ros/artifacts); --out-dir overrides.
"""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from dvfo_ros.cli.common import cli_main, error, format_table

PROG = "dvfo-artifact"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train one artifact (model x data set) into the per-user location")
    t.add_argument("--model", default="resnet18", help="zoo model (resnet18, mobilenet_v2, efficientnet_b0, ...)")
    t.add_argument("--dataset", default="digits", help="digits, scenes, or an ImageFolder / torchvision directory")
    t.add_argument("--quick", action="store_true",
                   help="setup's preset: 3 epochs under a ~100 s budget, small calibration")
    t.add_argument("--steps", type=int, default=None, help="optimiser steps (overrides --epochs)")
    t.add_argument("--epochs", type=float, default=None, help="epochs (default: 25 digits, 8 scenes, 10 else)")
    t.add_argument("--budget-s", type=float, default=None, help="training time budget (s)")
    t.add_argument("--input-size", type=int, default=32, help="image side in px the model trains at")
    t.add_argument("--batch-size", type=int, default=64, help="training batch size")
    t.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (AdamW, cosine)")
    t.add_argument("--offload-sparsity", type=float, default=0.0,
                   help="L1 weight on the channels offloaded at each step (sparser wire maps)")
    t.add_argument("--max-train", type=int, default=None, help="use only the first N training images")
    t.add_argument("--max-val", type=int, default=None, help="choose lambda on the first N validation images")
    t.add_argument("--calib-images", type=int, default=None, help="images for the BatchNorm calibration")
    t.add_argument("--seed", type=int, default=0, help="training seed")
    t.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    t.add_argument("--out-dir", default=None, help="where the artifact goes (default: $DVFO_ARTIFACT_DIR, "
                   "else $XDG_CACHE_HOME/dvfo_ros/artifacts)")
    t.add_argument("--force", action="store_true", help="retrain even when the artifact exists")
    t.add_argument("--resume", action="store_true", help="continue training from the existing artifact")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    sub.add_parser("list", help="the artifacts every install finds, in search order")
    i = sub.add_parser("import", help="your own model: a zoo architecture + its weights + a labels file")
    i.add_argument("--arch", required=True, help="torchvision architecture of the weights (resnet18, mobilenet_v2, "
                   "efficientnet_b0)")
    w = i.add_mutually_exclusive_group(required=True)
    w.add_argument("--state-dict", help="torch.save(model.state_dict()) file (loaded weights-only)")
    w.add_argument("--torchscript", help="TorchScript file of the same architecture (its weights are read; it is "
                   "cut as the eager architecture)")
    i.add_argument("--labels", required=True, help="class names, one per line, in the model's output order")
    i.add_argument("--out", required=True, help="artifact file to write (.pt); the executor's 'artifact' parameter")
    i.add_argument("--dataset", default="", help="ImageFolder whose class folders are the labels: trains the "
                   "attention, cloud tail and lambda (without it offloading stays untuned; xi = 0 is your model)")
    i.add_argument("--input-size", type=int, default=224, help="image side in px the model runs at")
    i.add_argument("--split", type=int, default=None, help="stage index of the cut (default: the model's)")
    i.add_argument("--steps", type=int, default=None, help="optimiser steps (overrides --epochs)")
    i.add_argument("--epochs", type=float, default=None, help="epochs on --dataset (default 3)")
    i.add_argument("--budget-s", type=float, default=None, help="training time budget (s)")
    i.add_argument("--batch-size", type=int, default=32, help="training batch size")
    i.add_argument("--lr", type=float, default=2e-4, help="peak learning rate (a fine-tune of your weights)")
    i.add_argument("--max-val", type=int, default=None, help="choose lambda on the first N validation images")
    i.add_argument("--calib-images", type=int, default=None, help="images for the BatchNorm calibration")
    i.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    i.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _train(args: argparse.Namespace) -> int:
    from dvfo_ros.core.inference.models import ZOO
    if args.model not in ZOO:
        return error(PROG, f"unknown model '{args.model}'; choose one of {', '.join(ZOO)}")
    for name in ("steps", "budget_s", "input_size", "batch_size", "max_train", "max_val", "calib_images"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            return error(PROG, f"--{name.replace('_', '-')} must be positive, got {value}")
    import torch
    from dvfo_ros.core.inference.artifacts import ArtifactJob, train_artifact
    torch.set_num_threads(max(1, args.threads))
    job = ArtifactJob(model=args.model, dataset=args.dataset, quick=args.quick, steps=args.steps,
                      epochs=args.epochs, budget_s=args.budget_s, input_size=args.input_size,
                      batch_size=args.batch_size, lr=args.lr, offload_sparsity=args.offload_sparsity,
                      seed=args.seed, max_train=args.max_train, calib_images=args.calib_images,
                      max_val=args.max_val, resume=args.resume)
    train_artifact(job, out_dir=args.out_dir, force=args.force, progress=not args.no_progress,
                   log=lambda s: print(f"[{PROG}] {s}", flush=True))
    return 0


def _import(args: argparse.Namespace) -> int:
    from dvfo_ros.core.inference.models import ZOO
    if args.arch not in ZOO:
        return error(PROG, f"--arch {args.arch}: choose one of {', '.join(ZOO)} (the architectures with stage "
                           "lists and slimmable tails)")
    for name in ("steps", "budget_s", "input_size", "batch_size", "max_val", "calib_images"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            return error(PROG, f"--{name.replace('_', '-')} must be positive, got {value}")
    import torch
    from dvfo_ros.core.inference.artifacts import ImportJob, import_artifact
    torch.set_num_threads(max(1, args.threads))
    job = ImportJob(arch=args.arch, weights=args.state_dict or args.torchscript, labels=args.labels,
                    dataset=args.dataset, input_size=args.input_size, split=args.split, steps=args.steps,
                    epochs=args.epochs, budget_s=args.budget_s, batch_size=args.batch_size, lr=args.lr,
                    max_val=args.max_val, calib_images=args.calib_images)
    import_artifact(job, args.out, progress=not args.no_progress, log=lambda s: print(f"[{PROG}] {s}", flush=True))
    print(f"run it: executor --ros-args -p model:={args.arch} -p artifact:={args.out}  "
          f"(the cloud: dvfo-cloud --model {args.arch} --artifact {args.out})")
    return 0


def _list() -> int:
    from dvfo_ros.core.inference import collab
    from dvfo_ros.core.inference.artifacts import list_artifacts
    rows = list_artifacts()
    if not rows:
        print(f"no trained artifacts in {', '.join(collab.artifact_dirs())}\n"
              f"train one: {PROG} train --model resnet18 --dataset digits")
        return 0

    def pct(v: Optional[float]) -> str:
        return "-" if v is None else f"{100 * float(v):.1f}%"

    table = [[r["model"], r["dataset"], r["classes"], r["input_size"], r["split"], pct(r["accuracy"]),
              pct(r["accuracy_xi_half"]), f"{r['size_mb']:.1f} MB",
              r["where"] + (" (shadowed)" if r["shadowed_by"] else ""), r["path"]] for r in rows]
    print(format_table(table, headers=["model", "dataset", "classes", "input", "split", "acc xi=0", "acc xi=0.5",
                                       "size", "where", "path"], numparse=False))
    return 0


@cli_main(PROG)
def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "train":
        return _train(args)
    if args.command == "import":
        return _import(args)
    return _list()


if __name__ == "__main__":
    sys.exit(main())
