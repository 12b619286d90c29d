"""Trained model artifacts: train one into the per-user location, list what every install finds,
and the one warning for a node that runs untrained zoo weights.

    path = train_artifact(ArtifactJob("resnet18", "digits", quick=True))   # what setup runs
    rows = list_artifacts()                                               # dvfo-artifact list
    msg = untrained_warning("resnet18", "digits")                         # the executor's / cloud's WARN
    path = import_artifact(ImportJob("resnet18", "my.pt", "labels.txt", dataset="my_images"), "my.pt")

Artifacts live in ``collab.artifact_dirs()`` (first hit wins); training writes to
``collab.default_artifact_dir()`` ($DVFO_ARTIFACT_DIR, else $XDG_CACHE_HOME/dvfo_ros/artifacts).
Beside each ``<model>_<dataset>.pt`` a ``.train.json`` records the meta and the validation accuracy.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional

from dvfo_ros.core.inference import collab

FULL_EPOCHS = {"digits": 25.0, "scenes": 8.0}


def untrained_warning(model: str, dataset: str, explicit: bool = False) -> str:
    """One line: the node runs untrained weights (``explicit``: artifact 'none' asked for), and the fix."""
    why = "artifact 'none'" if explicit else \
        f"no artifact for {model}/{dataset} in {', '.join(collab.artifact_dirs()[:2])}"
    return (f"running UNTRAINED {model} weights ({why}): classifications are meaningless; fix: "
            f"dvfo-artifact train --model {model} --dataset {dataset} "
            f"(colcon install: python3 -m dvfo_ros.cli.artifact train ...)")


@dataclass
class ArtifactJob:
    """One artifact to train. ``quick``: setup's preset (3 epochs, ~100 s budget, small calibration)."""

    model: str = "resnet18"
    dataset: str = "digits"
    quick: bool = False
    steps: Optional[int] = None
    epochs: Optional[float] = None
    budget_s: Optional[float] = None
    input_size: int = 32
    batch_size: int = 64
    lr: float = 2e-3
    offload_sparsity: float = 0.0
    seed: int = 0
    max_train: Optional[int] = None
    calib_images: Optional[int] = None
    max_val: Optional[int] = None
    resume: bool = False

    def config(self, init_artifact: Optional[str] = None) -> Any:
        from dvfo_ros.core.inference.training import TrainConfig
        if self.quick:
            return TrainConfig(model=self.model, dataset=self.dataset, input_size=self.input_size,
                               epochs=self.epochs or 3.0, steps=self.steps,
                               time_budget_s=self.budget_s or 100.0, calib_images=self.calib_images or 256,
                               max_val=self.max_val or 500, max_train=self.max_train, seed=self.seed)
        return TrainConfig(model=self.model, dataset=self.dataset, input_size=self.input_size,
                           epochs=self.epochs or FULL_EPOCHS.get(self.dataset, 10.0), steps=self.steps,
                           batch_size=self.batch_size, lr=self.lr, time_budget_s=self.budget_s, seed=self.seed,
                           offload_sparsity=self.offload_sparsity, max_train=self.max_train,
                           calib_images=self.calib_images or 512, max_val=self.max_val,
                           init_artifact=init_artifact)


def train_artifact(job: ArtifactJob, out_dir: Optional[str] = None, force: bool = False,
                   progress: bool = False, log: Callable[[str], None] = print) -> Optional[str]:
    """Train ``job`` and write ``<out_dir>/<model>_<dataset>.pt`` + ``.train.json``; returns the path,
    or None when the artifact exists already (and neither ``force`` nor ``job.resume``)."""
    from dvfo_ros.core.inference.training import train_collab
    out_dir = out_dir or collab.default_artifact_dir()
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, collab.artifact_name(job.model, job.dataset))
    if os.path.isfile(path) and not (force or job.resume):
        log(f"{path} exists; skipping (--force retrains)")
        return None
    cfg = job.config(init_artifact=path if job.resume and os.path.isfile(path) else None)
    t0 = time.monotonic()
    net, report = train_collab(cfg, progress=progress, log=log)
    net.save_artifact(path)
    with open(path[:-3] + ".train.json", "w") as fh:
        json.dump({"meta": net.meta, "report": report}, fh, indent=1, default=str)
    log(f"wrote {path} ({os.path.getsize(path) / 1e6:.1f} MB) in {time.monotonic() - t0:.0f} s")
    return path


def _where(directory: str) -> str:
    dirs = collab.artifact_dirs()
    env = os.environ.get("DVFO_ARTIFACT_DIR")
    if env and os.path.abspath(directory) == os.path.abspath(env):
        return "$DVFO_ARTIFACT_DIR"
    if os.path.abspath(directory) == os.path.abspath(dirs[-1]):
        return "package"
    if directory.endswith(os.path.join("artifacts", "cache")):
        return "source checkout"
    return "user cache"


