"""The board a node's /diagnostics are about (diagnostic_updater's ``hardware_id``).

On a Jetson: the device-tree model (``/proc/device-tree/model``, e.g. "NVIDIA Jetson Xavier NX Developer
Kit"), read under the backend's sysfs root so a test can fake it. On the twin (sim backend): the profile,
"xavier_nx (twin)". Elsewhere: the DMI product name, else the host name.
"""
from __future__ import annotations

import os
import socket
from typing import Optional


def _read(root: str, path: str) -> Optional[str]:
    try:
        with open(os.path.join(os.path.abspath(root or "/"), path.lstrip("/")), "r", encoding="utf-8",
                  errors="replace") as f:
            text = f.read().replace("\x00", " ").strip()
    except OSError:
        return None
    return text or None


def board_model(root: str = "/") -> Optional[str]:
    """The device-tree model under ``root`` (Jetsons and other device-tree boards), or None."""
    return _read(root, "/proc/device-tree/model")


def hardware_id(backend: str = "", profile: str = "", root: str = "/") -> str:
    """``hardware_id`` for a node on this board: the twin's profile on ``sim``, the device-tree model on
    a real board, else the DMI product name or the host name."""
    if backend == "sim":
        return f"{profile or 'xavier_nx'} (twin)"
    model = board_model(root)
    if model:
        return model
    if backend == "jetson":
        return f"jetson ({profile})" if profile else "jetson"
    product = _read(root, "/sys/class/dmi/id/product_name")
    host = socket.gethostname()
    return f"{product} ({host})" if product else host
