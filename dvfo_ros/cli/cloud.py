"""dvfo-cloud: the ZeroMQ cloud server that runs a model's cloud tail on offloaded channels (no ROS).

    dvfo-cloud --bind tcp://127.0.0.1:5555 --model resnet18
    dvfo-keygen keys --name cloud && dvfo-cloud --bind tcp://0.0.0.0:5555 \\
        --curve-secret keys/cloud.key_secret --curve-clients keys/robots/

It loads the same model the edge's executor loads (one ModelSpec: the artifact given, else the one
trained for --model + --dataset, else the untrained zoo model with the same seed), refuses requests
for another model, split or artifact, and prints "dvfo-cloud ready on <endpoint> (...)" once bound.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from typing import Any, Dict, List, Optional, Tuple

from dvfo_ros.cloud.tail import make_tail_runner, pick_device
from dvfo_ros.core.inference.spec import ModelSpec
from dvfo_ros.core.signals import install_handlers, restore_handlers

log = logging.getLogger("dvfo_ros.cloud")

_LOOPBACK_PREFIXES = ("tcp://127.", "tcp://localhost:", "tcp://[::1]:", "ipc://", "inproc://")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dvfo-cloud", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--bind", default="tcp://127.0.0.1:5555", help="ZeroMQ endpoint to bind (ROUTER)")
    ModelSpec.add_arguments(p)    # the model, exactly as the executor names it (ModelSpec.cloud_args)
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="where the tail runs; auto = CUDA when available")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--curve-secret", default="", help="server key file with the secret key (dvfo-keygen)")
    p.add_argument("--curve-clients", default="",
                   help="directory of allowed client public keys (*.key); '' = any client (encrypted only)")
    p.add_argument("--allow-insecure-remote", action="store_true",
                   help="bind a non-loopback address without CurveZMQ (anyone on the network may use it)")
    p.add_argument("--deadline-slack-s", type=float, default=0.5,
                   help="run a request up to this long past its deadline (edge/cloud clock skew)")
    p.add_argument("--max-batch", type=int, default=8,
                   help="most requests run as one batch (BCEdge-style dynamic batching; 1 = off)")
    p.add_argument("--batch-window-ms", type=float, default=3.0,
                   help="longest a batch is held open for more requests (only under concurrent load)")
    p.add_argument("--scheduler", default="heuristic",
                   help="batch size x concurrent instances: heuristic (--max-batch, one instance, the window), "
                        "fixed:B[,C] (batches of up to B on C instances) or bcedge[:PATH] "
                        "(learnt; without a checkpoint trained once for --server-profile and cached)")
    p.add_argument("--server-profile", default="cpu_resnet18",
                   help="server profile (dvfo-profile cloud) bcedge is trained for and reads the load against")
    p.add_argument("--schedule-interval-s", type=float, default=0.5, help="how often the scheduler decides")
    r = p.add_argument_group("Ray Serve backend (--backend ray; pip install 'dvfo_ros[fleet]')")
    r.add_argument("--backend", choices=("inprocess", "ray"), default="inprocess",
                   help="where the tail runs: this process, or a Ray Serve deployment behind this ZeroMQ front")
    r.add_argument("--ray-address", default="local",
                   help="local (a private Ray on 127.0.0.1), auto or ray://HOST:PORT (a cluster from `ray start`)")
    r.add_argument("--ray-app", default="dvfo-cloud", help="Serve application name (fronts naming one share it)")
    r.add_argument("--ray-replicas", type=int, default=0,
                   help="replicas of the tail; 0 = 1, or the scheduler's largest concurrency under --scheduler")
    r.add_argument("--ray-batching", choices=("front", "serve"), default="front",
                   help="front: this front forms batches of up to --max-batch, one in flight per replica (or "
                        "--scheduler's); serve: each request on its own, batched at the replica by @serve.batch")
    r.add_argument("--ray-autoscale", default="", help="MIN,MAX: Serve's autoscaler sets the replica count")
    r.add_argument("--ray-target-ongoing", type=float, default=2.0,
                   help="the autoscaler's target of ongoing requests per replica")
    r.add_argument("--ray-num-cpus", type=float, default=1.0, help="logical CPUs each replica reserves")
    r.add_argument("--ray-num-gpus", type=float, default=0.0, help="GPUs each replica reserves (0.5: two per GPU)")
    p.add_argument("--max-payload-mb", type=float, default=16.0, help="largest request payload accepted")
    p.add_argument("--stats-every-s", type=float, default=0.0, help="log server stats this often (0 = never)")
    p.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    return p


def is_loopback(endpoint: str) -> bool:
    return endpoint.startswith(_LOOPBACK_PREFIXES)


def load_collab_model(args: argparse.Namespace) -> Any:
    """The same model the executor loads for these settings (ModelSpec.load)."""
    return ModelSpec.from_args(args).load()


def _curve_keys(args: argparse.Namespace) -> Dict[str, Any]:
    if not args.curve_secret:
        return {}
    from dvfo_ros.core.wire.link import load_keypair
    public, secret = load_keypair(args.curve_secret)
    if secret is None:
        raise ValueError(f"{args.curve_secret} holds no secret key (give NAME.key_secret, not NAME.key)")
    return {"curve_public": public, "curve_secret": secret,
            "curve_clients_dir": args.curve_clients or None}


def _batching(model: Any, device: str, max_batch: int) -> Dict[str, Any]:
    """CloudServer batching kwargs; batching is used only if it reproduces per-frame results."""
    if max_batch <= 1:
        return {}
    from dvfo_ros.cloud.batching import check_batching, collab_batch_runner
    problem = check_batching(model, device)
    if problem:
        log.warning("dynamic batching off: %s", problem)
        return {}
    batch_runner, batch_key = collab_batch_runner(model, device)
    return {"batch_runner": batch_runner, "batch_key": batch_key, "max_batch": max_batch}


def _scheduling(model: Any, device: str, args: argparse.Namespace) -> Dict[str, Any]:
    """CloudServer kwargs for a scheduler: the scheduler and a pool of as many tail copies as it may ask for."""
    from dvfo_ros.cloud.batching import check_batching, collab_batch_runner
    from dvfo_ros.cloud.instances import InstancePool
    from dvfo_ros.cloud.schedulers import FixedScheduler, make_scheduler
    from dvfo_ros.core.twin.server import INSTANCES
    from dvfo_ros.core.twin.server import load_server_profile
    one_ms = load_server_profile(args.server_profile).run_ms(1, 1)
    scheduler = make_scheduler(args.scheduler, profile=args.server_profile)
    problem = check_batching(model, device)
    if problem:
        raise ValueError(f"--scheduler {args.scheduler} batches the cloud tail, but {problem}")
    size = scheduler.setting[1] if isinstance(scheduler, FixedScheduler) else max(INSTANCES)
    _, batch_key = collab_batch_runner(model, device)
    return {"scheduler": scheduler, "pool": InstancePool(model, device, size), "batch_key": batch_key,
            "schedule_interval_s": args.schedule_interval_s, "default_one_ms": one_ms}


def _ray_options(args: argparse.Namespace) -> Any:
    from dvfo_ros.cloud.ray_backend import RayOptions
    from dvfo_ros.cloud.schedulers import FixedScheduler, make_scheduler
    from dvfo_ros.core.twin.server import INSTANCES
    autoscale = None
    if args.ray_autoscale:
        try:
            lo, hi = (int(v) for v in args.ray_autoscale.split(","))
        except ValueError:
            lo = hi = -1
        if not 1 <= lo <= hi:
            raise ValueError(f"--ray-autoscale {args.ray_autoscale!r}: MIN,MAX with 1 <= MIN <= MAX")
        autoscale = (lo, hi)
    if args.ray_replicas < 0 or args.ray_num_cpus < 0 or args.ray_num_gpus < 0 or args.ray_target_ongoing <= 0:
        raise ValueError("--ray-replicas, --ray-num-cpus and --ray-num-gpus must be >= 0, --ray-target-ongoing > 0")
    if args.ray_batching == "serve" and args.scheduler != "heuristic":
        raise ValueError("--ray-batching serve batches at the replicas: it takes no --scheduler")
    scheduler = None
    replicas = args.ray_replicas or 1
    if args.scheduler != "heuristic":
        scheduler = make_scheduler(args.scheduler, profile=args.server_profile)
        most = scheduler.setting[1] if isinstance(scheduler, FixedScheduler) else max(INSTANCES)
        replicas = args.ray_replicas or most
    return scheduler, RayOptions(address=args.ray_address, app=args.ray_app, replicas=replicas, autoscale=autoscale,
                                 target_ongoing=args.ray_target_ongoing, max_batch=args.max_batch,
                                 batch_wait_ms=args.batch_window_ms, num_cpus=args.ray_num_cpus,
                                 num_gpus=args.ray_num_gpus, threads=args.threads)


def _ray_serving(spec: ModelSpec, device: str, args: argparse.Namespace,
                 accept: Dict[str, Any]) -> Tuple[Dict[str, Any], Any]:
    """CloudServer kwargs for the Ray backend (dvfo_ros.cloud.ray_backend) and the backend to close."""
    from dvfo_ros.cloud.batching import default_batch_key
    from dvfo_ros.cloud.ray_backend import RayBackend
    from dvfo_ros.cloud.schedulers import FixedScheduler
    from dvfo_ros.core.twin.server import load_server_profile
    scheduler, options = _ray_options(args)
    per_request = args.ray_batching == "serve"
    # serve: enough in flight for every replica to fill a batch twice over; front: one batch per replica
    inflight = 2 * options.max_replicas() * max(1, options.max_batch) if per_request else options.max_replicas()
    backend = RayBackend(spec, device, options, inflight=inflight, per_request=per_request,
                         expect_artifact_id=accept["artifact_id"], slack_s=args.deadline_slack_s)
    if per_request:
        scheduler = FixedScheduler(1, inflight, name="serve-batch")
    elif scheduler is None:       # the heuristic's batches, formed here: up to --max-batch on each replica
        scheduler = FixedScheduler(options.max_batch, inflight, name="front-batch")
    kwargs = {"scheduler": scheduler, "pool": backend.pool, "batch_key": default_batch_key,
              "schedule_interval_s": args.schedule_interval_s,
              "default_one_ms": load_server_profile(args.server_profile).run_ms(1, 1)}
    return kwargs, backend


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="[dvfo-cloud] %(levelname)s %(message)s")
    if args.curve_clients and not args.curve_secret:
        parser.error("--curve-clients needs --curve-secret")
    if not args.curve_secret and not is_loopback(args.bind) and not args.allow_insecure_remote:
        parser.error(f"refusing to bind {args.bind} without CurveZMQ keys; give --curve-secret "
                     "(dvfo-keygen) or --allow-insecure-remote")
    if args.threads < 1 or args.max_payload_mb <= 0 or args.max_batch < 1 or args.batch_window_ms < 0 \
            or args.schedule_interval_s <= 0:
        parser.error("--threads, --max-payload-mb, --max-batch and --schedule-interval-s must be positive, "
                     "--batch-window-ms >= 0")
    backend: Any = None
    try:
        import torch
        torch.set_num_threads(args.threads)
        # the Ray backend's replicas pick their own device; its front only reads the model's contract, on the CPU
        device = pick_device(args.device) if args.backend == "inprocess" else "cpu"
        keys = _curve_keys(args)
        model = load_collab_model(args)
        spec = ModelSpec.from_args(args)
        if not spec.resolve_artifact():      # untrained zoo weights: never silent
            from dvfo_ros.core.inference.artifacts import untrained_warning
            log.warning("%s", untrained_warning(spec.model, spec.dataset, spec.artifact == "none"))
        runner, accept = make_tail_runner(model, device)
        if args.backend == "ray":
            batch, backend = _ray_serving(spec, args.device, args, accept)
            runner = backend.pool.run_one          # whole-layer partitions run on a replica too
            device = f"ray serve: {backend.options.max_replicas()} replica(s) on {backend.device}"
        else:
            batch = _scheduling(model, device, args) if args.scheduler != "heuristic" else _batching(model, device,
                                                                                                  args.max_batch)
        from dvfo_ros.cloud.server import CloudServer
        from dvfo_ros.core.wire.codec import Limits
        server = CloudServer(args.bind, runner, accept=accept, deadline_slack_s=args.deadline_slack_s,
                             limits=Limits(max_payload_bytes=int(args.max_payload_mb * (1 << 20))),
                             batch_window_ms=args.batch_window_ms, **batch, **keys)
    except (ValueError, OSError, RuntimeError) as exc:
        if backend is not None:
            backend.close()
        print(f"dvfo-cloud: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    if not server.secure:
        log.warning("no CurveZMQ keys: traffic is unencrypted and unauthenticated (%s)",
                    "loopback only" if is_loopback(args.bind) else "--allow-insecure-remote")
    elif not args.curve_clients:
        log.warning("CurveZMQ without --curve-clients: encrypted, but any client key is accepted")

    def _on_signal(signum: int, _frame: Any) -> None:
        log.info("signal %d: shutting down", signum)
        server.stop()

    previous = install_handlers(lambda _sig, _old: _on_signal)   # SIGINT, SIGTERM; an ignored one stays ignored
    batching = f", batch<={server.policy.max_batch}" if server.batching else ""
    if backend is not None and server.scheduled.scheduler.name == "serve-batch":
        batching = f", @serve.batch<={backend.options.max_batch}"
    elif backend is not None and server.scheduled.scheduler.name == "front-batch":
        batching = f", batches<={backend.options.max_batch} formed here, one per replica"
    elif backend is not None:
        batching = f", scheduler {server.scheduled.scheduler.name} over the replicas"
    elif server.scheduled is not None:
        batching = f", scheduler {server.scheduled.scheduler.name} on {server.scheduled.pool.size} instance(s)"
    print(f"dvfo-cloud ready on {server.endpoint} ({accept['model']}, split {accept['split']}, {device}"
          f"{batching}{', curve' if server.secure else ''})", flush=True)
    thread = server.start_in_thread()
    last = time.monotonic()
    try:
        while thread.is_alive():
            thread.join(0.2)
            if args.stats_every_s > 0 and time.monotonic() - last >= args.stats_every_s:
                last = time.monotonic()
                s = server.stats
                log.info("requests %d answered %d errors %d expired %d batches %d (max %d) clients %d",
                         s["requests"], s["answered"], s["errors"], s["expired"], s["batches"],
                         s["max_batch_seen"], len(s["by_client"]))
    finally:
        server.stop()
        if backend is not None:
            backend.close()
        restore_handlers(previous)
    s = server.stats
    log.info("stopped: requests %d answered %d errors %d", s["requests"], s["answered"], s["errors"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