def _read_meta(path: str) -> Dict[str, Any]:
    """The artifact's meta: from the .train.json beside it, else from the file itself."""
    side = path[:-3] + ".train.json"
    if os.path.isfile(side):
        try:
            with open(side) as fh:
                meta = json.load(fh).get("meta")
            if isinstance(meta, dict):
                return meta
        except (OSError, ValueError):
            pass
    try:
        import torch
        blob = torch.load(path, map_location="cpu", weights_only=True)
        meta = blob.get("meta") if isinstance(blob, dict) else None
        return dict(meta) if isinstance(meta, dict) else {}
    except Exception:   # noqa: BLE001 - a damaged file is listed with what is known
        return {}


def list_artifacts() -> List[Dict[str, Any]]:
    """Every *.pt in the search locations, in search order (a shadowed one says so)."""
    rows: List[Dict[str, Any]] = []
    seen: Dict[str, str] = {}
    for d in collab.artifact_dirs():
        try:
            names = sorted(n for n in os.listdir(d) if n.endswith(".pt"))
        except OSError:
            continue
        for name in names:
            path = os.path.join(d, name)
            if not os.path.isfile(path):
                continue
            meta = _read_meta(path)
            acc = {round(float(a.get("xi", -1)), 3): a.get("val_accuracy")
                   for a in meta.get("accuracy", []) if isinstance(a, dict)}
            rows.append({"model": meta.get("model", "?"), "dataset": meta.get("dataset", "?"),
                         "classes": meta.get("num_classes"), "input_size": meta.get("input_size"),
                         "split": meta.get("split"), "accuracy": acc.get(0.0),
                         "accuracy_xi_half": acc.get(0.5), "where": _where(d), "path": path,
                         "size_mb": os.path.getsize(path) / 1e6,
                         "shadowed_by": seen.get(name)})
            seen.setdefault(name, path)
    return rows


@dataclass
class ImportJob:
    """A user's own model to turn into an artifact: zoo architecture, weights (state_dict or TorchScript),
    labels file; with ``dataset`` (an ImageFolder whose folders are the labels) the attention, cloud tail,
    per-width BatchNorm statistics and lambda are trained jointly from the user's weights (a fine-tune:
    lower lr than training from scratch). Without it xi = 0 runs the user's model as it is, offloading untuned."""

    arch: str
    weights: str
    labels: str
    dataset: str = ""
    input_size: int = 224
    split: Optional[int] = None
    steps: Optional[int] = None
    epochs: Optional[float] = None
    budget_s: Optional[float] = None
    batch_size: int = 32
    lr: float = 2e-4
    max_train: Optional[int] = None
    calib_images: Optional[int] = None
    max_val: Optional[int] = None
    seed: int = 0


def import_artifact(job: ImportJob, out: str, progress: bool = False,
                    log: Callable[[str], None] = print) -> str:
    """Write the artifact of ``job`` to ``out`` (+ ``.train.json``); returns ``out``."""
    import tempfile

    from dvfo_ros.core.inference.user_model import import_model, read_labels
    names = read_labels(job.labels)
    net = import_model(job.arch, job.weights, names, job.input_size, job.split)
    report: Dict[str, Any] = {}
    if job.dataset:
        from dvfo_ros.core.inference.training import TrainConfig, train_collab
        with tempfile.TemporaryDirectory(prefix="dvfo-import-") as tmp:
            start = os.path.join(tmp, "start.pt")
            net.save_artifact(start)
            cfg = TrainConfig(model=job.arch, dataset=job.dataset, input_size=job.input_size,
                              epochs=job.epochs or 3.0, steps=job.steps, batch_size=job.batch_size, lr=job.lr,
                              time_budget_s=job.budget_s, max_train=job.max_train,
                              calib_images=job.calib_images or 256, max_val=job.max_val, seed=job.seed,
                              init_artifact=start, class_order=names)
            net, report = train_collab(cfg, progress=progress, log=log)
        net.meta["source"] = {"arch": job.arch, "weights": os.path.abspath(job.weights)}
    else:
        net.meta["dataset"] = "user"
        log("no data set given: at xi = 0 the artifact runs your model as it is; the attention, cloud tail and "
            "per-width BatchNorm statistics are untrained, so offloading (xi > 0) is untuned (give --dataset)")
    net.save_artifact(out)
    with open(out[:-3] + ".train.json" if out.endswith(".pt") else out + ".train.json", "w") as fh:
        json.dump({"meta": net.meta, "report": report}, fh, indent=1, default=str)
    log(f"wrote {out} ({job.arch}, {len(names)} classes: {', '.join(names[:5])}{', ...' if len(names) > 5 else ''})")
    return out
