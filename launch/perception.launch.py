"""Run hoi_perception_node on a live camera, optionally with RViz and a recording.

    ros2 launch hoi_perception perception.launch.py camera:=/camera/color rviz:=true

Arguments:
    camera        camera topic namespace: subscribes to <camera>/image_raw and <camera>/camera_info
                  ("" = the topics of the params file's node section)
    params_file   perception YAML with node: and estimator: sections (default: the installed
                  config/perception.yaml)
    rviz          open RViz with config/perception.rviz
    record        record the camera inputs and the node's outputs to MCAP (record.launch.py)
    bag           output folder of the recording ("" = ros2 bag's dated default)
    use_sim_time  use /clock (set by replay.launch.py)
    autostart     configure and activate the node on start (node parameter autostart; default true
                  here, false for a bare `ros2 run`); false leaves it to `ros2 lifecycle set`

With autostart a missing model file fails configure with an error naming it and the
process exits.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, IncludeLaunchDescription, OpaqueFunction
from launch.conditions import IfCondition
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from hoi_perception.ros.params import launch_params

PACKAGE = "hoi_perception"
NODE_NAME = "hoi_perception"


def _is_true(context, name):
    return LaunchConfiguration(name).perform(context).strip().lower() in ("true", "1", "yes")


def _launch_setup(context):
    share = get_package_share_directory(PACKAGE)
    params_file = LaunchConfiguration("params_file").perform(context) or os.path.join(share, "config",
                                                                                       "perception.yaml")
    use_sim_time = _is_true(context, "use_sim_time")
    _, overrides = launch_params(params_file, LaunchConfiguration("camera").perform(context))
    overrides["use_sim_time"] = use_sim_time
    overrides["autostart"] = _is_true(context, "autostart")
    return [
        Node(package=PACKAGE, executable="hoi_perception_node", name=NODE_NAME, output="screen", emulate_tty=True,
             parameters=[overrides]),
        Node(package="rviz2", executable="rviz2", name="rviz2", output="log",
             arguments=["-d", os.path.join(share, "config", "perception.rviz")],
             parameters=[{"use_sim_time": use_sim_time}], condition=IfCondition(LaunchConfiguration("rviz"))),
        IncludeLaunchDescription(
            PythonLaunchDescriptionSource(os.path.join(share, "launch", "record.launch.py")),
            launch_arguments={"camera": LaunchConfiguration("camera"), "params_file": params_file,
                              "node_name": NODE_NAME, "bag": LaunchConfiguration("bag")}.items(),
            condition=IfCondition(LaunchConfiguration("record"))),
    ]


def generate_launch_description():
    return LaunchDescription([
        DeclareLaunchArgument("camera", default_value="",
                              description="Camera topic namespace (<camera>/image_raw, <camera>/camera_info); "
                                          "empty = the params file's topics"),
        DeclareLaunchArgument("params_file", default_value="",
                              description="Perception YAML (node: and estimator: sections); empty = the installed "
                                          "config/perception.yaml"),
        DeclareLaunchArgument("rviz", default_value="false", description="Open RViz with config/perception.rviz"),
        DeclareLaunchArgument("record", default_value="false",
                              description="Record camera inputs and node outputs to MCAP"),
        DeclareLaunchArgument("bag", default_value="",
                              description="Output folder of the recording; empty = ros2 bag's dated default"),
        DeclareLaunchArgument("use_sim_time", default_value="false", description="Use /clock (bag replay)"),
        DeclareLaunchArgument("autostart", default_value="true",
                              description="Configure and activate the node on start (false: ros2 lifecycle set)"),
        OpaqueFunction(function=_launch_setup),
    ])
