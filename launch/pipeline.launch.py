"""ros2 launch dvfo_ros pipeline.launch.py [device_profile:=tx2] [model:=mobilenet_v2]
       [cloud_endpoint:=tcp://10.0.0.5:5555] [policy_mode:=dvfo] [params_file:=/path/pipeline.yaml]
       [start_cloud:=true]

Starts the nodes listed in dvfo_ros.nodes.graph.NODES (the same list dvfo-pipeline runs) with the
params file, plus the ZeroMQ cloud server when start_cloud is true (a local server for bench tests),
given the executor's whole model (dvfo_ros.nodes.graph.cloud_arguments, as dvfo-pipeline does).
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from dvfo_ros.nodes.graph import CLOUD_EXECUTABLE, NODES, cloud_arguments


def _cloud(context):
    """The cloud server, loading the executor's model: the params file's executor section with the
    launch arguments applied, through the same ModelSpec the executor builds (cloud_arguments)."""
    from dvfo_ros.cli.pipeline import load_params
    executor = dict(load_params(LaunchConfiguration("params_file").perform(context)).get("executor", {}))
    executor["model"] = LaunchConfiguration("model").perform(context)
    endpoint = LaunchConfiguration("cloud_endpoint").perform(context)
    return [Node(package="dvfo_ros", executable=CLOUD_EXECUTABLE, name="cloud", output="screen",
                 arguments=cloud_arguments(endpoint, executor))]


def generate_launch_description() -> LaunchDescription:
    share = get_package_share_directory("dvfo_ros")
    args = [
        DeclareLaunchArgument("params_file", default_value=os.path.join(share, "config", "pipeline.yaml"),
                              description="ROS 2 params file for all nodes"),
        DeclareLaunchArgument("device_profile", default_value="xavier_nx",
                              description="device table / twin profile: nano, tx2, xavier_nx, orin_nx"),
        DeclareLaunchArgument("model", default_value="resnet18",
                              description="zoo model: resnet18, mobilenet_v2, efficientnet_b0"),
        DeclareLaunchArgument("cloud_endpoint", default_value="tcp://127.0.0.1:5555",
                              description="ZeroMQ endpoint of the cloud server"),
        DeclareLaunchArgument("policy_mode", default_value="static", description="which policy acts"),
        DeclareLaunchArgument("start_cloud", default_value="true",
                              description="also start a local cloud server on cloud_endpoint"),
    ]
    params = LaunchConfiguration("params_file")
    overrides = {
        "governor": {"profile": LaunchConfiguration("device_profile")},
        "executor": {"model": LaunchConfiguration("model"), "cloud_endpoint": LaunchConfiguration("cloud_endpoint")},
        "policy": {"policy_mode": LaunchConfiguration("policy_mode"),
                   "profile": LaunchConfiguration("device_profile")},
    }
    nodes = [Node(package="dvfo_ros", executable=spec.name, name=spec.name, output="screen",
                  parameters=[params, overrides.get(spec.name, {})]) for spec in NODES]
    cloud = OpaqueFunction(function=_cloud, condition=IfCondition(LaunchConfiguration("start_cloud")))
    return LaunchDescription(args + nodes + [cloud])
