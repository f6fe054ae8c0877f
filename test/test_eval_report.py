"""EvaluationAccumulator summaries on hand-built frames, report files and the HO-3D submission format."""

import json
import zipfile

import numpy as np
import pytest
import trimesh

from hoi_perception.config import ConfigError, load_config
from hoi_training.evaluation.ho3d_submission import read_evaluation_list, read_ho3d_submission, write_ho3d_submission
from hoi_training.evaluation.report import (
    EvaluationAccumulator,
    EvaluationConfig,
    EvaluationFrame,
    FrameAnnotation,
    Hand3D,
    ObjectModel,
    ObjectPose,
    format_markdown,
    write_report,
)


def _lattice(count: int, spacing: float = 0.1) -> np.ndarray:
    """Points 10 cm apart, so a 1 cm shift moves every point 1 cm from its nearest neighbour."""
    idx = np.arange(count)
    return np.stack([idx % 10, (idx // 10) % 10, idx // 100], axis=1) * spacing + np.array([0.0, 0.0, 1.0])


GT_HAND = Hand3D(joints=_lattice(21), vertices=_lattice(778))
OFFSET = np.array([0.006, 0.008, 0.0])  # 10 mm
SHIFTED_HAND = Hand3D(joints=GT_HAND.joints + OFFSET, vertices=GT_HAND.vertices + OFFSET)


@pytest.fixture(scope="module")
def ball() -> ObjectModel:
    ico = trimesh.creation.icosphere(subdivisions=1, radius=0.05)  # diameter 0.1, box diagonal 0.1 * sqrt(3)
    return ObjectModel("ball", ico.vertices, symmetric=False, faces=ico.faces)


def _pose(t) -> ObjectPose:
    return ObjectPose(np.eye(3), np.asarray(t, dtype=float))


OBJ_T = np.array([0.5, -2.0, 3.0])  # far from the hand: no interaction


def _frames(ball: ObjectModel) -> list[EvaluationFrame]:
    return [
        EvaluationFrame(  # 10 mm hand offset, 4 mm object offset, hand box IoU 1/3, object box not predicted
            "s/0000",
            prediction=FrameAnnotation(SHIFTED_HAND, _pose(OBJ_T + [0, 0, 0.004]), hand_box=[0, 0, 10, 10]),
            ground_truth=FrameAnnotation(GT_HAND, _pose(OBJ_T), hand_box=[5, 0, 15, 10], object_box=[0, 0, 4, 4]),
            object_model=ball, sequence_id="s", frame_index=0),
        EvaluationFrame(  # perfect hand, 15 mm object offset
            "s/0001",
            prediction=FrameAnnotation(GT_HAND, _pose(OBJ_T + [0.015, 0, 0])),
            ground_truth=FrameAnnotation(GT_HAND, _pose(OBJ_T)),
            object_model=ball, sequence_id="s", frame_index=1),
        EvaluationFrame(  # perfect hand, no object label
            "s/0002",
            prediction=FrameAnnotation(GT_HAND),
            ground_truth=FrameAnnotation(GT_HAND),
            sequence_id="s", frame_index=2),
        EvaluationFrame(  # nothing predicted on a labelled frame
            "s/0003",
            prediction=FrameAnnotation(),
            ground_truth=FrameAnnotation(GT_HAND, _pose(OBJ_T)),
            object_model=ball, sequence_id="s", frame_index=3),
        EvaluationFrame(  # no labels at all: skipped everywhere
            "t/0000",
            prediction=FrameAnnotation(SHIFTED_HAND),
            ground_truth=FrameAnnotation()),
    ]


@pytest.fixture(scope="module")
def summary(ball):
    acc = EvaluationAccumulator()
    for frame in _frames(ball):
        acc.add(frame)
    assert len(acc) == 5
    return acc.summary()


def test_hand_counts_and_errors(summary):
    hand = summary["hand"]
    assert (hand["frames_labelled"], hand["frames_evaluated"], hand["missing_predictions"]) == (4, 3, 1)
    assert (hand["root_relative_frames_evaluated"], hand["missing_translations"]) == (3, 0)
    assert hand["mpjpe_mm"] == pytest.approx(10 / 3)
    assert hand["mpvpe_mm"] == pytest.approx(10 / 3)
    for key in ("root_relative_mpjpe_mm", "pa_mpjpe_mm", "scale_translation_mpjpe_mm", "pa_mpvpe_mm"):
        assert hand[key] == pytest.approx(0.0, abs=1e-4), key  # Procrustes leaves ~1e-9 m (official 1e-8 eps)


def test_hand_f_scores(summary):
    hand = summary["hand"]
    assert hand["f_score_5mm_pct"] == pytest.approx(200 / 3)  # the shifted frame scores 0 at 5 mm
    assert hand["f_score_15mm_pct"] == pytest.approx(100.0)
    assert hand["pa_f_score_5mm_pct"] == pytest.approx(100.0)
    assert hand["pa_f_score_15mm_pct"] == pytest.approx(100.0)


def test_hand_pck_auc(summary):
    # every joint: PCK 2/3 below 10 mm, 1 from 10 mm; grid 50 k / 99 mm puts 10 mm between k = 19 and 20
    t19, t20 = 50 * 19 / 99, 50 * 20 / 99
    area = (2 / 3) * t19 + (2 / 3 + 1) / 2 * (t20 - t19) + 1.0 * (50 - t20)
    assert summary["hand"]["pck_auc_joints_pct"] == pytest.approx(100 * area / 50)
    # aligned errors are ~1e-9 m, not 0: they fail only the 0 mm threshold, which costs up to half a step
    assert summary["hand"]["pck_auc_joints_pa_pct"] == pytest.approx(100.0, abs=100 * 0.5 / 99)
    curve = summary["hand"]["pck_curves"]["joints"]
    assert len(curve["thresholds_mm"]) == 100 and curve["pck_pct"][0] == pytest.approx(200 / 3)


def test_acceleration_uses_only_consecutive_predicted_frames(summary):
    # frames 0, 1, 2 are predicted (frame 3 is not): one triplet, error offset - 0 + 0 = 10 mm
    assert summary["hand"]["acceleration_error_triplets"] == 1
    assert summary["hand"]["acceleration_error_mm_per_frame_sq"] == pytest.approx(10.0)


def test_object_scores(summary, ball):
    assert ball.diameter == pytest.approx(0.1)
    assert ball.bbox_diagonal == pytest.approx(0.1 * np.sqrt(3))
    obj = summary["object"]
    assert (obj["frames_labelled"], obj["frames_evaluated"], obj["missing_predictions"]) == (3, 2, 1)
    # errors 4 mm, 15 mm, missing: threshold 10 mm (BOP diameter) or 17.3 mm (box diagonal)
    assert obj["add_adds_0.1d_pct"] == pytest.approx(100 / 3)
    assert obj["add_adds_0.1_bbox_diagonal_pct"] == pytest.approx(200 / 3)
    assert obj["add_mean_mm"] == pytest.approx(9.5)
    assert obj["adds_mean_mm"] <= obj["add_mean_mm"] + 1e-9
    assert obj["translation_error_mm"] == pytest.approx(9.5)
    assert obj["corner_error_mm"] == pytest.approx(9.5)
    assert obj["rotation_error_deg"] == pytest.approx(0.0, abs=1e-6)
    # VOCap on [4 mm, 15 mm, inf]: (4 * 1/3 + 11 * 2/3 + 85 * 2/3) / 100
    assert obj["ycbv_add_auc_pct"] == pytest.approx(100 * (4 / 3 + 22 / 3 + 170 / 3) / 100)
    assert summary["per_object"]["ball"]["add_adds_0.1d_pct"] == pytest.approx(100 / 3)
    assert summary["per_object"]["ball"]["diameter_mm"] == pytest.approx(100.0)


def test_boxes_and_interaction(summary):
    boxes = summary["boxes"]
    assert boxes["hand_box_iou_mean"] == pytest.approx(1 / 3)
    assert (boxes["object_frames_labelled"], boxes["object_missing_predictions"]) == (1, 1)
    assert boxes["object_box_iou_mean"] == 0.0
    inter = summary["interaction"]
    assert inter["frames_evaluated"] == 2  # frames with predicted hand vertices and object pose
    assert inter["contact_pct"] == 0.0 and inter["max_penetration_depth_mm"] == 0.0


def test_interaction_wiring_with_a_penetrating_vertex():
    box = trimesh.creation.box(extents=(0.1, 0.1, 0.1))
    model = ObjectModel("box", box.vertices, faces=box.faces)
    hand_vertices = np.full((778, 3), 5.0)
    hand_vertices[0] = [0.0, 0.0, 0.5]  # the centre of the posed box: 50 mm deep
    hand = Hand3D(np.full((21, 3), 5.0), hand_vertices)
    pose = _pose([0.0, 0.0, 0.5])
    acc = EvaluationAccumulator(EvaluationConfig(contact_threshold_m=0.001))
    acc.add(EvaluationFrame("a", FrameAnnotation(hand, pose), FrameAnnotation(), object_model=model))
    inter = acc.summary()["interaction"]
    assert inter["max_penetration_depth_mm"] == pytest.approx(50.0)
    assert inter["mean_penetration_depth_mm"] == pytest.approx(50.0)
    assert inter["contact_pct"] == 100.0 and inter["contact_threshold_mm"] == pytest.approx(1.0)


def test_root_relative_hand_is_scored_only_by_position_free_metrics(ball):
    wrist = GT_HAND.joints[0]
    # The true shape at twice its size about the wrist, position unknown.
    doubled = Hand3D(2 * (GT_HAND.joints - wrist), 2 * (GT_HAND.vertices - wrist), root_relative=True)
    acc = EvaluationAccumulator()
    acc.add(EvaluationFrame("s/0000", FrameAnnotation(SHIFTED_HAND), FrameAnnotation(GT_HAND),
                            sequence_id="s", frame_index=0))
    # An object pose next to the root-relative hand: interaction must not score it.
    acc.add(EvaluationFrame("s/0001", FrameAnnotation(doubled, _pose([0.0, 0.0, 0.0])),
                            FrameAnnotation(GT_HAND, _pose(OBJ_T)), object_model=ball,
                            sequence_id="s", frame_index=1))
    acc.add(EvaluationFrame("s/0002", FrameAnnotation(SHIFTED_HAND), FrameAnnotation(GT_HAND),
                            sequence_id="s", frame_index=2))
    acc.add(EvaluationFrame("s/0003", FrameAnnotation(), FrameAnnotation(GT_HAND)))
    summary = acc.summary()
    hand = summary["hand"]
    assert (hand["frames_labelled"], hand["missing_predictions"], hand["missing_translations"]) == (4, 1, 1)
    assert (hand["frames_evaluated"], hand["mesh_frames_evaluated"]) == (2, 2)
    assert (hand["root_relative_frames_evaluated"], hand["root_relative_mesh_frames_evaluated"]) == (3, 3)
    # Camera frame: the two shifted frames only.
    assert hand["mpjpe_mm"] == pytest.approx(10.0) and hand["mpvpe_mm"] == pytest.approx(10.0)
    assert hand["f_score_5mm_pct"] == pytest.approx(0.0) and hand["f_score_15mm_pct"] == pytest.approx(100.0)
    assert hand["acceleration_error_triplets"] == 0  # frame 1 has no camera-frame joints
    # Root-relative: 0 on the shifted frames; on the doubled one each joint is off by its distance from the
    # wrist, on the lattice 100 mm x (0..9, then sqrt(k^2 + 1) for k = 0..9, then 2).
    distances = 100 * np.array(list(range(10)) + [np.hypot(k, 1) for k in range(10)] + [2.0])
    assert hand["root_relative_mpjpe_mm"] == pytest.approx(distances.mean() / 3)
    # Similarity and scale-translation alignment undo the doubling.
    for key in ("pa_mpjpe_mm", "scale_translation_mpjpe_mm", "pa_mpvpe_mm"):
        assert hand[key] == pytest.approx(0.0, abs=1e-4), key
    assert hand["pa_f_score_5mm_pct"] == pytest.approx(100.0) and hand["pa_f_score_15mm_pct"] == pytest.approx(100.0)
    # Root-relative PCK: the wrist is always correct, every other joint in 2 of 3 frames (the doubled frame's
    # errors are all >= 100 mm); ~1e-17 m rounding may fail the 0 mm threshold, up to half a step.
    assert hand["pck_auc_joints_root_relative_pct"] == pytest.approx(100 * (1 + 20 * 2 / 3) / 21, abs=100 * 0.5 / 99)
    assert summary["object"]["frames_evaluated"] == 1 and summary["interaction"]["frames_evaluated"] == 0


def test_root_relative_hand_must_start_at_the_wrist_and_cannot_be_ground_truth():
    with pytest.raises(ValueError, match="wrist"):
        Hand3D(GT_HAND.joints, root_relative=True)
    centred = Hand3D(GT_HAND.joints - GT_HAND.joints[0], root_relative=True)
    with pytest.raises(ValueError, match="ground-truth hand must be in the camera frame"):
        EvaluationAccumulator().add(EvaluationFrame("a", FrameAnnotation(GT_HAND), FrameAnnotation(centred)))


def test_empty_accumulator_reports_nothing_scored():
    s = EvaluationAccumulator().summary()
    assert s["frames"] == 0 and s["hand"]["mpjpe_mm"] is None and s["interaction"]["frames_evaluated"] == 0


def test_invalid_frames_and_config_are_rejected(ball):
    acc = EvaluationAccumulator()
    frame = _frames(ball)[0]
    acc.add(frame)
    with pytest.raises(ValueError, match="already added"):
        acc.add(frame)
    with pytest.raises(ValueError, match="object_model"):
        EvaluationFrame("x", FrameAnnotation(), FrameAnnotation(object_pose=_pose([0, 0, 1])))
    with pytest.raises(ValueError, match="hand joints"):
        Hand3D(np.zeros((16, 3)))
    with pytest.raises(ValueError, match="proper rotation"):
        ObjectPose(np.diag([1.0, 1.0, -1.0]), np.zeros(3))
    with pytest.raises(ValueError, match="hand_box"):
        FrameAnnotation(hand_box=[10, 0, 0, 10])
    with pytest.raises(ConfigError, match="contact_threshold_m"):
        load_config(EvaluationConfig, {"contact_threshold_m": -0.001})
    assert load_config(EvaluationConfig, {"f_score_thresholds_m": [0.01]}).f_score_thresholds_m == [0.01]


def test_write_report_json_and_markdown(summary, tmp_path):
    json_path, md_path = write_report(summary, tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["metrics.json", "metrics.md"]
    loaded = json.loads(json_path.read_text())
    assert loaded["hand"]["mpjpe_mm"] == pytest.approx(10 / 3)
    assert loaded["per_object"]["ball"]["symmetric"] is False
    markdown = md_path.read_text()
    assert "| mpjpe_mm | 3.33 |" in markdown
    assert "| ball |" in markdown and "## Interaction" in markdown
    assert markdown == format_markdown(summary) + "\n"


def test_write_report_turns_non_finite_numbers_into_null(tmp_path):
    json_path, _ = write_report({"frames": 1, "hand": {"x_mm": float("nan"), "y_mm": np.float32(2.5)}}, tmp_path)
    assert json.loads(json_path.read_text())["hand"] == {"x_mm": None, "y_mm": 2.5}


# ----------------------------------------------------------------------------- HO-3D submission


def _submission_inputs():
    names = ["SM1/0000", "SM1/0001", "MPM10/0003"]
    rng = np.random.default_rng(0)
    hands = {n: Hand3D(rng.normal(scale=0.03, size=(21, 3)) + [0, 0, 0.6],
                       rng.normal(scale=0.03, size=(778, 3)) + [0, 0, 0.6]) for n in names}
    return names, hands


def test_ho3d_submission_round_trip(tmp_path):
    names, hands = _submission_inputs()
    (tmp_path / "evaluation.txt").write_text("\n".join(names) + "\n")
    order = read_evaluation_list(tmp_path / "evaluation.txt")
    out = write_ho3d_submission(tmp_path / "pred.zip", hands, order)
    with zipfile.ZipFile(out) as archive:
        assert archive.namelist() == ["pred.json"]
        raw = json.loads(archive.read("pred.json"))
    assert len(raw) == 2 and len(raw[0]) == len(raw[1]) == 3
    assert np.asarray(raw[0]).shape == (3, 21, 3) and np.asarray(raw[1]).shape == (3, 778, 3)
    # OpenGL: y and z flipped, so the hand lies at negative z
    np.testing.assert_allclose(raw[0][2], hands["MPM10/0003"].joints * [1, -1, -1], atol=5e-6)
    assert np.all(np.asarray(raw[1])[:, :, 2] < 0)
    back = read_ho3d_submission(out)
    for i, name in enumerate(order):
        np.testing.assert_allclose(back.joints[i], hands[name].joints, atol=5e-6)
        np.testing.assert_allclose(back.vertices[i], hands[name].vertices, atol=5e-6)


def test_ho3d_submission_rejects_bad_inputs(tmp_path):
    names, hands = _submission_inputs()
    with pytest.raises(ValueError, match="no prediction"):
        write_ho3d_submission(tmp_path / "a.zip", {n: hands[n] for n in names[:2]}, names)
    with pytest.raises(ValueError, match="not evaluation frames"):
        write_ho3d_submission(tmp_path / "a.zip", hands, names[:2])
    with pytest.raises(ValueError, match="11524"):
        write_ho3d_submission(tmp_path / "a.zip", hands, names, version="v2")
    opengl = dict(hands)
    opengl[names[0]] = Hand3D(hands[names[0]].joints * [1, -1, -1], hands[names[0]].vertices * [1, -1, -1])
    with pytest.raises(ValueError, match="OpenCV camera coordinates"):
        write_ho3d_submission(tmp_path / "a.zip", opengl, names)
    no_mesh = dict(hands)
    no_mesh[names[1]] = Hand3D(hands[names[1]].joints)
    with pytest.raises(ValueError, match="778 mesh vertices"):
        write_ho3d_submission(tmp_path / "a.zip", no_mesh, names)
    wrist_relative = dict(hands)
    hand = hands[names[2]]
    wrist_relative[names[2]] = Hand3D(hand.joints - hand.joints[0], hand.vertices - hand.joints[0], root_relative=True)
    with pytest.raises(ValueError, match="wrist-relative"):
        write_ho3d_submission(tmp_path / "a.zip", wrist_relative, names)
    assert not (tmp_path / "a.zip").exists()
