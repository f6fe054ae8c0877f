"""Issue 15, items 1-3, 5-7, 9-10: commands never lose a user's data and say clearly what they did not do."""

from __future__ import annotations

import argparse
import hashlib
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from bag_fixtures import FRAME_ID, PERIOD_NS, START_NS, read_back, write_input_bag
from rosbags.highlevel import AnyReader
from scenes import HEIGHT, WIDTH, K, build_scene, coordinate_image, make_estimator

from hoi_perception import cli as perception_cli
from hoi_perception.bag_io import camera_info_msg, image_msg, open_bag_writer
from hoi_perception.output_paths import ROSBAG, UnsafeOutputError, check_output, is_rosbag_folder
from hoi_perception.pipeline.bag_processing import BagTopicError, NothingProcessedError, choose_topics, process_bag
from hoi_perception.pipeline.video import run_estimator
from hoi_training import cli as training_cli
from hoi_training.release import RELEASE_FORMAT, release_checkpoint


@pytest.fixture(scope="module")
def scene():
    return build_scene()


def tree_digest(path: Path) -> str:
    """Hash of every file's relative name and bytes under ``path`` (or of the file itself)."""
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        digest.update(str(file.relative_to(path) if path.is_dir() else file.name).encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()


def run_cli(module, argv: list[str]) -> int:
    return module.main(argv)


# ----------------------------------------------------------------------------- item 1: process-bag


def test_process_bag_never_replaces_its_input_or_a_folder_that_is_not_a_bag(tmp_path, caplog):
    dataset = tmp_path / "dataset"
    in_bag = write_input_bag(dataset / "seq_000" / "bag", frames=1)
    (dataset / "labels.npz").write_bytes(b"labels")
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "notes.txt").write_text("my notes")
    before = {p: tree_digest(p) for p in (dataset, notes)}
    for out in (in_bag, dataset, notes, dataset / "seq_000" / "bag" / "inner"):
        assert run_cli(perception_cli, ["process-bag", str(in_bag), str(out), "--overwrite"]) == 2
    err = caplog.text
    assert "is the input" in err and "holds the input" in err and "lies inside the input folder" in err
    assert "is not a rosbag2 folder; refusing to replace it even with --overwrite" in err
    assert {p: tree_digest(p) for p in (dataset, notes)} == before
    assert "Traceback" not in err


def test_process_bag_overwrite_replaces_only_an_earlier_output_bag(scene, tmp_path):
    in_bag = write_input_bag(tmp_path / "input", frames=2)
    estimator, _, _ = make_estimator(scene)
    process_bag(estimator, in_bag, tmp_path / "out", progress=False)
    assert is_rosbag_folder(tmp_path / "out")
    with pytest.raises(UnsafeOutputError, match="already exists; pass --overwrite"):
        process_bag(make_estimator(scene)[0], in_bag, tmp_path / "out", progress=False)
    summary = process_bag(make_estimator(scene)[0], in_bag, tmp_path / "out", progress=False, overwrite=True)
    assert summary.processed == 2 and len(read_back(tmp_path / "out")["/hoi_perception/estimate"]) == 2
    (tmp_path / "out" / "README.txt").write_text("someone's notes")  # no longer only a bag
    with pytest.raises(UnsafeOutputError, match="not a rosbag2 folder"):
        with open_bag_writer(tmp_path / "out", overwrite=True):
            pass
    assert (tmp_path / "out" / "README.txt").read_text() == "someone's notes"


# ----------------------------------------------------------------------------- item 2: run


def write_video(path: Path, frames: int = 3) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30.0, (WIDTH, HEIGHT))
    for _ in range(frames):
        writer.write(np.ascontiguousarray(coordinate_image()[..., ::-1]))
    writer.release()
    return path


def test_run_refuses_to_write_over_its_input_or_an_existing_output(scene, tmp_path, caplog):
    clip = write_video(tmp_path / "clip.mp4")
    other = tmp_path / "other.mp4"
    other.write_bytes(b"an earlier video")
    digest = tree_digest(clip)
    assert run_cli(perception_cli, ["run", "--video", str(clip), "--out", str(clip)]) == 2
    assert run_cli(perception_cli, ["run", "--video", str(clip), "--out", str(other)]) == 2
    assert run_cli(perception_cli, ["run", "--video", str(clip), "--bag", str(clip), "--overwrite"]) == 2
    err = caplog.text
    assert "--out" in err and "is the input" in err and "already exists; pass --overwrite" in err
    assert "--bag" in err
    assert tree_digest(clip) == digest and other.read_bytes() == b"an earlier video"
    estimator, _, _ = make_estimator(scene)
    frames = ((1.0 + i / 30, coordinate_image()) for i in range(2))
    summary = run_estimator(estimator, frames, K, out=other, inputs=[clip], overwrite=True)
    assert summary.processed == 2 and other.stat().st_size > 1000  # an earlier output is replaced on request


