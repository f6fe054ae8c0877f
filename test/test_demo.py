"""``hoi-perception demo``: every output from a real (tiny, untrained) checkpoint, the start-up errors,
and the scoring and latency summaries on hand-made numbers."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from helpers import tiny_model  # test/ is on sys.path under pytest
from rosbags.highlevel import AnyReader
from scipy.spatial.transform import Rotation

from hoi_perception.config import to_dict
from hoi_perception.models.config import load_model_config
from hoi_perception.models.network import HOINet
from hoi_perception.pipeline import shipped_model
from hoi_perception.pipeline.demo import (
    DemoSequence,
    FramePrediction,
    SequenceTruth,
    run_demo,
    score_hand,
    score_object,
    summarize_latency,
)
from hoi_perception.pipeline.results import FrameResult
from hoi_perception.pipeline.shipped_model import ShippedCheckpointMissingError
from hoi_perception.synth.generator import BAG_EPOCH_NS, CAMERA_INFO_TOPIC, IMAGE_TOPIC

# A small network (64 px crops) like test_estimator's, saved the way the shipped checkpoint is: fp16 weights.
TINY_MODEL = tiny_model(64)
# Untrained scores are near 0.5 at best: accept every detection, so the crop network and PnP run too.
ACCEPT_ALL = ["detection.hand_score_threshold=0.0", "detection.object_score_threshold=0.0"]
SEQUENCE = DemoSequence(frames=5, width=128, height=96, seed=0, png_interval=2)


def write_fp16_checkpoint(path: Path) -> Path:
    torch.manual_seed(0)
    model_config = load_model_config("models/hfl_r18.yaml", TINY_MODEL)
    network = HOINet(model_config)
    with torch.no_grad():  # untrained boxes would have no size: make them 6 cells wide
        network.detection_head.size[-1].bias.fill_(6.0)
    weights = {k: v.half() if v.is_floating_point() else v for k, v in network.state_dict().items()}
    torch.save({"model_config": to_dict(model_config), "model": weights}, path)
    return path


def read_bag(path: Path) -> dict[str, list]:
    out: dict[str, list] = {}
    with AnyReader([path]) as reader:
        for connection, _, raw in reader.messages():
            out.setdefault(connection.topic, []).append(reader.deserialize(raw, connection.msgtype))
    return out


def stamp_ns(msg) -> int:
    return msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    checkpoint = write_fp16_checkpoint(root / "tiny.pt")
    out = root / "out"
    report = run_demo(out, checkpoint, overrides=ACCEPT_ALL, sequence=SEQUENCE)
    return out, checkpoint, report


def test_demo_writes_bag_video_frames_and_report(demo_run):
    out, checkpoint, report = demo_run
    meta = json.loads((out / "sequence" / "seq_0000" / "meta.json").read_text())
    labels = np.load(out / "sequence" / "seq_0000" / "labels.npz")
    assert (meta["frames"], meta["width"], meta["height"], meta["domain"]) == (5, 128, 96, "lab")

    bag = read_bag(out / "demo_bag")
    assert [stamp_ns(m) for m in bag[IMAGE_TOPIC]] == [BAG_EPOCH_NS + round(i / meta["fps"] * 1e9) for i in range(5)]
    first = bag[IMAGE_TOPIC][0]
    assert (first.width, first.height, first.encoding) == (128, 96, "rgb8")
    rgb0 = cv2.imread(str(out / "sequence" / "seq_0000" / "rgb" / "000000.png"))[..., ::-1]
    np.testing.assert_array_equal(first.data.reshape(96, 128, 3), rgb0)
    assert len(bag[CAMERA_INFO_TOPIC]) == 5
    np.testing.assert_allclose(bag[CAMERA_INFO_TOPIC][0].k.reshape(3, 3), labels["K"])
    assert {m.header.frame_id for m in bag[IMAGE_TOPIC] + bag[CAMERA_INFO_TOPIC]} == {"camera_color_optical_frame"}
    processed = report.latency.frames
    assert processed == 5 - report.skipped_frames == 5
    for topic in ("/hoi_perception/estimate", "/hoi_perception/markers", "/hoi_perception/debug_image"):
        assert len(bag[topic]) == processed, topic
    assert [stamp_ns(m) for m in bag["/hoi_perception/estimate"]] == [stamp_ns(m) for m in bag[IMAGE_TOPIC]]

    capture = cv2.VideoCapture(str(out / "overlay.mp4"))
    frames = 0
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        assert frame.shape == (96, 128, 3)
        frames += 1
    capture.release()
    assert frames == 5
    assert sorted(p.name for p in (out / "frames").iterdir()) == ["000000.png", "000002.png", "000004.png"]
    assert not list(out.glob(".*partial*"))

    saved = json.loads((out / "demo_report.json").read_text())
    assert saved["checkpoint"] == str(checkpoint) and saved["model_name"] == "hfl_r18"
    assert saved["engine"] == "onnxruntime (cpu)"
    assert saved["sequence"]["object_name"] == meta["object_name"]
    assert saved["sequence"]["hand_side"] == meta["hand_side"]
    stages = {s["stage"]: s for s in saved["latency"]["stages"]}
    assert stages["detect"]["frames"] >= 1 and stages["detect"]["median_ms"] > 0
    assert saved["latency"]["frames"] == 5 and saved["latency"]["fps"] > 0
    hand = saved["hand"]
    assert hand["frames"] == 5 and hand["detection_rate"] == hand["detected_frames"] / 5
    assert (hand["mpjpe_mm"] is None) == (hand["detected_frames"] == 0)
    assert saved["object"]["name"] == meta["object_name"] and saved["object"]["frames"] == 5
    assert 0.0 <= saved["object"]["add_accuracy"] <= 1.0
    markdown = (out / "demo_report.md").read_text()
    assert "| detect |" in markdown and "PA-MPJPE (mm)" in markdown and meta["object_name"] in markdown


def test_reruns_reuse_sequence_and_export_run_torch_and_refuse_conflicting_settings(demo_run):
    out, checkpoint, _ = demo_run
    onnx = out / "models" / "hfl_r18_crop.onnx"
    labels = out / "sequence" / "seq_0000" / "labels.npz"
    stamps = onnx.stat().st_mtime_ns, labels.stat().st_mtime_ns
    report = run_demo(out, checkpoint, overrides=ACCEPT_ALL, sequence=SEQUENCE)
    assert (onnx.stat().st_mtime_ns, labels.stat().st_mtime_ns) == stamps
    assert report.latency.frames == 5
    torch_run = run_demo(out, checkpoint, overrides=[*ACCEPT_ALL, "engine.kind=torch"], sequence=SEQUENCE)
    assert torch_run.engine == "torch (cpu)" and torch_run.latency.frames == 5
    assert onnx.stat().st_mtime_ns == stamps[0]
    # A folder rendered before a setting existed (its default renders the same) is reused too.
    manifest_path = out / "sequence" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    del manifest["config"]["camera"]["max_palm_view_cosine"]
    manifest_path.write_text(json.dumps(manifest))
    rerun = run_demo(out, checkpoint, overrides=[*ACCEPT_ALL, "engine.kind=torch"], sequence=SEQUENCE)
    assert rerun.latency.frames == 5
    assert labels.stat().st_mtime_ns == stamps[1]
    with pytest.raises(FileExistsError, match="rendered with other settings"):
        run_demo(out, checkpoint, sequence=DemoSequence(frames=4, width=128, height=96))
    with pytest.raises(ValueError, match="demo sequence shows"):
        run_demo(out, checkpoint, overrides=["object_name=no_such_object"], sequence=SEQUENCE)
    with pytest.raises(ValueError, match=r"sets \['crop_model'\]"):
        run_demo(out, checkpoint, overrides=["crop_model=elsewhere.onnx"], sequence=SEQUENCE)


def test_missing_shipped_checkpoint_stops_before_any_work(tmp_path, monkeypatch):
    monkeypatch.setattr(shipped_model, "SHIPPED_CHECKPOINT", tmp_path / "checkpoints" / "cpu_r18_synthetic.pt")
    with pytest.raises(ShippedCheckpointMissingError, match=r"is not in this installation.*--checkpoint PATH"):
        run_demo(tmp_path / "out")
    assert not (tmp_path / "out").exists()
    with pytest.raises(FileNotFoundError, match="--checkpoint '.*nothing.pt' does not exist"):
        run_demo(tmp_path / "out", tmp_path / "nothing.pt")


def test_corrupt_checkpoint_is_named_before_any_work(tmp_path):
    bad = tmp_path / "broken.pt"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match=r"checkpoint '.*broken\.pt' cannot be read as a PyTorch checkpoint"):
        run_demo(tmp_path / "out", bad)
    torch.save({"weights": torch.zeros(3)}, bad)
    with pytest.raises(ValueError, match=r"broken\.pt': expected a dict with 'model_config' and 'model'"):
        run_demo(tmp_path / "out", bad)
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------- scoring


def make_truth(frames: int = 4) -> SequenceTruth:
    rng = np.random.default_rng(3)
    joints = rng.normal(0.0, 0.04, (frames, 21, 3)) + np.array([0.0, 0.0, 0.4])
    rotations = Rotation.random(frames, random_state=4).as_matrix()
    translations = np.tile([0.05, 0.0, 0.45], (frames, 1))
    return SequenceTruth("right", joints, rotations, translations)


def test_hand_scores_are_exact_for_known_offsets():
    truth = make_truth()
    shift = np.array([0.010, 0.0, 0.0])  # 10 mm in x
    predictions = [FramePrediction(joints_cam=truth.joints_cam[i] + shift) for i in range(3)] + [FramePrediction()]
    predictions[1].other_side_hand = True
    score = score_hand(predictions, truth)
    assert (score.detected_frames, score.detection_rate, score.other_side_frames) == (3, 0.75, 1)
    assert score.mpjpe_mm == pytest.approx(10.0)
    assert score.root_relative_mpjpe_mm == pytest.approx(0.0, abs=1e-9)
    assert score.pa_mpjpe_mm == pytest.approx(0.0, abs=1e-4)
    scaled = [FramePrediction(joints_cam=(truth.joints_cam[i] - truth.joints_cam[i, :1]) * 1.5
                              + truth.joints_cam[i, :1]) for i in range(4)]
    score = score_hand(scaled, truth)
    rel = truth.joints_cam - truth.joints_cam[:, :1]
    expected = 1000 * 0.5 * np.linalg.norm(rel, axis=-1).mean(0).mean()
    assert score.mpjpe_mm == pytest.approx(expected) and score.root_relative_mpjpe_mm == pytest.approx(expected)
    assert score.pa_mpjpe_mm == pytest.approx(0.0, abs=1e-4)  # Procrustes removes the scale
    none = score_hand([FramePrediction()] * 4, truth)
    assert none.detection_rate == 0.0 and none.mpjpe_mm is None and none.pa_mpjpe_mm is None
    assert none.refused_frames == {}
    with pytest.raises(ValueError, match="3 predictions for a sequence of 4 frames"):
        score_hand(predictions[:3], truth)


def test_hand_refusals_are_counted_by_gate():
    """The report says why a hand that was estimated was not published: which gate refused it."""
    from hoi_perception.pipeline.gates import GateLimits, GateMeasures, gate_problem

    limits = GateLimits()
    reasons = [gate_problem(GateMeasures(0.0, 2.0, 0.0, True), limits),  # too large: depth
               gate_problem(GateMeasures(0.0, 0.5, 0.0, True), limits),  # too small: depth
               gate_problem(GateMeasures(0.9, 1.0, 0.0, True), limits),
               gate_problem(GateMeasures(0.0, 1.0, 0.9, True), limits)]
    predictions = [FramePrediction(hand_refusal=r) for r in reasons]
    score = score_hand(predictions, make_truth())
    assert score.refused_frames == {"box size": 2, "box centre": 1, "reprojection": 1}


def test_object_scores_add_accuracy_and_pose_errors():
    truth = make_truth()
    # A 10 cm cube's corners: diameter = 0.1 * sqrt(3) = 173.2 mm, 10 % of it 17.3 mm.
    points = np.array([[x, y, z] for x in (-0.05, 0.05) for y in (-0.05, 0.05) for z in (-0.05, 0.05)])
    spin = Rotation.from_euler("z", 90, degrees=True).as_matrix()
    predictions = [
        FramePrediction(rotation=truth.object_rotation[0], translation=truth.object_translation[0]),
        FramePrediction(rotation=truth.object_rotation[1], translation=truth.object_translation[1] + [0, 0, 0.01]),
        FramePrediction(rotation=truth.object_rotation[2] @ spin, translation=truth.object_translation[2]),
        FramePrediction(),
    ]
    score = score_object(predictions, truth, "cube", points, symmetric=False)
    assert score.diameter_mm == pytest.approx(100 * np.sqrt(3))
    assert (score.estimated_frames, score.detection_rate, score.metric) == (3, 0.75, "ADD")
    # Frame 2: a quarter turn about z moves each corner by |(x, y)| * sqrt(2) = 0.1 m > 17.3 mm.
    assert score.add_accuracy == pytest.approx(0.5)  # frames 0 and 1 of 4
    assert score.add_mean_mm == pytest.approx((0.0 + 10.0 + 100.0) / 3)
    assert score.rotation_error_deg == pytest.approx(30.0)
    assert score.translation_error_mm == pytest.approx(10.0 / 3)
    assert score.translation_error_max_mm == pytest.approx(10.0)
    assert score.within_tolerance_frames == 3  # 0, 10 and 0 mm off: all within 5 cm
    far = predictions[:1] + [FramePrediction(rotation=truth.object_rotation[1],
                                             translation=truth.object_translation[1] + [0.06, 0, 0])] + predictions[2:]
    assert score_object(far, truth, "cube", points, symmetric=False).within_tolerance_frames == 2
    # The cube's quarter turn is one of its symmetries: ADD-S scores it as perfect.
    symmetric = score_object(predictions, truth, "cube", points, symmetric=True)
    assert symmetric.metric == "ADD-S" and symmetric.add_mean_mm == pytest.approx(10.0 / 3)
    assert symmetric.add_accuracy == pytest.approx(0.75)


def test_latency_summary_medians_per_stage_and_rate():
    results = [FrameResult(0.0, timings_ms={"detect": 10.0, "crop": 1.0, "network": 20.0}),
               FrameResult(0.1, timings_ms={"crop": 2.0, "network": 30.0}),
               FrameResult(0.2, timings_ms={"crop": 3.0, "network": 40.0})]
    summary = summarize_latency(results, [40.0, 35.0, 45.0])
    assert [(s.stage, s.frames, s.median_ms) for s in summary.stages] == [
        ("detect", 1, 10.0), ("crop", 3, 2.0), ("network", 3, 30.0)]
    assert summary.stages[2].p90_ms == pytest.approx(38.0)
    assert summary.frame_median_ms == 40.0 and summary.fps == pytest.approx(3 / 0.120)
    with pytest.raises(ValueError, match="one wall time per result"):
        summarize_latency(results, [1.0])
