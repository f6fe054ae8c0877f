"""ROS 2 side of hoi_perception.

``hoi_perception.ros_messages`` turns per-frame results into ROS 2 messages (the
package's own ``hoi_perception/msg/*`` and the standard TF, marker, joint-state and
diagnostics messages). It needs no ROS installation: the same builders fill
rosbags message classes for recording bags here and, through a thin adapter,
rclpy classes on a robot. Nothing is imported here so that ``import
hoi_perception.ros`` stays cheap.
"""
