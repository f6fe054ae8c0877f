"""Evaluation: camera-frame geometry glue (checked with oracle network outputs) and the eval command."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import tiny_model  # test/ is on sys.path under pytest

from hoi_perception.config import ConfigError, load_config, to_dict
from hoi_perception.models.config import load_model_config
from hoi_perception.models.hand_head import HandDecoderOutput
from hoi_perception.models.network import HOINet, NetworkOutput
from hoi_perception.models.object_head import ObjectHeadOutput, points_to_box_units
from hoi_perception.objects.models import load_object_library
from hoi_training.data.augment import mirror_sample
from hoi_training.data.synthetic import SyntheticConfig, SyntheticDataset
from hoi_training.evaluate import EvaluationRunConfig, Evaluator, PreparedFrame, eval_main, evaluate_dataset

TINY_MODEL = tiny_model(32)


@pytest.fixture(scope="module")
def tiny_network() -> HOINet:
    torch.manual_seed(0)
    return HOINet(load_model_config("models/hfl_r18.yaml", TINY_MODEL)).eval()


class OracleEvaluator(Evaluator):
    """The crop network replaced by the crop's own labels: exact 2D joints, root-relative 3D
    joints and vertices, and every object cell voting for the true control points."""

    def run_network(self, frames: list[PreparedFrame]) -> NetworkOutput:
        crops = [f.crop for f in frames]
        hand_box = np.stack([c.hand_box for c in crops])
        object_box = np.stack([c.object_box for c in crops])
        joints2d = torch.from_numpy(points_to_box_units(np.stack([c.joints_2d for c in crops]), hand_box))
        joints3d = torch.from_numpy(np.stack([c.joints_3d - c.joints_3d[0] for c in crops]))
        vertices = torch.from_numpy(np.stack([c.vertices_3d - c.joints_3d[0] for c in crops]))
        points = torch.from_numpy(points_to_box_units(np.stack([c.object_points_2d for c in crops]), object_box))
        batch, grid = len(frames), 8
        hand = HandDecoderOutput(heatmaps=torch.zeros(batch, 21, grid, grid), joints2d=joints2d,
                                 joint_confidence=torch.ones(batch, 21), pose=torch.zeros(batch, 48),
                                 rot6d=torch.zeros(batch, 16, 6), betas=torch.zeros(batch, 10), vertices=vertices,
                                 joints3d=joints3d)
        votes = points[:, :, :, None, None].expand(batch, 21, 2, grid, grid)
        return NetworkOutput(hand=hand, object=ObjectHeadOutput(votes=votes, confidence=torch.full(
            (batch, 21, grid, grid), 0.9)))


class UnplacedOracleEvaluator(OracleEvaluator):
    """The oracle with every joint confidence 0, so the translation fit fails on every frame, and the
    root-relative joints and vertices twice their true size: a known root-relative error and no
    Procrustes or scale-translation error."""

    def run_network(self, frames: list[PreparedFrame]) -> NetworkOutput:
        output = super().run_network(frames)
        hand = dataclasses.replace(output.hand, joint_confidence=torch.zeros_like(output.hand.joint_confidence),
                                   joints3d=2 * output.hand.joints3d, vertices=2 * output.hand.vertices)
        return dataclasses.replace(output, hand=hand)


def _run_config(root: Path, *overrides: str) -> EvaluationRunConfig:
    return load_config(EvaluationRunConfig, {"dataset": {"kind": "synthetic", "config": {"root": str(root)}},
                                             "device": "cpu", "metrics": {"interaction_metrics": False}},
                       list(overrides))


def test_oracle_outputs_give_exact_camera_frame_hand_and_object(tiny_set, tiny_network):
    config = _run_config(tiny_set)
    dataset = SyntheticDataset(SyntheticConfig(tiny_set))
    evaluator = OracleEvaluator(tiny_network, config, load_object_library(None), torch.device("cpu"))
    evaluator.evaluate_batch([dataset[i] for i in range(len(dataset))])
    summary = evaluator.summary()
    assert summary["frames"] == 4
    assert summary["hand"]["frames_evaluated"] == 4 and summary["hand"]["missing_predictions"] == 0
    assert summary["hand"]["mpjpe_mm"] < 0.5 and summary["hand"]["mpvpe_mm"] < 0.5
    assert summary["object"]["frames_evaluated"] == 4 and summary["object"]["add_adds_0.1d_pct"] == 100.0
    assert summary["run"]["failures"] == {}
    joints2d = summary["joints2d"]
    assert joints2d["frames_scored"] == 4 and joints2d["crop_size_px"] == 32
    assert joints2d["mean_error_crop_px"] < 1e-6 and joints2d["mean_error_image_px"] < 1e-6
    assert joints2d["pck_2px_crop_pct"] == 100.0 and "detector" not in summary


class DrawnInOracleEvaluator(OracleEvaluator):
    """The oracle's votes drawn to 60 % of their spread about their centroid, as a trained object
    head's are (geometry/object_depth.py): PnP then puts the object 1/0.6 as far."""

    def run_network(self, frames: list[PreparedFrame]) -> NetworkOutput:
        output = super().run_network(frames)
        votes = output.object.votes
        centre = votes.mean(dim=1, keepdim=True)
        drawn_in = centre + 0.6 * (votes - centre)
        return dataclasses.replace(output, object=dataclasses.replace(output.object, votes=drawn_in))


