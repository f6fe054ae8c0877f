"""process-bag: topic choice, pairing, the output messages read back by rosbags, damaged bags."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from bag_fixtures import FRAME_ID, PERIOD_NS, START_NS, read_back, write_input_bag
from helpers import write_tiny_checkpoint
from scenes import HEIGHT, OBJECT_NAME, WIDTH, build_scene, coordinate_image, make_estimator

from hoi_perception.config import load_config
from hoi_perception.pipeline.bag_processing import (
    BagTopicError,
    choose_topics,
    process_bag,
    process_bag_main,
)
from hoi_perception.synth.config import SynthConfig
from hoi_perception.synth.generator import generate_dataset


@pytest.fixture(scope="module")
def scene():
    return build_scene()


def test_topics_are_chosen_or_the_error_lists_them():
    types = {"/a/color/image_raw": "sensor_msgs/msg/Image", "/a/color/image_raw/compressed":
             "sensor_msgs/msg/CompressedImage", "/a/color/camera_info": "sensor_msgs/msg/CameraInfo",
             "/a/depth/image": "sensor_msgs/msg/Image", "/b/camera_info": "sensor_msgs/msg/CameraInfo"}
    encodings = {"/a/color/image_raw": "rgb8", "/a/depth/image": "16UC1"}
    topics = choose_topics(types, encodings)
    assert (topics.image, topics.camera_info, topics.depth) == ("/a/color/image_raw", "/a/color/camera_info",
                                                                "/a/depth/image")
    assert choose_topics(types, encodings, use_depth=False).depth is None
    with pytest.raises(BagTopicError, match=r"several colour image topics .*--image-topic. Topics present: "
                                            r"/a/color/camera_info \(sensor_msgs/msg/CameraInfo\)"):
        choose_topics({**types, "/c/image": "sensor_msgs/msg/Image"}, encodings)
    with pytest.raises(BagTopicError, match=r"several CameraInfo topics for /x/image"):
        choose_topics({**types, "/x/image": "sensor_msgs/msg/Image"}, encodings, image="/x/image")
    with pytest.raises(BagTopicError, match="topic /nope is not in the bag"):
        choose_topics(types, encodings, image="/nope")
    with pytest.raises(BagTopicError, match="carries sensor_msgs/msg/CameraInfo, expected sensor_msgs/msg/Image"):
        choose_topics(types, encodings, image="/b/camera_info")


def test_bag_in_results_out(scene, tmp_path):
    in_bag = write_input_bag(tmp_path / "input", frames=4, corrupt_frame=2)
    estimator, network, _ = make_estimator(scene)
    summary = process_bag(estimator, in_bag, tmp_path / "output", progress=False)
    assert summary.topics.depth == "/cam/depth/image_raw" and summary.topics.image == "/cam/color/image_raw"
    assert summary.images == 4 and summary.processed == 3
    assert summary.skipped == {"undecodable image": 1}
    out = read_back(tmp_path / "output")
    assert summary.written == {topic: len(msgs) for topic, msgs in out.items()}
    estimates = out["/hoi_perception/estimate"]
    stamps = [m.header.stamp.sec * 10**9 + m.header.stamp.nanosec for m in estimates]
    assert stamps == [START_NS + i * PERIOD_NS for i in (0, 1, 3)]  # input stamps, corrupt frame left out
    assert {m.header.frame_id for m in estimates} == {FRAME_ID}
    assert [m.tracking_state for m in estimates] == [0, 1, 1]
    first = estimates[0]
    assert sorted(h.side for h in first.hands) == [0, 1] and first.objects[0].name == OBJECT_NAME
    right = next(h for h in first.hands if h.side == 1)
    truth = scene.hands["right"].joints_cam
    np.testing.assert_allclose([[p.x, p.y, p.z] for p in right.joints], truth, atol=1e-3)
    assert [s.stage for s in first.stage_latencies][:2] == ["detect", "crop"]
    tf_children = {t.child_frame_id for m in out["/tf"] for t in m.transforms}
    assert tf_children == {"right_hand", "left_hand", OBJECT_NAME}
    object_tf = next(t for t in out["/tf"][0].transforms if t.child_frame_id == OBJECT_NAME)
    np.testing.assert_allclose([object_tf.transform.translation.x, object_tf.transform.translation.y,
                                object_tf.transform.translation.z], scene.object_translation, atol=1e-3)
    assert len(out["/hoi_perception/hand_mesh"]) == 6 and len(out["/hoi_perception/hand_mesh"][0].points) == 4614
    assert out["/hoi_perception/hand_mesh"][0].type == 11  # TRIANGLE_LIST
    assert len(out["/hoi_perception/markers"][0].markers) == 1 + 2 * 2 + 1  # DELETEALL, skeleton + joints per hand, box
    overlay = out["/hoi_perception/debug_image"][0]
    assert (overlay.width, overlay.height, overlay.encoding) == (WIDTH, HEIGHT, "rgb8")
    assert not np.array_equal(overlay.data.reshape(HEIGHT, WIDTH, 3), coordinate_image())  # something drawn


def test_a_bag_that_ends_mid_message_still_yields_what_came_before(scene, tmp_path):
    in_bag = write_input_bag(tmp_path / "input", frames=6)
    (mcap,) = in_bag.glob("*.mcap")
    data = mcap.read_bytes()
    mcap.write_bytes(data[: int(len(data) * 0.55)])  # the recorder was killed
    estimator, _, _ = make_estimator(scene)
    summary = process_bag(estimator, in_bag, tmp_path / "output", progress=False)
    assert summary.damaged is not None and 1 <= summary.processed < 6
    assert len(read_back(tmp_path / "output")["/hoi_perception/estimate"]) == summary.processed


def test_output_is_not_overwritten_and_missing_input_is_named(scene, tmp_path):
    in_bag = write_input_bag(tmp_path / "input", frames=1)
    estimator, _, _ = make_estimator(scene)
    (tmp_path / "output").mkdir()
    with pytest.raises(FileExistsError, match="already exists"):
        process_bag(estimator, in_bag, tmp_path / "output", progress=False)
    with pytest.raises(FileNotFoundError, match="input bag .*nowhere' does not exist"):
        process_bag(estimator, tmp_path / "nowhere", tmp_path / "out2", progress=False)


def test_process_bag_main_on_a_synthetic_sequence_bag(tmp_path, capsys):
    config = load_config(SynthConfig, "synth.yaml", ["camera.width=64", "camera.height=48", "objects=[sugar_box]"])
    manifest = generate_dataset(config, tmp_path / "synth", sequences=1, frames=3, seed=0, write_bags=True)
    checkpoint = write_tiny_checkpoint(tmp_path / "tiny.pt")
    overrides = ["engine.kind=torch", f"checkpoint={checkpoint}", "object_name=sugar_box"]
    summary = process_bag_main(tmp_path / "synth" / manifest["bags"][0], tmp_path / "out", config=None,
                               storage="sqlite3", overrides=overrides)
    assert summary.topics.depth == manifest["topics"]["depth"]  # found by its 16UC1 encoding
    assert summary.images == 3 and summary.processed == 3
    out = read_back(tmp_path / "out")
    assert len(out["/hoi_perception/estimate"]) == 3 and len(out["/hoi_perception/debug_image"]) == 3
    assert {m.header.frame_id for m in out["/hoi_perception/estimate"]} == {manifest["topics"]["frame_id"]}
    assert "images on /camera/color/image_raw: 3, processed: 3" in capsys.readouterr().out
    shutil.rmtree(tmp_path / "synth")
