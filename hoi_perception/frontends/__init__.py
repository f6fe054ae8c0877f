"""Hand front-ends that stand in for the network's hand estimate (ROS-free).

* :mod:`~hoi_perception.frontends.mediapipe_models` - MediaPipe Hands' model files (install, checks);
* :mod:`~hoi_perception.frontends.mediapipe_hands` - palm detection, rotated crops, landmarks, tracking.
"""
