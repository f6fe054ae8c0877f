"""Pseudo-labelling fixtures shared by the pipeline, dataset and SemiHand tests: small synthetic
sets, a tiny network whose detector is rigged to fire, and an oracle network that answers with
the ground truth so a whole job's geometry can be checked."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from hoi_perception.config import load_config, to_dict
from hoi_perception.geometry.mirror import mirror_axis_angle, mirror_points_3d
from hoi_perception.models.detection_head import Detection, FrameDetections
from hoi_perception.pipeline.crops import crop_geometry
from hoi_training.data.synthetic import SyntheticConfig, SyntheticDataset
from hoi_training.pseudolabel import load_pseudolabel_config
from hoi_training.pseudolabel.pipeline import LabellingGeometry, PseudoLabelNetwork, run_job
from hoi_training.train_config import TrainConfig


def make_synthetic(out: Path, domain: str, sequences: int, frames: int, seed: int) -> Path:
    from hoi_perception.synth.config import SynthConfig
    from hoi_perception.synth.generator import generate_dataset

    generate_dataset(load_config(SynthConfig, "synth.yaml", ["camera.width=64", "camera.height=64"]), out,
                     sequences=sequences, frames=frames, seed=seed, domain=domain)
    return out


DETECTION_SCORE = 1.0 / (1.0 + np.exp(-3.0))  # the rigged detector's right-hand score
TINY_JOB = ["batch_size=16", "sharding.units_per_shard=1"]


def write_rigged_detector_checkpoint(path: Path, data_root: Path) -> Path:
    """The tiny test network with a detector rigged to fire: right hand everywhere at logit 3
    (object at 2), boxes 5x5 cells (20 px) centred in their cells."""
    config = load_config(TrainConfig, "train/tiny_test.yaml",
                         [f"datasets.synthetic.config.root={data_root}"]).model_config()
    torch.manual_seed(0)
    from hoi_perception.models.network import HOINet

    network = HOINet(config)
    head = network.detection_head
    with torch.no_grad():
        for branch, bias in ((head.heatmap, [3.0, -5.0, 2.0]), (head.size, [5.0, 5.0]), (head.offset, [0.5, 0.5])):
            branch[-1].weight.zero_()
            branch[-1].bias.copy_(torch.tensor(bias))
    torch.save({"model_config": to_dict(config), "model": network.state_dict()}, path)
    return path


class OracleNetwork:
    """Stands in for the network's two entry points with a synthetic dataset's ground truth, handed
    out as the network would give it (crop pixels, mirrored camera for left hands), so the
    pipeline's geometry can be checked against the truth. Frames are recognised by their pixels."""

    def __init__(self, dataset: SyntheticDataset) -> None:
        self.samples = {dataset[i].image.tobytes(): dataset[i] for i in range(len(dataset))}
        self.pending: list = []

    def detect(self, network: PseudoLabelNetwork, image: np.ndarray) -> FrameDetections:
        sample = self.samples[image.tobytes()]
        self.pending.append(sample)
        hand = Detection(f"{sample.hand_side}_hand", sample.hand_box, 0.9)
        return FrameDetections(right_hand=hand if sample.hand_side == "right" else None,
                               left_hand=hand if sample.hand_side == "left" else None,
                               object=Detection("object", sample.object_box, 0.9))

    def predict(self, network: PseudoLabelNetwork, crops: np.ndarray, hand_boxes, object_boxes) -> dict:
        samples, self.pending = self.pending[-len(crops):], []
        out: dict[str, list] = {k: [] for k in ("joints_2d", "joints_3d", "vertices", "pose", "betas")}
        for sample in samples:
            left = sample.hand_side == "left"
            geometry = crop_geometry(sample.hand_box, sample.object_box, sample.image.shape[1],
                                     network.input_size, left)
            joints = sample.joints_3d - sample.joints_3d[0]
            vertices = sample.vertices_3d - sample.joints_3d[0]
            matrix = geometry.image_to_crop
            out["joints_2d"].append(sample.joints_2d @ matrix[:2, :2].T + matrix[:2, 2])
            out["joints_3d"].append(mirror_points_3d(joints) if left else joints)
            out["vertices"].append(mirror_points_3d(vertices) if left else vertices)
            out["pose"].append(mirror_axis_angle(sample.mano_pose) if left else sample.mano_pose)
            out["betas"].append(sample.mano_shape)
        arrays = {k: np.stack(v) for k, v in out.items()}
        arrays["joint_confidence"] = np.ones((len(samples), 21))
        return arrays


def oracle_job(wild: Path, checkpoint: Path, out: Path, monkeypatch) -> Path:
    """A job whose network is the :class:`OracleNetwork` of ``wild``."""
    oracle = OracleNetwork(SyntheticDataset(SyntheticConfig(root=wild, load_masks=False)))
    monkeypatch.setattr(PseudoLabelNetwork, "detect", lambda self, image: oracle.detect(self, image))
    monkeypatch.setattr(PseudoLabelNetwork, "predict", lambda self, *args: oracle.predict(self, *args))
    run_job(checkpoint, "synthetic", wild, out, load_pseudolabel_config(None, TINY_JOB), LabellingGeometry(),
            progress=False)
    monkeypatch.undo()
    return out