def test_the_object_depth_from_its_box_undoes_votes_drawn_to_the_centre(tiny_set, tiny_network):
    dataset = SyntheticDataset(SyntheticConfig(tiny_set))
    scores = {}
    for from_box in ("true", "false"):
        evaluator = DrawnInOracleEvaluator(tiny_network, _run_config(tiny_set, f"object_depth.from_box={from_box}"),
                                           load_object_library(None), torch.device("cpu"))
        evaluator.evaluate_batch([dataset[i] for i in range(len(dataset))])
        scores[from_box] = evaluator.summary()["object"]
    assert scores["false"]["translation_error_mm"] > 100 and scores["false"]["add_adds_0.1d_pct"] == 0.0
    assert scores["true"]["translation_error_mm"] < 10 and scores["true"]["add_adds_0.1d_pct"] == 100.0


def test_2d_joint_errors_and_pck_in_pixels(tiny_set, tiny_network):
    """Joints shifted by 3 crop pixels: 3 px in the crop, 3 x (image / crop scale) px in the image."""

    class ShiftedOracle(OracleEvaluator):
        def run_network(self, frames):
            output = super().run_network(frames)
            widths = torch.tensor([f.crop.hand_box[2] - f.crop.hand_box[0] for f in frames], dtype=torch.float64)
            output.hand.joints2d = output.hand.joints2d + torch.stack([3.0 / widths, 0 * widths], 1)[:, None]
            return output

    dataset = SyntheticDataset(SyntheticConfig(tiny_set))
    evaluator = ShiftedOracle(tiny_network, _run_config(tiny_set), load_object_library(None), torch.device("cpu"))
    evaluator.evaluate_batch([dataset[i] for i in range(2)])
    joints2d = evaluator.summary()["joints2d"]
    assert joints2d["mean_error_crop_px"] == pytest.approx(3.0, abs=1e-6)
    assert (joints2d["pck_2px_crop_pct"], joints2d["pck_5px_crop_pct"]) == (0.0, 100.0)
    scales = [(f.transform.crop_to_image(np.array([[3.0, 0.0]])) - f.transform.crop_to_image(np.zeros((1, 2))))[0, 0]
              for f in evaluator.prepare([dataset[i] for i in range(2)])]
    assert joints2d["mean_error_image_px"] == pytest.approx(float(np.mean(scales)), rel=1e-6)


def test_detector_scores_recall_iou_and_side():
    from hoi_training.evaluate import DetectorScores

    scores = DetectorScores()
    base = _labelled_sample()
    truth = base.hand_box
    scores.add(base, truth, "right", base.object_box, 0.5)  # found, right side
    scores.add(base, truth + [1.0, 0, 1.0, 0], "left", None, 0.5)  # found, wrong side; object missed
    scores.add(base, None, "right", base.object_box, 0.5)  # hand missed
    scores.add(dataclasses.replace(base, hand_box=None), None, "right", base.object_box, 0.5)  # no hand label
    summary = scores.summary(0.5)
    assert summary["frames"] == 4 and summary["hand_recall_pct"] == pytest.approx(200 / 3)
    assert summary["hand_side_correct_of_found_pct"] == 50.0
    assert summary["object_recall_pct"] == 75.0 and summary["object_box_iou_of_found_mean"] == 1.0
    assert 0.7 < summary["hand_box_iou_of_found_mean"] < 1.0


@pytest.fixture(scope="module")
def tiny_mug_set(tmp_path_factory) -> Path:
    """Two 64x64 frames of the mug: its mirror plane is y, not the camera mirror's x."""
    from hoi_perception.synth.config import SynthConfig
    from hoi_perception.synth.generator import generate_dataset

    out = tmp_path_factory.mktemp("synth") / "mug"
    generate_dataset(load_config(SynthConfig, "synth.yaml", ["camera.width=64", "camera.height=64", "objects=[mug]"]),
                     out, sequences=1, frames=2, seed=0)
    return out


