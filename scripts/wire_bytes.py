#!/usr/bin/env python3
"""Wire bytes of a trained artifact's offloaded channels at several camera resolutions.

The accuracy tables are measured at the size the artifacts train at (32 px on a CPU), where a 4x4 map
makes the header and the per-channel tables as big as the data. The network is fully convolutional,
so the same weights can be fed larger frames: this prints raw float32 / wire bytes (real codec frames,
header included) of the attention-chosen offloaded share at each xi, per input size.

    python scripts/wire_bytes.py --model resnet18 --dataset scenes --sizes 32 64 224
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="resnet18")
    p.add_argument("--dataset", default="scenes")
    p.add_argument("--artifact", default=None, help="default: the one trained for model/dataset")
    p.add_argument("--sizes", type=int, nargs="+", default=[32, 64, 224])
    p.add_argument("--xi", type=float, nargs="+", default=[0.125, 0.25, 0.5, 0.75, 1.0])
    p.add_argument("--frames", type=int, default=16, help="test images encoded per size")
    args = p.parse_args(argv)
    import torch
    from dvfo_ros.cli.accuracy import UsageError, bytes_ratio, load_net
    from dvfo_ros.core.io.datasets import load_dataset
    from dvfo_ros.core.inference.training import to_tensor
    torch.set_num_threads(1)
    try:
        net, path = load_net(args.model, args.dataset, args.artifact)
    except UsageError as exc:
        print(f"wire_bytes: error: {exc}", file=sys.stderr)
        return 2
    print(f"{args.model} / {args.dataset} / {os.path.basename(path)}: "
          "raw float32 / wire bytes of the offloaded channels")
    print(f"{'px':>5} {'map':>12} {'zeros':>6} " + " ".join(f"{'xi=' + format(x, 'g'):>9}" for x in args.xi))
    for size in args.sizes:
        x, _, _ = load_dataset(args.dataset, "test", size, 0)
        with torch.no_grad():
            feats = net.head(to_tensor(x[:args.frames]))
        ratios = [1.0 / bytes_ratio(net, feats, xi) for xi in args.xi]
        shape = "x".join(str(d) for d in feats.shape[1:])
        print(f"{size:>5} {shape:>12} {float((feats == 0).float().mean()):>6.2f} "
              + " ".join(f"{'1/' + format(r, '.1f'):>9}" for r in ratios))
    return 0


if __name__ == "__main__":
    sys.exit(main())
