"""ros2 launch dvfo_ros fleet.launch.py [robots:=2] [params_file:=/path/pipeline.yaml] [model:=...]
       [device_profile:=...] [policy_mode:=...] [backend:=...] [cloud_endpoint:=tcp://127.0.0.1:5555]
       [edge_only:=true] [use_camera:=false image_topic:=...]

N robots' pipelines on one ROS graph, sharing one cloud server: pipeline.launch.py included N times
under the namespaces robot1..robotN (topics /robot1/camera/image_raw, /robot1/dvfo/inference, ...;
nodes /robot1/executor, ...; diagnostics named after each node's namespace), each reading the same
params file (its `/**/<node>` keys apply in every namespace). The cloud server is started once here,
with the executor's model as the params file sets it, and every robot's executor points at it.
The other arguments are passed to every robot and, as there, override only when given.
"""
import os

from ament_index_python.packages import get_package_prefix, get_package_share_directory
from launch import LaunchDescription
from launch.actions import (DeclareLaunchArgument, ExecuteProcess, IncludeLaunchDescription, LogInfo,
                            OpaqueFunction)
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration

from dvfo_ros.nodes.graph import CLOUD_EXECUTABLE, cloud_arguments

PASSED = ("params_file", "model", "device_profile", "policy_mode", "backend", "use_camera", "image_topic")


def _launch(context):
    from dvfo_ros.cli.pipeline import is_local_endpoint, load_params, several_fronts
    share = get_package_share_directory("dvfo_ros")
    robots = int(LaunchConfiguration("robots").perform(context))
    if robots < 1:
        raise ValueError(f"robots must be >= 1, got {robots}")
    values = {name: LaunchConfiguration(name).perform(context) for name in PASSED}
    executor = dict(load_params(values["params_file"], namespace="/robot1").get("executor", {}))
    if values["model"].strip():
        executor["model"] = values["model"].strip()
    endpoint = (LaunchConfiguration("cloud_endpoint").perform(context).strip()
                or str(executor.get("cloud_endpoint", "tcp://127.0.0.1:5555")) or "none")   # '' = edge-only
    if LaunchConfiguration("edge_only").perform(context).strip().lower() in ("1", "true", "yes", "on"):
        endpoint = "none"
    actions = []
    if several_fronts(endpoint):   # the executors fail over between fronts that each run their own dvfo-cloud
        actions.append(LogInfo(msg=f"dvfo_ros: {several_fronts(endpoint)}"))
    elif endpoint.lower() not in ("none", "off") and is_local_endpoint(endpoint):
        exe = os.path.join(get_package_prefix("dvfo_ros"), "lib", "dvfo_ros", CLOUD_EXECUTABLE)
        actions.append(ExecuteProcess(cmd=[exe] + cloud_arguments(endpoint, executor), name="cloud",
                                      output="screen"))
    for i in range(1, robots + 1):
        args = dict(values, namespace=f"robot{i}", start_cloud="false", cloud_endpoint=endpoint)
        actions.append(IncludeLaunchDescription(
            PythonLaunchDescriptionSource(os.path.join(share, "launch", "pipeline.launch.py")),
            launch_arguments=list(args.items())))
    return actions


def generate_launch_description() -> LaunchDescription:
    share = get_package_share_directory("dvfo_ros")
    given = "; '' = not given: the params file's value stands"
    return LaunchDescription([
        DeclareLaunchArgument("robots", default_value="2", description="how many robots: namespaces robot1..robotN"),
        DeclareLaunchArgument("params_file", default_value=os.path.join(share, "config", "pipeline.yaml"),
                              description="ROS 2 params file for every robot (keys /**/<node>)"),
        DeclareLaunchArgument("cloud_endpoint", default_value="",
                              description="the shared cloud server's endpoint (started here when local); "
                                          "'none' = every robot edge-only" + given),
        DeclareLaunchArgument("edge_only", default_value="false",
                              description="true = every robot edge-only, no cloud server (= cloud_endpoint:=none)"),
        DeclareLaunchArgument("model", default_value="", description="zoo model" + given),
        DeclareLaunchArgument("device_profile", default_value="", description="device profile" + given),
        DeclareLaunchArgument("policy_mode", default_value="", description="which policy acts" + given),
        DeclareLaunchArgument("backend", default_value="", description="governor hardware backend" + given),
        DeclareLaunchArgument("use_camera", default_value="true", description="start each robot's camera node"),
        DeclareLaunchArgument("image_topic", default_value="",
                              description="remap each executor's camera/image_raw (relative = per robot)"),
        OpaqueFunction(function=_launch),
    ])
