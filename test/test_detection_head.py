import numpy as np
import pytest
import torch

from hoi_perception.config import ConfigError, load_config
from hoi_perception.models.detection_head import (
    LEFT_HAND,
    OBJECT,
    RIGHT_HAND,
    DetectionHead,
    DetectionHeadOutput,
    DetectionSelectionConfig,
    Letterbox,
    build_detection_targets,
    decode_detections,
    letterbox_image,
    select_detections,
)

STRIDE = 4
H = W = 32  # 128x128 input


def _output_from_targets(targets_list):
    """A perfect network: logits from the target heatmaps, sizes/offsets written at the centre cells."""
    logits, sizes, offsets = [], [], []
    for t in targets_list:
        heat = np.clip(t.heatmap, 1e-6, 1 - 1e-6)
        logits.append(np.log(heat / (1 - heat)))
        s = np.zeros((2, H * W), np.float32)
        o = np.zeros((2, H * W), np.float32)
        for idx, size, off, m in zip(t.indices, t.sizes, t.offsets, t.mask):
            if m:
                s[:, idx], o[:, idx] = size, off
        sizes.append(s.reshape(2, H, W))
        offsets.append(o.reshape(2, H, W))
    return DetectionHeadOutput(torch.tensor(np.stack(logits)), torch.tensor(np.stack(sizes)),
                               torch.tensor(np.stack(offsets)))


def test_head_shapes_and_focal_bias_init():
    torch.manual_seed(0)
    head = DetectionHead(in_channels=16, head_channels=8)
    with torch.no_grad():
        out = head(torch.zeros(2, 16, H, W))
    assert out.heatmap_logits.shape == (2, 3, H, W)
    assert out.sizes.shape == (2, 2, H, W) and out.offsets.shape == (2, 2, H, W)
    # With a zero input only the biases act: the prior probability is 0.1 everywhere.
    torch.testing.assert_close(torch.sigmoid(out.heatmap_logits), torch.full((2, 3, H, W), 0.1), atol=0.02, rtol=0)


def test_targets_hand_computed():
    boxes = np.array([[10.0, 20.0, 50.0, 40.0]])  # centre (30, 30) px -> (7.5, 7.5) cells
    t = build_detection_targets(boxes, np.array([OBJECT]), H, W, STRIDE, max_boxes=4)
    assert t.heatmap.shape == (3, H, W)
    assert t.heatmap[OBJECT, 7, 7] == 1.0 and t.heatmap[OBJECT].max() == 1.0
    assert t.heatmap[RIGHT_HAND].max() == 0 and t.heatmap[LEFT_HAND].max() == 0
    assert t.indices[0] == 7 * W + 7
    np.testing.assert_allclose(t.sizes[0], [10.0, 5.0])
    np.testing.assert_allclose(t.offsets[0], [0.5, 0.5])
    np.testing.assert_array_equal(t.mask, [1, 0, 0, 0])
    # Elliptical gaussian: sigma_x = 0.54 * 10 / 6 = 0.9, sigma_y = max(0.54 * 5 / 6, 0.5) = 0.5.
    assert t.heatmap[OBJECT, 7, 8] == pytest.approx(np.exp(-1 / (2 * 0.9**2)), rel=1e-6)
    assert t.heatmap[OBJECT, 8, 7] == pytest.approx(np.exp(-1 / (2 * 0.5**2)), rel=1e-6)
    with pytest.raises(ValueError, match="classes"):
        build_detection_targets(boxes, np.array([5]), H, W, STRIDE)
    with pytest.raises(ValueError, match="max_boxes"):
        build_detection_targets(np.tile(boxes, (3, 1)), np.zeros(3, int), H, W, STRIDE, max_boxes=2)


def test_decode_recovers_target_boxes_exactly():
    gt = [
        (np.array([[10.0, 20.0, 50.0, 40.0], [70.0, 64.0, 110.0, 120.0]]), np.array([RIGHT_HAND, OBJECT])),
        (np.array([[5.0, 5.0, 33.0, 61.0]]), np.array([LEFT_HAND])),
    ]
    targets = [build_detection_targets(b, c, H, W, STRIDE) for b, c in gt]
    det = decode_detections(_output_from_targets(targets), k=10, stride=STRIDE)
    assert det.boxes.shape == (2, 10, 4) and det.scores.shape == (2, 10) and det.classes.shape == (2, 10)
    assert (det.scores[:, :-1] >= det.scores[:, 1:]).all()
    for b, (boxes, classes) in enumerate(gt):
        n = len(boxes)
        found = sorted(zip(det.classes[b, :n].tolist(), det.boxes[b, :n].tolist()))
        expected = sorted(zip(classes.tolist(), boxes.tolist()))
        for (c_f, b_f), (c_e, b_e) in zip(found, expected):
            assert c_f == c_e
            np.testing.assert_allclose(b_f, b_e, atol=1e-4)
        assert torch.allclose(det.scores[b, :n], torch.ones(n), atol=1e-5)
        # Max-pool NMS: the neighbours of a peak are suppressed, so the next score is far below 1.
        assert det.scores[b, n] < 0.5


