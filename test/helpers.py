"""Small helpers several test modules share (test/ is on sys.path under pytest)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from hoi_perception.config import to_dict
from hoi_perception.frontends.mediapipe_models import HAND_LANDMARKS, PALM_DETECTOR, MediaPipeModelError, model_path
from hoi_perception.geometry.camera import box_from_points, project
from hoi_perception.models.config import load_model_config
from hoi_perception.models.network import HOINet
from hoi_perception.objects.models import bbox_control_points
from hoi_training.data.sample import HandObjectSample


def tiny_model(input_size: int = 64) -> list[str]:
    """Overrides of models/hfl_r18.yaml giving the smallest network the code accepts at ``input_size``."""
    return [f"input_size={input_size}", "backbone.fpn_channels=16", "roi.output_size=8", "hand_head.hourglass_depth=2",
            "hand_head.encoder_rounds=2", "hand_head.regressor_hidden=32", "object_head.num_blocks=1",
            "detection_head.head_channels=8"]


def write_tiny_checkpoint(path: Path, input_size: int = 64) -> Path:
    """A randomly initialised tiny HOINet saved as a training checkpoint (garbage estimates, real plumbing);
    its untrained boxes get a size of 6 cells so the detector's boxes are usable."""
    torch.manual_seed(0)
    model_config = load_model_config("models/hfl_r18.yaml", tiny_model(input_size))
    network = HOINet(model_config)
    with torch.no_grad():
        network.detection_head.size[-1].bias.fill_(6.0)
    torch.save({"model_config": to_dict(model_config), "model": network.state_dict()}, path)
    return Path(path)


def make_sample(seed: int = 0, side: str = "right") -> HandObjectSample:
    """A 320x240 frame whose 2D labels are exact projections of its 3D labels (fx != fy)."""
    rng = np.random.default_rng(seed)
    K = np.array([[290.0, 0, 170.0], [0, 310.0, 110.0], [0, 0, 1]])
    joints = rng.normal([0.03, 0.01, 0.45], 0.025, (21, 3))
    R = Rotation.random(random_state=seed).as_matrix()
    t = np.array([-0.04, 0.03, 0.5])
    points = bbox_control_points(np.array([-0.03, -0.02, -0.04]), np.array([0.03, 0.02, 0.04]))
    joints_2d, points_2d = project(joints, K), project(points @ R.T + t, K)
    image = rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)
    yy, xx = np.mgrid[:240, :320]
    hand_mask = (xx - joints_2d[0, 0]) ** 2 + (yy - joints_2d[0, 1]) ** 2 < 12**2
    return HandObjectSample(
        image=image, K=K, dataset="fixture", sequence="s", frame=str(seed), hand_side=side, object_name="box",
        hand_box=box_from_points(joints_2d), object_box=box_from_points(points_2d[:8]), joints_2d=joints_2d,
        joints_3d=joints, vertices_3d=rng.normal([0.03, 0.01, 0.45], 0.03, (778, 3)),
        mano_pose=rng.normal(0, 0.3, 48), mano_shape=np.zeros(10), mano_trans=rng.normal(0, 0.05, 3),
        object_rotation=R, object_translation=t, object_control_points=points, object_points_2d=points_2d,
        hand_mask=hand_mask, object_mask=~hand_mask).validate()


def reprojection_errors(sample: HandObjectSample) -> tuple[float, float, float]:
    hand = np.abs(project(sample.joints_3d, sample.K) - sample.joints_2d).max()
    obj = np.abs(project(sample.object_points_camera(), sample.K) - sample.object_points_2d).max()
    root = np.abs(project(sample.root_3d, sample.K) - sample.joints_2d[0]).max()
    return float(hand), float(obj), float(root)


def installed_mediapipe_model_dir() -> Path | None:
    """The folder of MediaPipe Hands' installed models, or None when they are not installed."""
    try:
        model_path(PALM_DETECTOR)
        return model_path(HAND_LANDMARKS).parent
    except MediaPipeModelError:
        return None


MEDIAPIPE_MODEL_DIR = installed_mediapipe_model_dir()
needs_mediapipe_models = pytest.mark.skipif(
    MEDIAPIPE_MODEL_DIR is None or not importlib.util.find_spec("ai_edge_litert"),
    reason="MediaPipe models not installed (pip install '.[mediapipe]' && hoi-perception install-mediapipe-models, "
           "or set HOI_MEDIAPIPE_DIR)")


def load_benchmark(name: str):
    """The module of ``benchmarks/<name>.py`` (benchmarks are scripts, not a package), registered as ``name``."""
    import sys

    spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parents[1] / "benchmarks" /
                                                  f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
