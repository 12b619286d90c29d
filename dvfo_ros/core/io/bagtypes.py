"""dvfo_ros's own message types for rosbags, registered at run time from the .msg definitions.

A bag recorded on a robot carries ``dvfo_ros/msg/Transition`` etc.; the machine that trains on it
may have no built interfaces (no colcon, no ROS). rosbags decodes CDR from a definition alone, so
we hand it ours: the source checkout's ``msg/``, else the installed ``share/dvfo_ros/msg``, else
the copy embedded below (test/test_bags.py keeps it field-for-field equal to ``msg/``).
The type hashes rosbags computes from these definitions are the ones rosidl computes (RIHS01),
so a bag written with them is one ``ros2 bag info/play`` accepts.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple

from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

PACKAGE = "dvfo_ros"
MSG_NAMES: Tuple[str, ...] = ("DeviceState", "DvfoAction", "FrameLabel", "InferenceResult", "Observation",
                              "Transition")

# Topic -> type that dvfo-record records by default (the policy, executor and governor outputs).
DEFAULT_TOPICS: Dict[str, str] = {
    "/dvfo/transition": "dvfo_ros/msg/Transition",
    "/dvfo/observation": "dvfo_ros/msg/Observation",
    "/dvfo/action": "dvfo_ros/msg/DvfoAction",
    "/dvfo/device_state": "dvfo_ros/msg/DeviceState",
    "/dvfo/inference": "dvfo_ros/msg/InferenceResult",
}

# Comment-free copy of msg/*.msg, for a machine with neither the source checkout nor the installed package.
EMBEDDED_MSGS: Dict[str, str] = {
    "DeviceState": """std_msgs/Header header
string backend
string profile
int64 cpu_freq_hz
int64 gpu_freq_hz
int64 emc_freq_hz
float32 cpu_util
float32 gpu_util
float32 emc_util
string[] rail_names
float32[] rail_power_w
float32 power_w
float64 energy_j
float32 temperature_c
bool thermal_capped
string error
""",
    "DvfoAction": """std_msgs/Header header
uint64 seq
string policy
int64 cpu_freq_hz
int64 gpu_freq_hz
int64 emc_freq_hz
float32 offload_ratio
float32 fusion_weight
int32 split_index -1
string model_variant
int32 exit_point -1
string target
float32 decision_ms
""",
    "FrameLabel": """std_msgs/Header header
uint64 seq
int32 label
""",
    "InferenceResult": """std_msgs/Header header
uint64 seq
string model
int32 split_index
string target
int32[] top_classes
float32[] top_scores
int32 label
bool correct
float32 edge_ms
float32 transfer_ms
float32 cloud_ms
float32 total_ms
float64 energy_j
float32 offload_ratio
float32 fusion_weight
uint64 bytes_sent
bool cloud_used
bool fallback
string fallback_reason
bool error
string error_reason
""",
    "Observation": """std_msgs/Header header
uint64 seq
string[] names
float32[] values
""",
    "Transition": """std_msgs/Header header
uint64 step
string policy
float32 eta
string[] state_names
float32[] state
int32[] action
float32[] action_values
float32 reward
float32[] next_state
bool done
""",
}


def typename(name: str) -> str:
    """'Transition' -> 'dvfo_ros/msg/Transition' (the name rosbag2 stores)."""
    return f"{PACKAGE}/msg/{name}"


def _source_msg_dir() -> Path:
    return Path(__file__).resolve().parents[3] / "msg"          # the checkout: dvfo_ros/core/io/ -> 3 up


def candidate_msg_dirs() -> List[Path]:
    """Where the .msg files may live, best first: source checkout, then installed share/ dirs."""
    dirs = [_source_msg_dir()]
    for prefix in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep):
        if prefix:
            dirs.append(Path(prefix) / "share" / PACKAGE / "msg")
    try:  # the built interfaces' own prefix: <prefix>/lib/pythonX.Y/site-packages/dvfo_ros/msg
        import importlib.util
        spec = importlib.util.find_spec(f"{PACKAGE}.msg")
        if spec is not None and spec.origin:
            dirs.append(Path(spec.origin).resolve().parents[5] / "share" / PACKAGE / "msg")
    except (ImportError, IndexError, ValueError):
        pass
    return dirs


def load_definitions(msg_dir: Optional[Path] = None) -> Tuple[Dict[str, str], str]:
    """({'Transition': text, ...}, where they came from). A dir must hold every message to be used."""
    dirs = [Path(msg_dir)] if msg_dir is not None else candidate_msg_dirs()
    for d in dirs:
        if all((d / f"{n}.msg").is_file() for n in MSG_NAMES):
            return {n: (d / f"{n}.msg").read_text() for n in MSG_NAMES}, str(d)
    if msg_dir is not None:
        raise FileNotFoundError(f"{msg_dir} does not hold {', '.join(n + '.msg' for n in MSG_NAMES)}")
    return dict(EMBEDDED_MSGS), "embedded copy in dvfo_ros/core/bagtypes.py"


def parse_definitions(defs: Dict[str, str]) -> Dict[str, tuple]:
    """Definitions -> rosbags' field dicts (comments and formatting do not matter)."""
    out: Dict[str, tuple] = {}
    for name, text in defs.items():
        out.update(get_types_from_msg(text, typename(name)))
    return out


def make_typestore(msg_dir: Optional[Path] = None, extra_msg_files: Iterable[Path] = ()) -> Typestore:
    """A rosbags typestore with the ROS 2 standard types plus dvfo_ros's messages (and any extras,
    e.g. share/<pkg>/msg/<Name>.msg of another package a user records alongside)."""
    store = get_typestore(Stores.LATEST)
    defs, _ = load_definitions(msg_dir)
    store.register(parse_definitions(defs))
    for f in extra_msg_files:
        f = Path(f)
        store.register(get_types_from_msg(f.read_text(), f"{f.parent.parent.name}/msg/{f.stem}"))
    return store


_DEFAULT_STORE: Optional[Typestore] = None


def default_typestore() -> Typestore:
    """One shared typestore (building it parses every standard message once: ~0.1 s)."""
    global _DEFAULT_STORE
    if _DEFAULT_STORE is None:
        _DEFAULT_STORE = make_typestore()
    return _DEFAULT_STORE


def find_installed_msg(msgtype: str) -> Optional[Path]:
    """'pkg/msg/Name' -> share/pkg/msg/Name.msg under AMENT_PREFIX_PATH, if a ROS install has it."""
    parts = msgtype.split("/")
    if len(parts) != 3:
        return None
    pkg, kind, name = parts
    for prefix in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep):
        f = Path(prefix) / "share" / pkg / kind / f"{name}.msg"
        if prefix and f.is_file():
            return f
    return None


def ensure_type(store: Typestore, msgtype: str) -> bool:
    """Make ``msgtype`` known to ``store`` (from an installed .msg if need be); False when impossible."""
    if msgtype in store.fielddefs:
        return True
    f = find_installed_msg(msgtype)
    if f is None:
        return False
    try:
        store.register(get_types_from_msg(f.read_text(), msgtype))
        store.hash_rihs01(msgtype)      # every nested type must be known too
    except Exception:  # noqa: BLE001 - a definition we cannot use is the same as none
        return False
    return True