@pytest.mark.parametrize("object_set", ["tiny_set", "tiny_mug_set"])
def test_left_hands_are_mirrored_through_the_network_and_back(object_set, tiny_network, request):
    tiny_set = request.getfixturevalue(object_set)
    dataset = SyntheticDataset(SyntheticConfig(tiny_set))
    # Mirror the right-hand frames into left-hand ones. The library's objects have mirror planes, so a
    # mirrored object is the object itself at a real pose, which the mirrored crop's votes must give back.
    left = [mirror_sample(dataset[i]) for i in range(2)]
    assert {s.hand_side for s in left} == {"left"} and all(s.object_mirror_axis is not None for s in left)
    evaluator = OracleEvaluator(tiny_network, _run_config(tiny_set), load_object_library(None), torch.device("cpu"))
    evaluator.evaluate_batch(left)
    summary = evaluator.summary()
    assert summary["hand"]["frames_evaluated"] == 2 and summary["hand"]["mpjpe_mm"] < 0.5
    assert summary["object"]["frames_evaluated"] == 2 and summary["object"]["add_mean_mm"] < 0.5


def test_failed_translation_keeps_the_root_relative_hand_mirrored_back(tiny_set, tiny_network):
    dataset = SyntheticDataset(SyntheticConfig(tiny_set))
    right = [dataset[i] for i in range(2)]
    left = [dataclasses.replace(mirror_sample(dataset[i]), object_rotation=None, object_translation=None)
            for i in range(2, 4)]
    evaluator = UnplacedOracleEvaluator(tiny_network, _run_config(tiny_set, "hand_translation.box_fallback=false"),
                                        load_object_library(None), torch.device("cpu"))
    samples = right + left
    frames = evaluator.prepare(samples)
    output = evaluator.run_network(frames)
    for i, (sample, frame) in enumerate(zip(samples, frames)):
        prediction = evaluator.camera_frame(frame, output, i)
        assert prediction.hand.root_relative and prediction.notes[0].startswith("hand translation:")
        # Twice the true hand about the wrist, in the sample's own (left or right) camera.
        np.testing.assert_allclose(prediction.hand.joints, 2 * (sample.joints_3d - sample.joints_3d[0]), atol=1e-6)
        np.testing.assert_allclose(prediction.hand.vertices, 2 * (sample.vertices_3d - sample.joints_3d[0]),
                                   atol=1e-6)

    evaluator.evaluate_batch(samples)
    hand = evaluator.summary()["hand"]
    assert (hand["frames_labelled"], hand["missing_predictions"], hand["missing_translations"]) == (4, 0, 4)
    assert (hand["frames_evaluated"], hand["mesh_frames_evaluated"]) == (0, 0)
    assert (hand["root_relative_frames_evaluated"], hand["root_relative_mesh_frames_evaluated"]) == (4, 4)
    for key in ("mpjpe_mm", "mpvpe_mm", "f_score_5mm_pct", "pck_auc_joints_pct", "acceleration_error_mm_per_frame_sq"):
        assert hand[key] is None, key
    # Doubling about the wrist: each joint's root-relative error is its distance from the wrist.
    expected = np.mean([np.linalg.norm(s.joints_3d - s.joints_3d[0], axis=1).mean() for s in samples]) * 1000
    assert hand["root_relative_mpjpe_mm"] == pytest.approx(expected, rel=1e-5)
    for key in ("pa_mpjpe_mm", "scale_translation_mpjpe_mm", "pa_mpvpe_mm"):
        assert hand[key] == pytest.approx(0.0, abs=1e-3), key
    assert hand["pa_f_score_5mm_pct"] == pytest.approx(100.0)
    assert evaluator.summary()["run"]["failures"]["hand translation"] == 4


class DiffuseOracleEvaluator(OracleEvaluator):
    """The oracle with every joint confidence 0 (diffuse heatmaps): only the hand box can place the hand."""

    def run_network(self, frames: list[PreparedFrame]) -> NetworkOutput:
        output = super().run_network(frames)
        hand = dataclasses.replace(output.hand, joint_confidence=torch.zeros_like(output.hand.joint_confidence))
        return dataclasses.replace(output, hand=hand)


