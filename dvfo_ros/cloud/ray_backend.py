"""``dvfo-cloud --backend ray``: the cloud tail as a Ray Serve deployment behind our ZeroMQ front.

The robots still talk to the ROUTER of ``dvfo_ros.cloud.server``: the wire contract, the validation
against the served model and CurveZMQ stay exactly as in-process. The front hands each decoded,
admitted request to ``CloudTail``, a Serve deployment whose replicas load the same ``ModelSpec`` with
the same artifact rule and run the same tail (``dvfo_ros.cloud.tail``, ``collab_batch_runner``); a
replica that loaded another artifact than the front's refuses to start, so a cluster node with a
stale artifact can never answer for the served model.

How the work reaches the replicas (``RayPool``, the ``InstancePool`` interface the serving loop of
``dvfo_ros.cloud.scheduled`` drives):

- by default (``--ray-batching front``) the front forms the batches, as the in-process heuristic does: up to
  ``--max-batch`` requests per call, one call in flight per replica, started by the deadline-aware rule of
  ``dvfo_ros.cloud.scheduled``. Measured on 2 CPU cores (``dvfo-bench serve``, README "A fleet"): 2 replicas
  carried 8 robots at 63 requests/s in time this way and at 35/s with one Serve call per request.
- ``--ray-batching serve``: each request goes on its own; Serve's router spreads them over the replicas and
  ``@serve.batch`` batches those waiting at one replica (``max_batch_size`` = ``--max-batch``,
  ``batch_wait_timeout_s`` = ``--batch-window-ms``, both live settings through Serve's ``user_config``).
- ``--ray-replicas N`` fixes the replica count; ``--ray-autoscale MIN,MAX`` hands it to Serve's autoscaler
  (``--ray-target-ongoing`` requests per replica).
- with ``--scheduler fixed:B[,C] | bcedge``: the scheduler's batch size B is the batch the front forms
  (its deadline-aware start rule and admission need the queue, which Serve's batch queue does not
  expose) and sends as one call; its concurrency C is the number of batches in flight, which Serve's
  router (the less loaded of two replicas) places on C different replicas out of ``--ray-replicas``
  (default: the scheduler's largest C). Our choice: C is not mapped onto ``num_replicas``, because a
  replica start is a process start and a model load (seconds) and the scheduler decides every 0.5 s.

A replica that dies mid-batch fails its calls at once; the loop sends the batch once more (Serve
routes it to a live replica and restarts the dead one) while the earliest deadline still allows it,
else it answers each request with an error reply, so no robot waits past its deadline for it.

``address``: ``local`` starts a private Ray on this machine with every service on 127.0.0.1, no
dashboard and no HTTP proxy (the front is the only way in), and shuts it down on close; ``auto`` or
``ray://HOST:PORT`` joins a cluster started with ``ray start`` (README: "A fleet"), where several
fronts deploying the same application share its replicas.
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from dvfo_ros.cloud.batching import Item

log = logging.getLogger("dvfo_ros.cloud")


@dataclass
class RayOptions:
    address: str = "local"            # local | auto | ray://host:port
    app: str = "dvfo-cloud"           # the Serve application (fronts naming the same one share it)
    replicas: int = 1                 # fixed replica count (ignored under autoscale)
    autoscale: Optional[Tuple[int, int]] = None   # (min, max) replicas: Serve's autoscaler decides
    target_ongoing: float = 2.0       # the autoscaler's target of ongoing requests per replica
    max_batch: int = 8                # @serve.batch max_batch_size (per-request mode)
    batch_wait_ms: float = 3.0        # @serve.batch batch_wait_timeout_s, in ms
    num_cpus: float = 1.0             # logical CPUs a replica reserves
    num_gpus: float = 0.0             # GPUs a replica reserves (a GPU server: 1, or 0.5 to share one)
    threads: int = 1                  # torch CPU threads inside each replica

    def max_replicas(self) -> int:
        return self.autoscale[1] if self.autoscale else self.replicas


def ray_available() -> Optional[str]:
    """None when Ray Serve imports, else the one-line reason (the install hint)."""
    try:
        import ray  # noqa: F401
        from ray import serve  # noqa: F401
    except ImportError as exc:
        return f"--backend ray needs Ray Serve: pip install 'dvfo_ros[fleet]' (or 'ray[serve]'): {exc}"
    return None


# ---------------------------------------------------------------------------------------------- the replica
def _run_items(runner: Callable[..., np.ndarray], batch_runner: Callable[[List[Item]], List[np.ndarray]],
               key: Callable[[Dict[str, Any]], Any], items: List[Item]) -> List[np.ndarray]:
    """Outputs in the order of ``items``: whole-layer partitions one by one, the rest batched per batch key."""
    out: List[Any] = [None] * len(items)
    groups: Dict[Any, List[int]] = {}
    for i, (header, feat, idx) in enumerate(items):
        if header.get("kind") == "partition":
            out[i] = runner(header, feat, idx)
        else:
            groups.setdefault(key(header), []).append(i)
    for members in groups.values():
        for i, logits in zip(members, batch_runner([items[i] for i in members])):
            out[i] = logits
    return out


class CloudTailReplica:
    """One replica's state: the model of ``spec`` on ``device`` and its runners (a plain class, so the
    in-process tests and the Serve deployment run the same code)."""

    def __init__(self, spec: Dict[str, Any], device: str, threads: int, expect_artifact_id: Optional[str]) -> None:
        import torch

        from dvfo_ros.cloud.batching import check_batching, collab_batch_runner, looping_batch_runner
        from dvfo_ros.cloud.tail import make_tail_runner, pick_device
        from dvfo_ros.core.inference.spec import ModelSpec

        torch.set_num_threads(max(1, int(threads)))
        self.device = pick_device(device)
        model = ModelSpec(**spec).load().to(self.device).eval()
        self.runner, self.accept = make_tail_runner(model, self.device)
        if expect_artifact_id is not None and self.accept["artifact_id"] != expect_artifact_id:
            raise RuntimeError(f"this replica loaded artifact {self.accept['artifact_id']!r}, the front serves "
                               f"{expect_artifact_id!r}: give every node the same artifact")
        batch_runner, self.key = collab_batch_runner(model, self.device)
        problem = check_batching(model, self.device)
        self.batch_runner = looping_batch_runner(self.runner) if problem else batch_runner
        # one thread runs every batch of this replica: torch's per-thread state stays warm (measured: a
        # sync Serve method, run on whichever pool thread is free, took 2-3 ms longer per resnet18 tail)
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dvfo-tail")
        from dvfo_ros.cloud.instances import sample_items
        for b in (1, 1, 1, 4, 4, 8):          # a fresh copy's first calls are slow: no request should pay them
            self.executor.submit(self.batch_runner, sample_items(model, b, seed=b)).result()
        self.pid = os.getpid()

    def run(self, items: List[Item]) -> List[np.ndarray]:
        return _run_items(self.runner, self.batch_runner, self.key, items)


def keep_replica_on_loopback() -> None:
    """In a private local Ray, bind the replica's inter-deployment gRPC server to 127.0.0.1.

    Serve 2.60 starts it on ``[::]:0`` (every interface, ``ray/serve/_private/replica.py``) with no
    option to change it; the replica resolves the helper through its own module when its user class is
    built, so replacing that one name here (in the replica process, before Serve's ``_on_initialized``)
    keeps it on loopback. Found by ``test_ray_and_the_front_listen_on_loopback_only``. In a cluster
    (``--ray-address auto``) replicas on other nodes must be reachable, and nothing is changed."""
    from ray.serve._private import replica

    bind = replica.add_port_to_grpc_server
    if getattr(bind, "dvfo_loopback", False):
        return

    def on_loopback(server: Any, address: str) -> int:
        return bind(server, "127.0.0.1:" + address.rsplit(":", 1)[-1] if address.startswith("[::]:") else address)

    on_loopback.dvfo_loopback = True  # type: ignore[attr-defined]
    replica.add_port_to_grpc_server = on_loopback  # type: ignore[attr-defined]


def deployment(options: RayOptions) -> Any:
    """The Serve deployment of the cloud tail with ``options``' replicas, resources and batching."""
    from ray import serve

    @serve.deployment(name="CloudTail")
    class CloudTail:
        def __init__(self, spec: Dict[str, Any], device: str, threads: int,
                     expect_artifact_id: Optional[str], loopback: bool = False) -> None:
            if loopback:
                keep_replica_on_loopback()
            self.tail = CloudTailReplica(spec, device, threads, expect_artifact_id)

        def reconfigure(self, config: Dict[str, Any]) -> None:
            batched: Any = self.infer               # @serve.batch's wrapper carries the live setters
            batched.set_max_batch_size(int(config["max_batch"]))
            batched.set_batch_wait_timeout_s(float(config["batch_wait_s"]))

        def info(self) -> Dict[str, Any]:
            return {"accept": self.tail.accept, "pid": self.tail.pid, "device": self.tail.device}

        @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.003)
        async def infer(self, items: List[Item]) -> List[np.ndarray]:
            # the tail runs off the replica's event loop, so requests keep queueing into the next batch
            return await asyncio.get_running_loop().run_in_executor(self.tail.executor, self.tail.run, items)

        async def run_batch(self, items: List[Item]) -> List[np.ndarray]:
            return await asyncio.get_running_loop().run_in_executor(self.tail.executor, self.tail.run, items)

    actor: Dict[str, Any] = {"num_cpus": options.num_cpus}
    if options.num_gpus > 0:
        actor["num_gpus"] = options.num_gpus
    kwargs: Dict[str, Any] = {
        "ray_actor_options": actor,
        "max_ongoing_requests": max(8, 2 * options.max_batch),
        "user_config": {"max_batch": options.max_batch, "batch_wait_s": options.batch_wait_ms / 1000.0},
        "health_check_period_s": 1.0, "health_check_timeout_s": 10.0}
    if options.autoscale:
        kwargs["autoscaling_config"] = {"min_replicas": options.autoscale[0], "max_replicas": options.autoscale[1],
                                        "target_ongoing_requests": options.target_ongoing,
                                        "upscale_delay_s": 2.0, "downscale_delay_s": 30.0}
    else:
        kwargs["num_replicas"] = options.replicas
    served: Any = CloudTail                         # @serve.deployment made it a Deployment
    return served.options(**kwargs)


