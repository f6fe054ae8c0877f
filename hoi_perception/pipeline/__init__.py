"""The runtime pipeline: camera frames in, tracked hands and objects out, without ROS.

* :mod:`~hoi_perception.pipeline.estimator` - :class:`Estimator`, one frame at a time;
* :mod:`~hoi_perception.pipeline.config` - its configuration (``config/perception.yaml``);
* :mod:`~hoi_perception.pipeline.results` - :class:`FrameResult` and the tracked hands/objects;
* :mod:`~hoi_perception.pipeline.tracking` - boxes between frames and when to re-detect;
* :mod:`~hoi_perception.pipeline.mediapipe_frontend` - the hands from MediaPipe (``hand_frontend: mediapipe``);
* :mod:`~hoi_perception.pipeline.image_decoding` - ROS image/CameraInfo messages to arrays;
* :mod:`~hoi_perception.pipeline.bag_processing` - ``hoi-perception process-bag``;
* :mod:`~hoi_perception.pipeline.video` - ``hoi-perception run`` on videos and webcams.

Names are imported lazily, so ``import hoi_perception.pipeline.image_decoding`` stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Estimator": "hoi_perception.pipeline.estimator",
    "EstimatorConfig": "hoi_perception.pipeline.config",
    "load_estimator_config": "hoi_perception.pipeline.config",
    "FrameResult": "hoi_perception.pipeline.results",
    "TrackedHand": "hoi_perception.pipeline.results",
    "TrackedObject": "hoi_perception.pipeline.results",
    "TrackingConfig": "hoi_perception.pipeline.tracking",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'hoi_perception.pipeline' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
