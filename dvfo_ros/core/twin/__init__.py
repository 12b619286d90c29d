"""The device twin: board profiles (YAML), per-stage workloads of the zoo models, and what a frame costs.

``from dvfo_ros.core.twin import DeviceTwin, load_profile, model_workload`` is the public API.
"""
from dvfo_ros.core.twin.device import (COMPRESSION_BY_XI, DOMAINS, PROFILE_DIR, DeviceProfile, DeviceTwin,
                                       FrameCost, ProfileError, bytes_per_value_at, list_profiles, load_profile)
from dvfo_ros.core.twin.workload import (Workload, model_workload, partition_points, partition_workload,
                                         published_accuracy)

__all__ = ["COMPRESSION_BY_XI", "DOMAINS", "PROFILE_DIR", "DeviceProfile", "DeviceTwin", "FrameCost",
           "ProfileError", "Workload", "bytes_per_value_at", "list_profiles", "load_profile", "model_workload",
           "partition_points", "partition_workload", "published_accuracy"]