# ---------------------------------------------------------------------------------------------- the front's side
class RayPool:
    """The ``InstancePool`` interface over a Serve deployment: ``submit(items, done)`` calls it from one of
    ``size`` worker threads and hands back ``(outputs or exception, seconds)``."""

    remote = True

    def __init__(self, handle: Any, size: int, per_request: bool, slack_s: float = 0.0) -> None:
        self.handle, self.size, self.per_request, self.slack_s = handle, max(1, int(size)), per_request, slack_s
        self.busy = 0
        self._lock = threading.Lock()
        self._exec = ThreadPoolExecutor(max_workers=self.size, thread_name_prefix="dvfo-ray")

    def submit(self, items: List[Item], done: Callable[[Any, float], None]) -> None:
        with self._lock:
            self.busy += 1
        self._exec.submit(self._call, items, done)

    def _timeout_s(self, items: List[Item]) -> float:
        earliest = min((float(h.get("deadline", 0.0)) for h, _, _ in items), default=0.0)
        return max(0.05, earliest + self.slack_s - time.time())

    def _call(self, items: List[Item], done: Callable[[Any, float], None]) -> None:
        t0 = time.perf_counter()
        responses: List[Any] = []
        try:
            timeout = self._timeout_s(items)
            if self.per_request:
                responses = [self.handle.infer.remote(item) for item in items]
                out: Any = [r.result(timeout_s=timeout) for r in responses]
            else:
                responses = [self.handle.run_batch.remote(items)]
                out = responses[0].result(timeout_s=timeout)
        except Exception as exc:  # noqa: BLE001 - a dead replica, a timeout: the loop answers each request
            out = exc
            for r in responses:           # past its deadline nobody waits for it: free the replica
                r.cancel()
        with self._lock:
            self.busy -= 1
        done(out, time.perf_counter() - t0)

    def run_one(self, header: Dict[str, Any], feat: np.ndarray, idx: np.ndarray) -> np.ndarray:
        """One request, synchronously (the server's per-request runner: whole-layer partitions)."""
        return self.handle.run_batch.remote([(header, feat, idx)]).result(
            timeout_s=self._timeout_s([(header, feat, idx)]))[0]

    def close(self) -> None:
        self._exec.shutdown(wait=False, cancel_futures=True)


