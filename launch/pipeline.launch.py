"""ros2 launch dvfo_ros pipeline.launch.py [params_file:=/path/pipeline.yaml] [namespace:=robot1]
       [model:=mobilenet_v2] [variants:=resnet18,efficientnet_b0] [device_profile:=tx2] [policy_mode:=dvfo]
       [backend:=auto]
       [cloud_endpoint:=tcp://10.0.0.5:5555 | cloud_endpoint:=none | edge_only:=true]
       [start_cloud:=true] [use_camera:=false image_topic:=/my_driver/image_raw]

Starts the nodes listed in dvfo_ros.nodes.graph.NODES (the same list dvfo-pipeline runs) with the
params file, plus the ZeroMQ cloud server (ExecuteProcess: it is not a ROS node) when start_cloud is
true and the executor's endpoint is local, given the executor's whole model
(dvfo_ros.nodes.graph.cloud_arguments, as dvfo-pipeline does).

model, variants, device_profile, policy_mode, backend and cloud_endpoint default to '' = not given: the params
file's values stand, and only the arguments given on the command line override them.
cloud_endpoint:=none (or edge_only:=true) runs edge-only: no cloud endpoint, no cloud server.
"""
import os

from ament_index_python.packages import get_package_prefix, get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, ExecuteProcess, GroupAction, LogInfo, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node, PushROSNamespace

from dvfo_ros.nodes.graph import CLOUD_EXECUTABLE, NODES, cloud_arguments, linked_params

# launch argument -> the (node, parameter) pairs it overrides when given
OVERRIDES = {
    "device_profile": [("governor", "profile"), ("policy", "profile")],
    "backend": [("governor", "backend")],
    "model": [("executor", "model"), ("policy", "model")],
    "variants": [("executor", "variants"), ("policy", "variants")],
    "cloud_endpoint": [("executor", "cloud_endpoint")],
    "policy_mode": [("policy", "policy_mode")],
}
EDGE_ONLY_WORDS = ("none", "off", "edge_only", "edge-only")


def _truthy(text: str) -> bool:
    return text.strip().lower() in ("1", "true", "yes", "on")


def _namespace(context, ns: str) -> str:
    """The namespace the nodes end up in: `ns` under any namespace pushed by an including file."""
    base = context.launch_configurations.get("ros_namespace", "") or ""
    if not ns:
        return base
    return ns if ns.startswith("/") else base.rstrip("/") + "/" + ns


def _overrides(context):
    """{node: {param: value}} for the launch arguments that were given (non-empty) only."""
    out = {}
    for arg, targets in OVERRIDES.items():
        value = LaunchConfiguration(arg).perform(context).strip()
        if arg == "cloud_endpoint":
            if value.lower() in EDGE_ONLY_WORDS or _truthy(LaunchConfiguration("edge_only").perform(context)):
                out.setdefault("executor", {})["cloud_endpoint"] = ""
                continue
        if value:
            for node, param in targets:
                out.setdefault(node, {})[param] = value
    return out


def _launch(context):
    from dvfo_ros.cli.pipeline import is_local_endpoint, load_params, several_fronts
    params_file = LaunchConfiguration("params_file").perform(context)
    ns = LaunchConfiguration("namespace").perform(context).strip()
    overrides = _overrides(context)
    image_topic = LaunchConfiguration("image_topic").perform(context).strip()
    use_camera = _truthy(LaunchConfiguration("use_camera").perform(context))
    from_file = load_params(params_file, namespace=_namespace(context, ns))
    if use_camera:   # the executor checks its input rate against the camera it is launched with
        linked = linked_params(from_file.get("camera", {}), from_file.get("executor", {}))
        if linked:
            overrides.setdefault("executor", {}).update(linked)
    actions = []
    for spec in NODES:
        if spec.name == "camera" and not use_camera:
            continue
        remaps = []
        if spec.name == "executor" and image_topic:
            remaps = [("camera/image_raw", image_topic)]
        parameters = [params_file] + ([overrides[spec.name]] if spec.name in overrides else [])
        actions.append(Node(package="dvfo_ros", executable=spec.name, name=spec.name, output="screen",
                            parameters=parameters, remappings=remaps))
    # The cloud: the executor's section of the params file as rcl applies it in this namespace (the
    # same parser dvfo-pipeline uses), with the launch arguments given, through cloud_arguments.
    executor = dict(from_file.get("executor", {}))
    executor.update(overrides.get("executor", {}))
    endpoint = str(executor.get("cloud_endpoint", "tcp://127.0.0.1:5555") or "")
    if _truthy(LaunchConfiguration("start_cloud").perform(context)):
        if not endpoint:
            actions.append(LogInfo(msg="dvfo_ros: edge-only (no cloud_endpoint), no cloud server started"))
        elif several_fronts(endpoint):
            actions.append(LogInfo(msg=f"dvfo_ros: {several_fronts(endpoint)}"))
        elif not is_local_endpoint(endpoint):
            actions.append(LogInfo(msg=f"dvfo_ros: cloud_endpoint {endpoint} is not local; "
                                       "not starting a cloud server (run dvfo-cloud there)"))
        else:
            exe = os.path.join(get_package_prefix("dvfo_ros"), "lib", "dvfo_ros", CLOUD_EXECUTABLE)
            actions.append(ExecuteProcess(cmd=[exe] + cloud_arguments(endpoint, executor), name="cloud",
                                          output="screen"))
    if ns:
        return [GroupAction([PushROSNamespace(ns)] + actions)]
    return actions


def generate_launch_description() -> LaunchDescription:
    share = get_package_share_directory("dvfo_ros")
    given = "; '' = not given: the params file's value stands"
    args = [
        DeclareLaunchArgument("params_file", default_value=os.path.join(share, "config", "pipeline.yaml"),
                              description="ROS 2 params file for all nodes (keys /**/<node> apply in any namespace)"),
        DeclareLaunchArgument("namespace", default_value="", description="ROS namespace for all nodes, e.g. robot1"),
        DeclareLaunchArgument("device_profile", default_value="",
                              description="device table / twin profile: nano, tx2, xavier_nx, orin_nx" + given),
        DeclareLaunchArgument("backend", default_value="",
                              description="governor hardware backend: auto, jetson, linux, nvml, sim" + given),
        DeclareLaunchArgument("model", default_value="",
                              description="zoo model: resnet18, mobilenet_v2, efficientnet_b0" + given),
        DeclareLaunchArgument("variants", default_value="",
                              description="zoo models the executor also serves and e2e_rl picks among" + given),
        DeclareLaunchArgument("cloud_endpoint", default_value="",
                              description="ZeroMQ endpoint of the cloud server; 'none' = edge-only" + given),
        DeclareLaunchArgument("edge_only", default_value="false",
                              description="true = no cloud endpoint, no cloud server (= cloud_endpoint:=none)"),
        DeclareLaunchArgument("policy_mode", default_value="", description="which policy acts" + given),
        DeclareLaunchArgument("start_cloud", default_value="true",
                              description="also start a local cloud server on a local cloud_endpoint"),
        DeclareLaunchArgument("use_camera", default_value="true",
                              description="start dvfo_ros's camera node; false = feed the executor from your driver"),
        DeclareLaunchArgument("image_topic", default_value="",
                              description="remap the executor's camera/image_raw to this topic (/my_driver/image_raw)"),
    ]
    return LaunchDescription(args + [OpaqueFunction(function=_launch)])
