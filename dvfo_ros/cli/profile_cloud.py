"""dvfo-profile cloud: time this machine's cloud tail at batch sizes 1-8 on 1-4 concurrent instances
and write the server profile the many-robot twin and ``dvfo-bench cloud`` price a server with.

    dvfo-profile cloud --out cpu_resnet18.yaml                        # resnet18's tail, 224 px, this CPU
    dvfo-profile cloud --model resnet50 --device cuda --out gpu_resnet50.yaml

The model is loaded exactly as ``dvfo-cloud`` loads it (``ModelSpec``); the batches are the real batch
runner's (``collab_batch_runner``), on channel subsets like the edge sends. The raw table is kept in
the YAML beside the fit, and the fit's largest relative error is printed.
"""
from __future__ import annotations

import argparse
import platform
import sys
from typing import List, Optional

from dvfo_ros.core.inference.spec import ModelSpec


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dvfo-profile cloud", description=__doc__.split("\n\n")[0])
    ModelSpec.add_arguments(p)
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (as dvfo-cloud --threads)")
    p.add_argument("--max-batch", type=int, default=8, help="batch sizes 1..this")
    p.add_argument("--max-instances", type=int, default=4, help="concurrent instances 1..this")
    p.add_argument("--repeats", type=int, default=10, help="timed batches per instance and setting")
    p.add_argument("--name", default="", help="profile name (default: the output file's stem)")
    p.add_argument("--out", default="server_profile.yaml", help="server profile YAML to write")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if min(args.threads, args.max_batch, args.max_instances, args.repeats) < 1:
        print("dvfo-profile cloud: --threads, --max-batch, --max-instances and --repeats must be >= 1", file=sys.stderr)
        return 2
    import os

    import torch

    from dvfo_ros.cloud.tail import pick_device
    from dvfo_ros.cloud.instances import measure_tail
    from dvfo_ros.core.twin.server import ServerProfile

    torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    spec = ModelSpec.from_args(args)
    model = spec.load()
    table = measure_tail(model, device, range(1, args.max_batch + 1), range(1, args.max_instances + 1),
                         repeats=args.repeats, progress=lambda line: print(line, flush=True))
    name = args.name or os.path.splitext(os.path.basename(args.out))[0]
    source = (f"dvfo-profile cloud --model {spec.model} --input-size {spec.input_size} --device {device} "
              f"--threads {args.threads} on {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}")
    prof = ServerProfile.fit(name, table, source)
    prof.to_yaml(args.out)
    print(f"{args.out}: run_ms(B, c) = ({prof.base_ms:.2f} + {prof.per_item_ms:.2f} B) x contention "
          f"{', '.join(f'{c:.2f}' for c in prof.contention)}; largest fit error {100 * prof.fit_error():.1f} %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