class RayBackend:
    """Joins or starts Ray, deploys ``CloudTail`` for ``spec`` and gives the front its ``RayPool``."""

    def __init__(self, spec: Any, device: str, options: RayOptions, *, inflight: int, per_request: bool,
                 expect_artifact_id: Optional[str] = None, slack_s: float = 0.0,
                 start_timeout_s: float = 120.0) -> None:
        if options.address == "local":
            # Ray resolves a loopback node address to this machine's routable one unless clusters are off
            # (ray_constants.ENABLE_RAY_CLUSTER): off, the GCS, raylets and workers listen on 127.0.0.1 only
            os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        problem = ray_available()
        if problem:
            raise RuntimeError(problem)
        import ray
        from ray._private import ray_constants

        if options.address == "local" and ray_constants.ENABLE_RAY_CLUSTER and not ray.is_initialized():
            raise RuntimeError("a local Ray would listen beyond loopback: set RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 "
                               "before Ray is imported, or join a cluster with --ray-address")
        from ray import serve

        self.options = options
        self.owns_ray = False
        if not ray.is_initialized():
            quiet: Dict[str, Any] = {"log_to_driver": False, "logging_level": logging.WARNING,
                                     "configure_logging": True}
            if options.address == "local":
                need = int(np.ceil(options.max_replicas() * options.num_cpus)) + 1
                ray.init(address="local", _node_ip_address="127.0.0.1", include_dashboard=False,
                         num_cpus=max(os.cpu_count() or 1, need), **quiet)
                self.owns_ray = True
            else:
                ray.init(address=options.address, **quiet)
        serve.start(proxy_location="Disabled", logging_config={"log_level": "WARNING"})
        app = deployment(options).bind(dataclasses.asdict(spec), device, options.threads, expect_artifact_id,
                                       options.address == "local")
        t0 = time.monotonic()
        try:
            self.handle = serve.run(app, name=options.app, route_prefix=None)
        except Exception as exc:  # noqa: BLE001 - a replica that cannot start: one line, Ray left as found
            self.close()
            raise RuntimeError(f"the Ray Serve deployment did not start: {' '.join(str(exc).split())[:300]}") from None
        info = self.handle.info.remote().result(timeout_s=start_timeout_s)
        self.accept: Dict[str, Any] = info["accept"]
        self.device = info["device"]
        self.start_s = time.monotonic() - t0
        self.pool = RayPool(self.handle, inflight, per_request, slack_s)

    def replica_pids(self) -> List[int]:
        return replica_pids(self.options.app)

    def close(self) -> None:
        import ray
        from ray import serve

        pool = getattr(self, "pool", None)
        if pool is not None:
            pool.close()
        if not ray.is_initialized():
            return
        try:
            if self.owns_ray:
                serve.shutdown()
        finally:
            if self.owns_ray:
                ray.shutdown()


def replica_pids(app: str = "dvfo-cloud") -> List[int]:
    """PIDs of the live replicas of Serve application ``app`` on this machine (what a fault test kills)."""
    import psutil

    pids = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            cmd = " ".join(p.info.get("cmdline") or [])
        except (psutil.Error, TypeError):
            continue
        if f"ServeReplica:{app}:CloudTail" in cmd:
            pids.append(p.pid)
    return sorted(pids)
