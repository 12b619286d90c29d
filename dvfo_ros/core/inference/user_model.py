"""A user's own model as a CollaborativeModel: a zoo architecture name, its weights and its class names.

    names = read_labels("labels.txt")                                # one class name per line
    net = import_model("resnet18", "my.pt", names, input_size=224)   # cut at the default split
    net.save_artifact("my_resnet18.pt")   # (dvfo-artifact import also trains the tails on a data set)

Weights: a state_dict file (``torch.save(model.state_dict())``, also wrapped as {"state_dict": ...} or
{"model": ...}, DataParallel's "module." prefix stripped), loaded with ``weights_only`` (no code runs from
it); or a TorchScript file of the same torchvision architecture, whose parameters and buffers are read and
loaded into the eager architecture. A TorchScript module cannot itself be cut and slimmed (DVFO's edge
tail swaps module classes in place, which a compiled graph does not allow), so TorchScript of any other
architecture is refused with that reason. The classifier must have one output per label.
"""
from __future__ import annotations

import os
import tempfile
import zipfile
from typing import Any, Dict, List, Optional

import torch

from dvfo_ros.core.errors import one_line
from dvfo_ros.core.inference import models
from dvfo_ros.core.inference.collab import ArtifactError, CollaborativeModel


def read_labels(path: str) -> List[str]:
    """Class names, one per line (blank lines skipped); index i is the model's output i."""
    try:
        with open(path, encoding="utf-8") as f:
            names = [line.strip() for line in f if line.strip()]
    except OSError as e:
        raise ArtifactError(f"cannot read labels file {path}: {one_line(e)}") from None
    if not names:
        raise ArtifactError(f"labels file {path} holds no class names (one per line)")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ArtifactError(f"labels file {path} repeats {', '.join(dup)}")
    return names


def _is_torchscript(path: str) -> bool:
    try:
        with zipfile.ZipFile(path) as z:
            return any(n.endswith("/constants.pkl") or n.startswith("code/") or "/code/" in n for n in z.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def _unwrap(obj: Any, path: str) -> Dict[str, torch.Tensor]:
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ArtifactError(f"{path} is not a state_dict (a dict of tensors, e.g. torch.save(model.state_dict()))")
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in obj.items()}


def read_weights(path: str) -> Dict[str, torch.Tensor]:
    """The state_dict in a weights file: a plain/wrapped state_dict, or a TorchScript file's parameters."""
    if not os.path.isfile(path):
        raise ArtifactError(f"weights file not found: {path}")
    if _is_torchscript(path):
        try:
            scripted = torch.jit.load(path, map_location="cpu")
        except Exception as e:  # noqa: BLE001 - torch raises many types for a foreign file
            raise ArtifactError(f"cannot read TorchScript {path}: {one_line(e)}") from None
        return {k: v.detach() for k, v in scripted.state_dict().items()}
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        raise ArtifactError(f"cannot read weights {path} (a state_dict saved with torch.save, or TorchScript): "
                            f"{one_line(e)}") from None
    return _unwrap(obj, path)


def load_into(arch: str, state: Dict[str, torch.Tensor], num_classes: int, path: str = "weights") -> torch.nn.Module:
    """The torchvision ``arch`` with ``state`` loaded strictly (every key, every shape), or ArtifactError."""
    if arch not in models.ZOO:
        raise ArtifactError(f"architecture '{arch}' cannot be cut here; choose one of {', '.join(models.ZOO)} "
                            "(the stage lists and slimmable tails exist for those)")
    net = models.build_model(arch, num_classes=num_classes)
    try:
        net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()}, strict=True)
    except RuntimeError as e:
        full = " ".join(str(e).split())
        hint = f" (does the classifier have {num_classes} outputs, one per label?)" if "size mismatch" in full else ""
        raise ArtifactError(f"{path} does not fit {arch} with {num_classes} classes{hint}: {full[:300]}") from None
    return net.eval()


def import_model(arch: str, weights: str, names: List[str], input_size: int = 224,
                 split: Optional[int] = None) -> CollaborativeModel:
    """The user's network as a CollaborativeModel cut at ``split`` (None: the architecture's default). At
    xi = 0 it computes exactly the user's model; the cloud tail starts as a copy of the tail and the attention
    untrained, so offloading needs ``train_collab`` on the user's data (dvfo-artifact import --dataset)."""
    net = load_into(arch, read_weights(weights), len(names), weights)
    fd, tmp = tempfile.mkstemp(prefix=".dvfo-import-", suffix=".pt")
    os.close(fd)
    try:
        torch.save(net.state_dict(), tmp)
        model = CollaborativeModel(arch, split, len(names), input_size, pretrained=tmp)
    finally:
        os.unlink(tmp)
    model.meta.update({"class_names": list(names), "dataset": "",
                       "source": {"arch": arch, "weights": os.path.abspath(weights)}})
    return model
