"""Replay a recorded bag through hoi_perception_node on simulated time, with RViz.

    ros2 launch hoi_perception replay.launch.py bag:=session_01

Arguments:
    bag           the bag folder (or file) to play (required)
    rate          playback rate factor
    loop          replay the bag in a loop
    start_delay   seconds between starting the node and starting playback, so the node is
                  configured (models loaded) before the first frame arrives
    camera        camera topic namespace, as in perception.launch.py ("" = the params file's topics)
    params_file   perception YAML, as in perception.launch.py
    rviz          open RViz
    record        record the node's outputs again (to process a bag with the live node)
    out_bag       output folder of that recording ("" = ros2 bag's dated default)

`ros2 bag play --clock` publishes /clock and every node here runs with use_sim_time, so
outputs carry the recorded stamps and RViz shows them at recorded time.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, ExecuteProcess, IncludeLaunchDescription, OpaqueFunction, TimerAction
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration

PACKAGE = "hoi_perception"


def _launch_setup(context):
    def value(name):
        return LaunchConfiguration(name).perform(context).strip()

    bag = value("bag")
    if not bag:
        raise RuntimeError("replay.launch.py needs bag:=<bag folder or file>")
    if not os.path.exists(bag):
        raise RuntimeError(f"bag '{bag}' does not exist")
    play = ["ros2", "bag", "play", bag, "--clock", "--rate", value("rate")]
    if value("loop").lower() in ("true", "1", "yes"):
        play.append("--loop")
    perception = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(os.path.join(get_package_share_directory(PACKAGE), "launch",
                                                   "perception.launch.py")),
        launch_arguments={"camera": value("camera"), "params_file": value("params_file"), "rviz": value("rviz"),
                          "record": value("record"), "bag": value("out_bag"), "use_sim_time": "true"}.items())
    return [perception,
            TimerAction(period=float(value("start_delay")), actions=[ExecuteProcess(cmd=play, output="screen")])]


def generate_launch_description():
    return LaunchDescription([
        DeclareLaunchArgument("bag", description="Bag folder or file to play"),
        DeclareLaunchArgument("rate", default_value="1.0", description="Playback rate factor"),
        DeclareLaunchArgument("loop", default_value="false", description="Replay in a loop"),
        DeclareLaunchArgument("start_delay", default_value="5.0",
                              description="Seconds to let the node load its models before playback starts"),
        DeclareLaunchArgument("camera", default_value="",
                              description="Camera topic namespace; empty = the params file's topics"),
        DeclareLaunchArgument("params_file", default_value="", description="Perception YAML; empty = installed one"),
        DeclareLaunchArgument("rviz", default_value="true", description="Open RViz"),
        DeclareLaunchArgument("record", default_value="false", description="Record the node's outputs"),
        DeclareLaunchArgument("out_bag", default_value="", description="Output folder of that recording"),
        OpaqueFunction(function=_launch_setup),
    ])
