"""hoi-train pseudolabel end to end: bag, video and synthetic sources, resume, refilter, bad input."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from pseudolabel_fixtures import (  # test/ is on sys.path under pytest
    DETECTION_SCORE,
    TINY_JOB,
    oracle_job,
    write_rigged_detector_checkpoint,
)

from hoi_perception.config import ConfigError, load_config
from hoi_perception.geometry.camera import project
from hoi_perception.pipeline.crops import crop_geometry, extract_crop
from hoi_perception.pipeline.video import intrinsics_from_fov
from hoi_training.data.synthetic import SyntheticConfig, SyntheticDataset
from hoi_training.pseudolabel import ConstraintConfig, load_pseudolabel_config, load_shard
from hoi_training.pseudolabel.dataset import ablation_constraints, job_constraints, read_manifest, refilter
from hoi_training.pseudolabel.pipeline import (
    LabellingGeometry,
    PseudoLabeller,
    _augment_boxes,
    pseudolabel_main,
    run_job,
)
from hoi_training.pseudolabel.tta import Augmentation


@pytest.fixture(scope="module")
def wild(tmp_path_factory) -> Path:
    from hoi_perception.synth.config import SynthConfig
    from hoi_perception.synth.generator import generate_dataset

    out = tmp_path_factory.mktemp("synth") / "wild"
    generate_dataset(load_config(SynthConfig, "synth.yaml", ["camera.width=64", "camera.height=64"]), out,
                     sequences=2, frames=4, seed=5, domain="wild", write_bags=True)  # a right and a left hand
    return out


@pytest.fixture(scope="module")
def checkpoint(wild, tmp_path_factory) -> Path:
    return write_rigged_detector_checkpoint(tmp_path_factory.mktemp("model") / "tiny.pt", wild)


@pytest.fixture(scope="module")
def synthetic_job(wild, checkpoint, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("jobs") / "synthetic"
    report = run_job(checkpoint, "synthetic", wild, out, load_pseudolabel_config(None, TINY_JOB), LabellingGeometry(),
                     progress=False)
    assert report.processed == [0, 1] and report.manifest_path is not None
    return out


def shard_rows(out: Path) -> dict[str, np.ndarray]:
    manifest = read_manifest(out)
    shards = [load_shard(out / s["file"]) for s in manifest["shards"] if s["status"] == "done"]
    return {key: np.concatenate([s[key] for s in shards]) for key in shards[0]}


def test_synthetic_source_uses_the_detector_not_the_labelled_boxes(synthetic_job, wild, checkpoint):
    manifest = read_manifest(synthetic_job)
    assert manifest["complete"] and manifest["num_shards"] == 2
    assert manifest["checkpoint_hash"] == hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    assert manifest["config"]["source_kind"] == "synthetic"
    assert manifest["source"] == f"synthetic:{wild.resolve()}"
    counts = manifest["counts"]
    assert counts["source_frames"] == 8 and counts["frames"] == 8 and counts["frames_without_hand"] == 0
    assert counts["kept"] + counts["dropped"] == 8
    assert all(f"rejected_by.{c}" in counts for c in ("box_iou", "reprojection", "pose_change", "shape"))

    rows = shard_rows(synthetic_job)
    assert rows["box_source"].tolist() == ["detection"] * 8
    np.testing.assert_allclose(rows["box_score"], DETECTION_SCORE, rtol=1e-5)
    labelled = SyntheticDataset(SyntheticConfig(root=wild, load_masks=False))
    truth = np.stack([labelled[i].hand_box for i in range(len(labelled))])
    assert not np.allclose(rows["hand_boxes"], truth, atol=1.0)  # the labels never reach the job
    assert rows["hand_side"].tolist() == ["right"] * 8 and rows["has_intrinsics"].all()
    np.testing.assert_allclose(rows["K"], np.stack([labelled[i].K for i in range(8)]))
    assert rows["frame_ids"].tolist() == [0, 1, 2, 3, 0, 1, 2, 3]

    # The stored crop is the network's crop of the frame, PNG-lossless.
    sample = labelled[5]
    geometry = crop_geometry(rows["hand_boxes"][5], rows["object_boxes"][5], 64, 32, False)
    np.testing.assert_allclose(rows["image_to_crop"][5], geometry.image_to_crop)
    stored = cv2.imdecode(np.frombuffer(rows["crop_png"][5], np.uint8), cv2.IMREAD_COLOR)[..., ::-1]
    np.testing.assert_array_equal(stored, extract_crop(sample.image, geometry))

    # Camera-frame hand: the fitted wrist puts the 3D joints onto the 2D joints (weighted LSQ fit).
    fitted = np.isfinite(rows["hand_translation"]).all(1)
    for i in np.flatnonzero(fitted):
        reprojected = project(rows["joints_3d"][i] + rows["hand_translation"][i], rows["K"][i])
        baseline = project(rows["joints_3d"][i] + rows["hand_translation"][i] * [1, 1, 1.5], rows["K"][i])
        assert np.abs(reprojected - rows["joints_2d"][i]).mean() < np.abs(baseline - rows["joints_2d"][i]).mean()


def test_bag_source_through_the_command_matches_the_synthetic_source(synthetic_job, wild, checkpoint, tmp_path):
    out = tmp_path / "bag"
    assert pseudolabel_main(checkpoint, "bag", wild / "bags", out, overrides=TINY_JOB) == 0
    manifest = read_manifest(out)
    assert manifest["config"]["pseudolabel"]["source"]["kind"] == "bag"
    assert manifest["counts"] == read_manifest(synthetic_job)["counts"]
    from_bag, from_dataset = shard_rows(out), shard_rows(synthetic_job)
    assert from_bag["frame_ids"].tolist() == from_dataset["frame_ids"].tolist()
    for key in ("joints_2d", "joints_3d", "hand_pose", "betas", "kept", "crop_png"):
        np.testing.assert_array_equal(from_bag[key], from_dataset[key], err_msg=key)


def test_runtime_settings_of_the_job_come_from_perception_overrides(wild, checkpoint, tmp_path):
    out = tmp_path / "strict"
    # A detector threshold no score reaches: every frame is left without a hand, and the manifest says why.
    assert pseudolabel_main(checkpoint, "bag", wild / "bags", out, overrides=TINY_JOB,
                            perception_overrides=["detection.hand_score_threshold=1.0"]) == 0
    manifest = read_manifest(out)
    assert manifest["config"]["labelling"]["detection"]["hand_score_threshold"] == 1.0
    assert manifest["counts"]["frames_without_hand"] == manifest["counts"]["source_frames"] > 0
    with pytest.raises(ConfigError, match="hand_score_threshold"):
        pseudolabel_main(checkpoint, "bag", wild / "bags", tmp_path / "bad", overrides=TINY_JOB,
                         perception_overrides=["detection.hand_score_threshold=2"])


def test_killed_job_resumes_to_byte_identical_files(synthetic_job, wild, checkpoint, tmp_path, monkeypatch):
    out = tmp_path / "resumed"
    original = PseudoLabeller.label_unit
    calls = []

    def killed_on_second_unit(self, unit):
        calls.append(unit.key)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(self, unit)

    config = load_pseudolabel_config(None, TINY_JOB)
    monkeypatch.setattr(PseudoLabeller, "label_unit", killed_on_second_unit)
    with pytest.raises(KeyboardInterrupt):
        run_job(checkpoint, "synthetic", wild, out, config, LabellingGeometry(), progress=False)
    assert not (out / "manifest.json").exists() and (out / "shards" / "shard_00000.npz").exists()
    monkeypatch.setattr(PseudoLabeller, "label_unit", original)
    report = run_job(checkpoint, "synthetic", wild, out, config, LabellingGeometry(), progress=False)
    assert report.skipped == [0] and report.processed == [1]
    files = sorted(p.relative_to(synthetic_job) for p in synthetic_job.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    for name in files:
        assert (out / name).read_bytes() == (synthetic_job / name).read_bytes(), name


def test_refilter_reproduces_the_job_and_changes_under_ablations(synthetic_job):
    rows = shard_rows(synthetic_job)
    manifest = read_manifest(synthetic_job)
    job = job_constraints(manifest)
    assert job == ConstraintConfig()
    same = refilter(synthetic_job, job)
    assert sorted(same) == ["seq_0000", "seq_0001"]
    np.testing.assert_array_equal(np.concatenate([same[k].kept for k in sorted(same)]), rows["kept"])
    none = refilter(synthetic_job, ablation_constraints(job, "none"))
    assert all(r.kept.all() for r in none.values())
    no_spatial = refilter(synthetic_job, ablation_constraints(job, "no_spatial"))
    kept = {name: int(np.concatenate([r.kept for r in result.values()]).sum())
            for name, result in (("job", same), ("none", none), ("no_spatial", no_spatial))}
    # The untrained network's hands fail the spatial constraints, and are smooth in time.
    assert kept == {"job": int(rows["kept"].sum()), "none": 8, "no_spatial": 8}
    assert kept["job"] < 8


def write_video(path: Path, frames: list[np.ndarray], fps: float = 10.0) -> None:
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (width, height))
    assert writer.isOpened()
    for frame in frames:
        writer.write(np.ascontiguousarray(frame[..., ::-1]))
    writer.release()


def test_video_source_with_a_broken_file_records_the_failure(wild, checkpoint, tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    labelled = SyntheticDataset(SyntheticConfig(root=wild, load_masks=False))
    write_video(videos / "clip.avi", [labelled[i].image for i in range(4)])
    (videos / "broken.mp4").write_bytes(b"\x00not a video" * 50)
    out = tmp_path / "video"
    code = pseudolabel_main(checkpoint, "video", videos, out,
                            overrides=[*TINY_JOB, "source.video_stride=2", "constraints.frame_step=2"])
    assert code == 1
    manifest = read_manifest(out)
    assert not manifest["complete"]
    (failure,) = manifest["failures"]
    assert failure["units"] == ["broken.mp4"] and "broken.mp4" in failure["error"]
    assert [s["status"] for s in manifest["shards"]] == ["failed", "done"]
    rows = shard_rows(out)
    assert rows["frame_ids"].tolist() == [0, 2] and manifest["counts"]["source_frames"] == 2
    assert not rows["has_intrinsics"].any()
    np.testing.assert_allclose(rows["K"][0], intrinsics_from_fov(64, 64))
    assert rows["source_ids"].tolist() == ["clip.avi#0", "clip.avi#2"]


def test_bag_without_the_topics_fails_its_shard_and_names_the_bag(wild, checkpoint, tmp_path):
    from hoi_perception.bag_io import image_msg, open_bag_writer

    bags = tmp_path / "bags"
    bags.mkdir()
    (bags / "good").symlink_to(wild / "bags" / "seq_0000", target_is_directory=True)
    with open_bag_writer(bags / "other_topics", storage="mcap", overwrite=True) as bag:
        bag.write("/other/image", image_msg(bag.typestore, np.zeros((64, 64, 3), np.uint8), 1, "camera"), 1)
    out = tmp_path / "out"
    assert pseudolabel_main(checkpoint, "bag", bags, out, overrides=TINY_JOB) == 1
    manifest = read_manifest(out)
    (failure,) = manifest["failures"]
    assert failure["units"] == ["other_topics"]
    assert "other_topics" in failure["error"] and "/camera/color/image_raw" in failure["error"]
    assert manifest["counts"]["frames"] == 4  # the good bag's shard carried on


def test_unknown_source_and_missing_input_are_named(checkpoint, tmp_path):
    with pytest.raises(ValueError, match="--source: expected one of .*'webcam'"):
        pseudolabel_main(checkpoint, "webcam", tmp_path, tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        pseudolabel_main(checkpoint, "video", tmp_path / "nowhere", tmp_path / "out")


def test_tta_boxes_follow_quarter_turns_exactly():
    boxes = np.array([[2.0, 4.0, 10.0, 20.0]])
    turned = _augment_boxes(Augmentation(90.0), boxes, 32)
    # Clockwise quarter turn about (15.5, 15.5): (x, y) -> (31 - y, x).
    np.testing.assert_allclose(turned, [[31 - 20.0, 2.0, 31 - 4.0, 10.0]])
    zoomed = _augment_boxes(Augmentation(0.0, 0.5), boxes, 32)
    np.testing.assert_allclose(zoomed, [[8.75, 9.75, 12.75, 17.75]])


def test_geometry_recovers_the_camera_frame_hand_and_mano_translation(wild, checkpoint, tmp_path, monkeypatch):
    out = oracle_job(wild, checkpoint, tmp_path / "oracle", monkeypatch)
    rows = shard_rows(out)
    truth = SyntheticDataset(SyntheticConfig(root=wild, load_masks=False))
    samples = [truth[i] for i in range(len(truth))]
    assert rows["hand_side"].tolist() == [s.hand_side for s in samples] == ["right"] * 4 + ["left"] * 4
    np.testing.assert_allclose(rows["joints_2d"], np.stack([s.joints_2d for s in samples]), atol=1e-3)
    # Exact 2D-3D correspondences: the fitted wrist is the true one, and so is MANO's translation.
    np.testing.assert_allclose(rows["hand_translation"], np.stack([s.joints_3d[0] for s in samples]), atol=1e-5)
    np.testing.assert_allclose(rows["mano_trans"], np.stack([s.mano_trans for s in samples]), atol=1e-5)
    np.testing.assert_allclose(rows["hand_pose"], np.stack([s.mano_pose for s in samples]), atol=1e-5)
    # True hands pass SHO's constraints far more often than the untrained network's.
    assert rows["kept"].sum() >= 6
    job = job_constraints(read_manifest(out))
    same = refilter(out, job)
    np.testing.assert_array_equal(np.concatenate([same[k].kept for k in sorted(same)]), rows["kept"])
    strict = refilter(out, dataclasses.replace(job, min_box_iou=0.99))
    assert sum(int(r.kept.sum()) for r in strict.values()) < rows["kept"].sum()


def test_something_else_boxes_replace_the_detector(wild, checkpoint, tmp_path):
    labelled = SyntheticDataset(SyntheticConfig(root=wild, load_masks=False))
    videos = tmp_path / "ssv2"
    videos.mkdir()
    writer = cv2.VideoWriter(str(videos / "101.webm"), cv2.VideoWriter_fourcc(*"VP80"), 12.0, (64, 64))
    for i in range(4):
        writer.write(np.ascontiguousarray(labelled[i].image[..., ::-1]))
    writer.release()

    def label(box, category):
        return {"box2d": dict(zip(("x1", "y1", "x2", "y2"), map(float, box))), "category": category}

    annotated = (0, 1, 3)  # frame 0003 is not annotated: a gap in time
    annotations = {"101": [{"name": f"101/{i + 1:04d}.jpg",
                            "labels": [label(labelled[i].hand_box, "hand"), label(labelled[i].object_box, "cup")]}
                           for i in annotated]}
    (tmp_path / "boxes.json").write_text(json.dumps(annotations))
    out = tmp_path / "out"
    assert pseudolabel_main(checkpoint, "ssv2", videos, out,
                            overrides=[*TINY_JOB, f"source.annotation_files=[{tmp_path / 'boxes.json'}]"]) == 0
    rows = shard_rows(out)
    assert rows["frame_ids"].tolist() == [0, 1, 3]
    assert rows["source_ids"].tolist() == ["ssv2/101/0001", "ssv2/101/0002", "ssv2/101/0004"]
    assert rows["box_source"].tolist() == ["annotation"] * 3 and np.isnan(rows["box_score"]).all()
    np.testing.assert_allclose(rows["hand_boxes"], np.stack([labelled[i].hand_box for i in annotated]), atol=1e-4)
    np.testing.assert_allclose(rows["object_boxes"], np.stack([labelled[i].object_box for i in annotated]),
                               atol=1e-4)
    counts = read_manifest(out)["counts"]
    assert counts["source_frames"] == 3 and counts["frames"] == 3
    # Something-Else boxes have no side: it comes from the overlapping detection (the rigged right hand).
    assert counts["side_undetected"] == 0 and rows["hand_side"].tolist() == ["right"] * 3
