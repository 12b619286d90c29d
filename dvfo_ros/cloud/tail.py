"""The cloud tail as a function: what every cloud backend runs on a decoded request.

``make_tail_runner`` turns a CollaborativeModel into ``runner(header, feat, channel_idx) -> logits``
(offloaded channels, or a whole-layer partition's map) and the ``accept`` dict that pins the model,
split, artifact and shapes a server serves. The in-process server (``dvfo_ros.cloud.server``) and the
Ray Serve replicas (``dvfo_ros.cloud.ray_backend``) both run it, so both answer bit for bit alike.
"""
from __future__ import annotations

from typing import Any, Dict, Tuple

import numpy as np


def make_tail_runner(model: Any, device: str) -> Tuple[Any, Dict[str, Any]]:
    """(runner, accept): the runner runs model.cloud_tail; accept pins model/split/artifact/C."""
    import torch

    model = model.to(device).eval()
    meta = model.meta
    accept: Dict[str, Any] = {"model": meta["model"], "split": int(meta["split"]),
                              "artifact_id": str(meta.get("artifact_id", "")),
                              "total_channels": int(model.channels)}
    shape = getattr(model, "feature_shape", None)
    if shape is not None:
        accept["hw"] = [int(shape[1]), int(shape[2])]  # a map from another input size is refused

    stage_inputs = model.stage_inputs() if hasattr(model, "stage_inputs") else {}
    # whole-layer partitions (kind 'partition'): the map after stage k, as it travels (C, h, w)
    accept["partitions"] = {k: [*shape, 1, 1][:3] for k, shape in stage_inputs.items()}

    def runner(header: Dict[str, Any], feat: np.ndarray, channel_idx: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            x = torch.from_numpy(feat).unsqueeze(0).to(device)
            if header["kind"] == "partition":
                k = int(header["split"])
                x = x.reshape(1, *stage_inputs[k]).to(next(model.parameters()).dtype)
                logits = model.run_stages(x, k, model.num_stages)
            else:
                logits = model.cloud_tail(x, torch.from_numpy(channel_idx).to(device))
        return logits[0].float().cpu().numpy()

    return runner, accept


def pick_device(choice: str) -> str:
    import torch
    if choice == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda asked for, but torch sees no CUDA device")
    return "cuda" if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()) else "cpu"