def test_box_fallback_places_hands_whose_joint_fit_fails(tiny_set, tiny_network):
    dataset = SyntheticDataset(SyntheticConfig(tiny_set))
    left = [dataclasses.replace(mirror_sample(dataset[i]), object_rotation=None, object_translation=None)
            for i in range(2, 4)]
    samples = [dataset[0], dataset[1], *left]
    evaluator = DiffuseOracleEvaluator(tiny_network, _run_config(tiny_set), load_object_library(None),
                                       torch.device("cpu"))
    evaluator.evaluate_batch(samples)
    summary = evaluator.summary()
    # The labelled box is the box of the projected mesh, so the exact mesh placed by it is exact.
    assert summary["hand"]["frames_evaluated"] == 4 and summary["hand"]["missing_translations"] == 0
    assert summary["hand"]["mpjpe_mm"] < 0.5 and summary["hand"]["mpvpe_mm"] < 0.5
    assert summary["run"]["hand_translation_methods"] == {"box": 4}
    assert "hand translation" not in summary["run"]["failures"]


def test_untrained_network_is_scored_and_failures_are_counted(tiny_set, tiny_network):
    dataset = SyntheticDataset(SyntheticConfig(tiny_set))
    summary = evaluate_dataset(tiny_network, dataset, _run_config(tiny_set, "max_frames=3", "batch_size=2"),
                               device=torch.device("cpu"))
    hand, obj = summary["hand"], summary["object"]
    assert summary["frames"] == 3
    assert hand["frames_labelled"] == 3 and hand["missing_predictions"] == 0  # the network always has a shape
    assert hand["frames_evaluated"] + hand["missing_translations"] == 3 and hand["root_relative_frames_evaluated"] == 3
    assert hand["pa_mpjpe_mm"] is not None
    assert obj["frames_labelled"] == 3 and obj["frames_evaluated"] + obj["missing_predictions"] == 3
    failures = summary["run"]["failures"]
    assert sum(failures.values()) == hand["missing_translations"] + obj["missing_predictions"]


def test_eval_command_writes_reports_for_both_box_sources(tiny_set, tiny_network, tmp_path):
    checkpoint = tmp_path / "model.pt"
    torch.save({"model_config": to_dict(tiny_network.config), "model": tiny_network.state_dict()}, checkpoint)
    data_config = tmp_path / "eval.yaml"
    data_config.write_text(f"dataset:\n  kind: synthetic\n  config: {{root: {tiny_set}}}\ndevice: cpu\n"
                           "metrics: {interaction_metrics: false}\n")
    assert eval_main(checkpoint, data_config, tmp_path / "gt") == 0
    report = json.loads((tmp_path / "gt" / "metrics.json").read_text())
    assert report["frames"] == 4 and report["run"]["boxes"] == "ground_truth"
    assert report["run"]["model"] == "hfl_r18" and report["boxes"]["hand_frames_labelled"] == 0
    assert "# Evaluation of hfl_r18 (synthetic, ground truth boxes)" in (tmp_path / "gt" / "metrics.md").read_text()

    # An untrained detector finds nothing above threshold: every frame is a missing prediction.
    assert eval_main(checkpoint, data_config, tmp_path / "det", ["boxes=detected"]) == 0
    report = json.loads((tmp_path / "det" / "metrics.json").read_text())
    assert report["boxes"]["hand_frames_labelled"] == 4 and report["boxes"]["hand_box_iou_mean"] == 0.0
    assert report["hand"]["missing_predictions"] == 4 and report["run"]["failures"] == {"no hand box": 4}
    assert report["detector"]["hand_recall_pct"] == 0.0 and report["detector"]["frames"] == 4
    # With no detection settings of its own, eval picks boxes as the runtime does (perception.yaml).
    from hoi_perception.pipeline.config import DEFAULT_PERCEPTION_CONFIG, load_estimator_config

    runtime = load_estimator_config(DEFAULT_PERCEPTION_CONFIG)
    assert report["detector"]["selection"]["hand_score_threshold"] == runtime.detection.hand_score_threshold
    assert report["detector"]["selection"]["object_score_threshold"] == runtime.detection.object_score_threshold
    assert report["detector"]["hand_side_from"] == runtime.hand_side_from == "crop_network"
    assert "## Detector" in (tmp_path / "det" / "metrics.md").read_text()


def _labelled_sample():
    from hoi_training.data.sample import HandObjectSample

    return HandObjectSample(image=np.zeros((64, 64, 3), np.uint8), K=np.eye(3), dataset="d", sequence="s", frame="0",
                            hand_side="right", object_name="box", hand_box=np.array([10.0, 10, 30, 40]),
                            object_box=np.array([20.0, 20, 50, 50]))


def test_eval_config_errors(tiny_set):
    with pytest.raises(ConfigError, match="'boxes_from_gt' is not one of"):
        _run_config(tiny_set, "boxes=boxes_from_gt")
    with pytest.raises(ConfigError, match="batch_size must be >= 1"):
        _run_config(tiny_set, "batch_size=0")
    with pytest.raises(ConfigError, match="synthetic dataset '/nowhere' is not a folder"):
        _run_config(Path("/nowhere"))
