"""Record the camera inputs and hoi_perception_node's outputs to an MCAP bag.

    ros2 launch hoi_perception record.launch.py camera:=/camera/color bag:=session_01

Arguments:
    camera        camera topic namespace (<camera>/image_raw, <camera>/camera_info);
                  "" = the topics of the params file's node section
    params_file   perception YAML whose node: section names the topics ("" = the installed one)
    node_name     name of the perception node, whose private (~/) outputs are recorded
    bag           output folder ("" = ros2 bag's dated default, rosbag2_<date>)
    debug_image   also record the overlay image (large; it can be redrawn offline)

Recorded: the node's synchronised inputs (image or compressed image, CameraInfo, depth
when configured), /tf and /tf_static, its enabled outputs and /diagnostics. The bag
replays with replay.launch.py and is the input of offline pseudo-labelling.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, ExecuteProcess, OpaqueFunction
from launch.substitutions import LaunchConfiguration

from hoi_perception.ros.node_logic import recording_topics
from hoi_perception.ros.params import launch_params

PACKAGE = "hoi_perception"


def _launch_setup(context):
    def value(name):
        return LaunchConfiguration(name).perform(context).strip()

    params_file = value("params_file") or os.path.join(get_package_share_directory(PACKAGE), "config",
                                                       "perception.yaml")
    params, _ = launch_params(params_file, value("camera"))
    topics = recording_topics(params, value("node_name"),
                              debug_image=value("debug_image").lower() in ("true", "1", "yes"))
    command = ["ros2", "bag", "record", "--storage", "mcap"]
    if value("bag"):
        command += ["--output", value("bag")]
    return [ExecuteProcess(cmd=command + topics, output="screen")]


def generate_launch_description():
    return LaunchDescription([
        DeclareLaunchArgument("camera", default_value="",
                              description="Camera topic namespace; empty = the params file's topics"),
        DeclareLaunchArgument("params_file", default_value="",
                              description="Perception YAML naming the topics; empty = the installed one"),
        DeclareLaunchArgument("node_name", default_value="hoi_perception",
                              description="Perception node whose ~/ outputs are recorded"),
        DeclareLaunchArgument("bag", default_value="", description="Output folder; empty = ros2 bag's default"),
        DeclareLaunchArgument("debug_image", default_value="false", description="Also record the overlay image"),
        OpaqueFunction(function=_launch_setup),
    ])