# ----------------------------------------------------------------------------- item 3: release


@pytest.fixture
def training_checkpoint(tmp_path) -> Path:
    from helpers import write_tiny_checkpoint

    path = write_tiny_checkpoint(tmp_path / "last.pt")
    data = torch.load(path, weights_only=True)
    data["optimizer"] = {"state": {}}
    torch.save(data, path)
    return path


def test_release_never_replaces_the_training_checkpoint(training_checkpoint, tmp_path, caplog):
    digest = tree_digest(training_checkpoint)
    other_training = tmp_path / "other_training.pt"
    other_training.write_bytes(training_checkpoint.read_bytes())
    assert run_cli(training_cli, ["release", "--checkpoint", str(training_checkpoint), "--out",
                                  str(training_checkpoint), "--overwrite"]) == 2
    assert run_cli(training_cli, ["release", "--checkpoint", str(training_checkpoint), "--out",
                                  str(other_training), "--overwrite"]) == 2
    err = caplog.text
    assert "is the input" in err and "is not a released checkpoint" in err
    assert tree_digest(training_checkpoint) == digest
    assert other_training.read_bytes() == training_checkpoint.read_bytes()
    released = tmp_path / "release.pt"
    release_checkpoint(training_checkpoint, released)
    with pytest.raises(UnsafeOutputError, match="already exists"):
        release_checkpoint(training_checkpoint, released)
    release_checkpoint(training_checkpoint, released, overwrite=True)  # its own earlier output: fine
    assert torch.load(released, weights_only=True)["format"] == RELEASE_FORMAT


def test_resume_from_a_released_file_is_one_clear_line(training_checkpoint, tmp_path, caplog):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    release_checkpoint(training_checkpoint, run / "checkpoints" / "last.pt")
    assert run_cli(training_cli, ["fit", "--resume", "--out", str(run)]) == 2
    err = caplog.text
    assert "is a released checkpoint" in err and "KeyError" not in err


# ----------------------------------------------------------------------------- items 5-7