def test_letterbox_round_trip_and_image():
    lb = Letterbox.fit(640, 480, 512, 512)
    assert lb.scale == pytest.approx(0.8) and lb.pad_x == 0 and lb.pad_y == 64
    boxes = np.array([[10.0, 20.0, 300.0, 470.0]])
    np.testing.assert_allclose(lb.boxes_to_original(lb.boxes_to_input(boxes)), boxes)
    np.testing.assert_allclose(lb.boxes_to_input(boxes)[0], [8.0, 80.0, 240.0, 440.0])
    np.testing.assert_allclose(lb.boxes_to_original([[-20.0, 0.0, 600.0, 700.0]])[0], [0, 0, 640, 480])
    image = np.full((480, 640, 3), 200, np.uint8)
    out, lb2 = letterbox_image(image, 512, 512)
    assert out.shape == (512, 512, 3) and lb2 == lb
    assert (out[:64] == 114).all() and (out[64:448] == 200).all() and (out[448:] == 114).all()


def test_select_detections_best_per_class_threshold_and_duplicates():
    lb = Letterbox.fit(640, 480, 512, 512)
    boxes = np.array([
        [100.0, 164.0, 140.0, 204.0],  # right hand 0.9
        [102.0, 166.0, 142.0, 206.0],  # left hand 0.6, same hand -> dropped
        [300.0, 200.0, 360.0, 300.0],  # object 0.2, below 0.3
        [200.0, 200.0, 260.0, 300.0],  # object 0.5
        [10.0, 100.0, 11.0, 101.0],  # right hand 0.95 but too small
    ])
    scores = np.array([0.9, 0.6, 0.2, 0.5, 0.95])
    classes = np.array([RIGHT_HAND, LEFT_HAND, OBJECT, OBJECT, RIGHT_HAND])
    sel = select_detections(boxes, scores, classes, lb)
    assert sel.right_hand.score == pytest.approx(0.9)
    np.testing.assert_allclose(sel.right_hand.box, [125.0, 125.0, 175.0, 175.0])
    assert sel.left_hand is None
    assert sel.object.score == pytest.approx(0.5) and sel.object.label == "object"
    # Two hands apart are both kept.
    boxes[1] = [400.0, 164.0, 440.0, 204.0]
    sel = select_detections(boxes, scores, classes, lb)
    assert sel.left_hand is not None and sel.right_hand is not None
    # Nothing above threshold.
    sel = select_detections(boxes, np.full(5, 0.1), classes, lb)
    assert sel.right_hand is None and sel.left_hand is None and sel.object is None
    with pytest.raises(ValueError, match="select_detections"):
        select_detections(boxes[:2], scores, classes, lb)
    with pytest.raises(ConfigError, match="same_hand_iou"):
        load_config(DetectionSelectionConfig, {"same_hand_iou": 2.0})


def test_decode_rejects_bad_k():
    out = DetectionHeadOutput(torch.zeros(1, 3, 4, 4), torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 4, 4))
    with pytest.raises(ValueError, match="k"):
        decode_detections(out, k=49, stride=4)


def test_onnx_export_of_head_and_decode(tmp_path):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(1)
    head = DetectionHead(in_channels=16, head_channels=8).eval()

    class Detector(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.head = head

        def forward(self, features):
            det = decode_detections(self.head(features), k=20, stride=STRIDE)
            return det.boxes, det.scores, det.classes

    path = tmp_path / "det.onnx"
    torch.onnx.export(Detector().eval(), (torch.randn(1, 16, H, W),), str(path), opset_version=17,
                      input_names=["features"], output_names=["boxes", "scores", "classes"],
                      dynamic_axes={"features": {0: "batch"}}, dynamo=False)
    onnx.checker.check_model(onnx.load(str(path)))
    x = torch.randn(2, 16, H, W)
    boxes, scores, classes = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        None, {"features": x.numpy()})
    with torch.no_grad():
        ref = decode_detections(head(x), k=20, stride=STRIDE)
    assert boxes.shape == (2, 20, 4)
    np.testing.assert_allclose(scores, ref.scores.numpy(), atol=1e-5)
    np.testing.assert_array_equal(classes, ref.classes.numpy())
    np.testing.assert_allclose(boxes, ref.boxes.numpy(), atol=1e-4)