def write_half_size_bag(path: Path, frames: int = 3) -> Path:
    """Images half the size their CameraInfo describes: nothing can be processed."""
    small = cv2.resize(coordinate_image(), (WIDTH // 2, HEIGHT // 2))
    with open_bag_writer(path) as bag:
        for i in range(frames):
            stamp = START_NS + i * PERIOD_NS
            bag.write("/cam/image", image_msg(bag.typestore, small, stamp, FRAME_ID), stamp)
            bag.write("/cam/camera_info", camera_info_msg(bag.typestore, K, WIDTH, HEIGHT, stamp, FRAME_ID), stamp)
    return path


def test_nothing_processed_is_an_error_and_leaves_no_bag(scene, tmp_path, caplog):
    in_bag = write_half_size_bag(tmp_path / "input")
    estimator, _, _ = make_estimator(scene)
    with caplog.at_level(logging.WARNING), pytest.raises(NothingProcessedError,
                                                         match=r"no frame .* image size differs from CameraInfo: 3"):
        process_bag(estimator, in_bag, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()
    assert sum("image size differs" in r.getMessage() for r in caplog.records) == 1  # item 10: once, not per frame


def test_nothing_processed_exits_non_zero_with_the_shipped_model_and_names_the_targets(tmp_path, capsys, caplog):
    in_bag = write_half_size_bag(tmp_path / "input")
    code = run_cli(perception_cli, ["process-bag", str(in_bag), str(tmp_path / "out"), "--set", "engine.kind=torch"])
    captured = capsys.readouterr()
    assert code == 2 and "no frame of" in caplog.text and not (tmp_path / "out").exists()
    assert "estimating: right and left hand(s) only - no object_name is set" in captured.out  # item 9


def test_depth_is_never_the_image_topic():
    types = {"/cam/depth": "sensor_msgs/msg/Image", "/cam/color": "sensor_msgs/msg/Image",
             "/cam/camera_info": "sensor_msgs/msg/CameraInfo"}
    encodings = {"/cam/depth": "16UC1", "/cam/color": "rgb8"}
    with pytest.raises(BagTopicError, match="carries depth images"):
        choose_topics(types, encodings, image="/cam/depth")
    with pytest.raises(BagTopicError, match="is the image topic"):
        choose_topics(types, encodings, image="/cam/color", depth="/cam/color")
    topics = choose_topics(types, encodings, image="/cam/color")
    assert topics.depth == "/cam/depth" and topics.image == "/cam/color"


def test_run_bag_carries_camera_info_and_feeds_process_bag(scene, tmp_path):
    estimator, _, _ = make_estimator(scene)
    frames = ((1.0 + i / 30, coordinate_image()) for i in range(3))
    run_estimator(estimator, frames, K, bag=tmp_path / "run_bag")
    with AnyReader([tmp_path / "run_bag"]) as reader:
        infos = [reader.deserialize(raw, c.msgtype) for c, _, raw in reader.messages()
                 if c.topic == "/camera/color/camera_info"]
    assert len(infos) == 3 and (infos[0].width, infos[0].height) == (WIDTH, HEIGHT)
    np.testing.assert_allclose(infos[0].k.reshape(3, 3), K)
    summary = process_bag(make_estimator(scene)[0], tmp_path / "run_bag", tmp_path / "again", progress=False,
                          image_topic="/camera/color/image_raw")
    assert summary.processed == 3


# ----------------------------------------------------------------------------- item 10


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


@pytest.mark.parametrize("module", [perception_cli, training_cli])
def test_help_states_every_default(module):
    for name, sub in _subparsers(module.build_parser()).items():
        for action in sub._actions:
            default = action.default
            if not action.option_strings or default is None or default is False or default == [] \
                    or default == argparse.SUPPRESS:
                continue
            help_text = sub._get_formatter()._get_help_string(action)
            assert "default" in help_text, f"{module.__name__} {name} {action.option_strings}: {help_text!r}"
    export = " ".join(_subparsers(perception_cli.build_parser())["export"].format_help().split())
    assert "(default: onnx)" in export and "(default: fp32)" in export and "(default: 4)" in export
    run = " ".join(_subparsers(perception_cli.build_parser())["run"].format_help().split())
    assert "(default: 60.0)" in run


def test_small_cli_mistakes_get_one_clear_line(tmp_path, capfd, caplog):
    with pytest.raises(SystemExit) as exit_info:
        perception_cli.build_parser().parse_args(["run", "--video", "x.mp4", "--out", "y.mp4", "--max-frames", "-3"])
    assert exit_info.value.code == 2 and "expected a positive integer, got -3" in capfd.readouterr().err
    from hoi_perception.config import ConfigError
    from hoi_perception.pipeline.config import load_estimator_config

    with pytest.raises(ConfigError, match=r"^--set tracking\.bogus=1: unknown setting"):
        load_estimator_config(overrides=["tracking.bogus=1"])
    from hoi_perception.config import load_config
    from hoi_training.train_config import TrainConfig

    with pytest.raises(ConfigError, match=r"^--set nope=1: unknown setting 'nope'"):
        load_config(TrainConfig, "train/tiny_test.yaml", ["nope=1"])
    with open_bag_writer(tmp_path / "empty"):
        pass
    with pytest.raises(BagTopicError, match="holds no messages"):
        process_bag(None, tmp_path / "empty", tmp_path / "out", progress=False)
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(200))
    capfd.readouterr()
    assert run_cli(perception_cli, ["run", "--video", str(bad), "--out", str(tmp_path / "o.mp4")]) == 2
    assert "moov atom" not in capfd.readouterr().err and "could not be opened" in caplog.text
    (tmp_path / "run_dir").mkdir()
    torch.save({}, tmp_path / "run_dir" / "last.pt")
    (tmp_path / "empty.pt").write_bytes(b"")
    from hoi_perception.engines.export import read_training_checkpoint

    with pytest.raises(ValueError, match=r"is a folder; expected a \.pt file \(it holds last\.pt\)"):
        read_training_checkpoint(tmp_path / "run_dir")
    with pytest.raises(ValueError, match=r"is empty \(0 bytes\)"):
        read_training_checkpoint(tmp_path / "empty.pt")


def test_check_output_allows_a_fresh_path_and_an_own_kind(tmp_path):
    assert check_output(tmp_path / "new", kind=ROSBAG, inputs=[tmp_path / "in"]) == tmp_path / "new"


def test_demo_writes_only_into_a_demo_folder(tmp_path, caplog):
    notes = tmp_path / "notes"
    (notes / "frames").mkdir(parents=True)
    (notes / "frames" / "000000.png").write_bytes(b"my own frame")
    (notes / "notes.txt").write_text("my notes")
    before = tree_digest(notes)
    assert run_cli(perception_cli, ["demo", "--out", str(notes)]) == 2
    assert "is not a demo folder (it holds notes.txt)" in caplog.text and tree_digest(notes) == before
