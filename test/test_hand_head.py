from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from hoi_perception.geometry.rotations import axis_angle_to_matrix, rot6d_to_matrix
from hoi_perception.hand_model.mano import HandModel
from hoi_perception.models.hand_head import HandDecoder, Hourglass, PreActBottleneck

CHANNELS = 16  # small for speed; the architecture is the same at 256


class LinearHand(nn.Module):
    """Deterministic linear stand-in with HandModel's call signature (the wiring is under test here)."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.register_buffer("template", torch.randn(778, 3, generator=g) * 0.05 + torch.tensor([0.1, 0.0, 0.0]))
        self.register_buffer("pose_dirs", torch.randn(48, 778 * 3, generator=g) * 0.01)
        self.register_buffer("shape_dirs", torch.randn(10, 778 * 3, generator=g) * 0.01)
        regressor = torch.rand(21, 778, generator=g)
        self.register_buffer("regressor", regressor / regressor.sum(1, keepdim=True))
        self.scale = nn.Parameter(torch.ones(1))  # a parameter, to check that the decoder freezes it

    def forward(self, global_orient, hand_pose, betas):
        pose = torch.cat([global_orient, hand_pose], dim=1)
        vertices = self.scale * (self.template + (pose @ self.pose_dirs + betas @ self.shape_dirs).view(-1, 778, 3))
        return SimpleNamespace(vertices=vertices, joints=torch.einsum("jv,bvc->bjc", self.regressor, vertices))


class FixedLogits(nn.Module):
    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.value = logits

    def forward(self, features):
        return self.value.expand(features.shape[0], -1, -1, -1)


@pytest.fixture(scope="module")
def decoder():
    torch.manual_seed(0)
    return HandDecoder(LinearHand(), channels=CHANNELS).eval()


def test_output_shapes_and_invariants(decoder):
    with torch.no_grad():
        out = decoder(torch.randn(2, CHANNELS, 32, 32))
    assert out.heatmaps.shape == (2, 21, 32, 32)
    assert out.joints2d.shape == (2, 21, 2)
    assert out.joint_confidence.shape == (2, 21)
    assert out.pose.shape == (2, 48) and out.rot6d.shape == (2, 16, 6) and out.betas.shape == (2, 10)
    assert out.vertices.shape == (2, 778, 3) and out.joints3d.shape == (2, 21, 3)
    torch.testing.assert_close(out.heatmaps.sum((-1, -2)), torch.ones(2, 21))
    assert ((out.joints2d > 0) & (out.joints2d < 1)).all()
    assert ((out.joint_confidence >= 0) & (out.joint_confidence <= 1)).all()
    # Root-relative: wrist at the origin, vertices shifted by the same root.
    assert out.joints3d[:, 0].abs().max() == 0
    raw = decoder.hand_model(out.pose[:, :3], out.pose[:, 3:], out.betas)
    torch.testing.assert_close(out.vertices, raw.vertices - raw.joints[:, :1])
    # The 48-D pose is exactly the 6D rotations, as axis-angle.
    torch.testing.assert_close(axis_angle_to_matrix(out.pose.view(2, 16, 3)), rot6d_to_matrix(out.rot6d),
                               atol=1e-5, rtol=0)


def test_fresh_regressor_starts_at_the_flat_mean_hand(decoder):
    with torch.no_grad():
        out = decoder(torch.randn(3, CHANNELS, 32, 32))
    assert out.pose.abs().max() < 0.2
    assert out.betas.abs().max() < 0.2


def test_soft_argmax_and_confidence_hand_computed():
    decoder = HandDecoder(LinearHand(), channels=CHANNELS).eval()
    logits = torch.zeros(1, 21, 32, 32)
    logits[0, 0, 5, 9] = 60.0  # joint 0: a sharp peak at row 5, column 9
    logits[0, 2, 7, 3] = 60.0  # joint 2: two equal peaks -> midpoint, low confidence
    logits[0, 2, 7, 23] = 60.0
    decoder.heatmap_net.logits = FixedLogits(logits)  # joint 1 and the rest: uniform
    with torch.no_grad():
        out = decoder(torch.randn(1, CHANNELS, 32, 32))
    torch.testing.assert_close(out.joints2d[0, 0], torch.tensor([9.5 / 32, 5.5 / 32]))
    assert out.joint_confidence[0, 0] == pytest.approx(1.0, abs=1e-6)
    torch.testing.assert_close(out.joints2d[0, 1], torch.tensor([0.5, 0.5]))
    # Uniform over 1024 cells: 12 cell centres lie within 2 cells of the grid centre.
    assert out.joint_confidence[0, 1] == pytest.approx(12 / 1024, abs=1e-6)
    torch.testing.assert_close(out.joints2d[0, 2], torch.tensor([13.5 / 32, 7.5 / 32]))
    assert out.joint_confidence[0, 2] == pytest.approx(0.0, abs=1e-6)


def test_temperature_sharpens_heatmaps():
    decoder = HandDecoder(LinearHand(), channels=CHANNELS).eval()
    logits = torch.zeros(1, 21, 32, 32)
    logits[0, :, 10, 10] = 2.0
    decoder.heatmap_net.logits = FixedLogits(logits)
    x = torch.randn(1, CHANNELS, 32, 32)
    with torch.no_grad():
        before = decoder(x).heatmaps[0, 0, 10, 10].item()
        decoder.heatmap_net.inverse_temperature[:, 0] = 5.0
        after = decoder(x)
    assert before == pytest.approx(np.e**2 / (np.e**2 + 1023), rel=1e-5)
    assert after.heatmaps[0, 0, 10, 10].item() == pytest.approx(np.e**10 / (np.e**10 + 1023), rel=1e-5)
    assert after.heatmaps[0, 1, 10, 10].item() == pytest.approx(before, rel=1e-5)


def test_gradients_reach_input_and_hand_model_is_frozen():
    decoder = HandDecoder(LinearHand(), channels=CHANNELS).train()
    x = torch.randn(2, CHANNELS, 32, 32, requires_grad=True)
    out = decoder(x)
    (out.joints3d.square().sum() + out.joints2d.sum() + out.vertices.sum()).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert decoder.hand_model.scale.grad is None
    assert decoder.regressor.rotations.weight.grad.abs().sum() > 0
    assert decoder.heatmap_net.inverse_temperature.grad.abs().sum() > 0


def test_building_blocks():
    block = PreActBottleneck(8, 16)
    assert block(torch.randn(2, 8, 4, 4)).shape == (2, 16, 4, 4)
    hourglass = Hourglass(8, depth=4)
    assert hourglass(torch.randn(1, 8, 32, 32)).shape == (1, 8, 32, 32)


def test_bad_arguments_and_input():
    with pytest.raises(ValueError, match="roi_size"):
        HandDecoder(LinearHand(), channels=CHANNELS, roi_size=24)
    with pytest.raises(ValueError, match="channels"):
        HandDecoder(LinearHand(), channels=7)
    with pytest.raises(ValueError, match="HandDecoder input"):
        HandDecoder(LinearHand(), channels=CHANNELS)(torch.randn(1, CHANNELS, 16, 16))


@pytest.fixture(scope="module")
def mano_decoder():
    torch.manual_seed(0)
    return HandDecoder(HandModel("right"), channels=CHANNELS).eval()


def test_with_the_mano_layer_starts_near_the_flat_hand(mano_decoder):
    with torch.no_grad():
        out = mano_decoder(torch.randn(2, CHANNELS, 32, 32))
        flat = mano_decoder.hand_model(torch.zeros(1, 3), torch.zeros(1, 45), torch.zeros(1, 10))
    assert out.vertices.shape == (2, 778, 3) and out.joints3d.shape == (2, 21, 3)
    assert out.joints3d[:, 0].abs().max() == 0
    flat_rel = flat.vertices - flat.joints[:, :1]
    # Small initial rotations (< 0.2 rad) move a ~20 cm hand by at most a few centimetres.
    assert (out.vertices - flat_rel).norm(dim=-1).max() < 0.04


def test_onnx_export_matches_eager(mano_decoder, tmp_path):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    decoder = mano_decoder

    class Flat(nn.Module):
        def __init__(self):
            super().__init__()
            self.decoder = decoder

        def forward(self, roi):
            out = self.decoder(roi)
            return out.joints2d, out.joint_confidence, out.pose, out.betas, out.vertices, out.joints3d

    names = ["joints2d", "joint_confidence", "pose", "betas", "vertices", "joints3d"]
    path = tmp_path / "hand.onnx"
    torch.onnx.export(Flat().eval(), (torch.randn(2, CHANNELS, 32, 32),), str(path), opset_version=17,
                      input_names=["roi"], output_names=names, dynamic_axes={"roi": {0: "batch"}}, dynamo=False)
    onnx.checker.check_model(onnx.load(str(path)))
    x = torch.randn(3, CHANNELS, 32, 32)
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"roi": x.numpy()})
    with torch.no_grad():
        ref = Flat().eval()(x)
    for name, a, b in zip(names, got, ref):
        np.testing.assert_allclose(a, b.numpy(), atol=1e-4, err_msg=name)


# ----------------------------------------------------------------------------- optional hand-mask head

TINY_NET = ["input_size=32", "backbone.fpn_channels=16", "roi.output_size=8", "hand_head.hourglass_depth=2",
            "hand_head.encoder_rounds=2", "hand_head.regressor_hidden=32", "object_head.num_blocks=1",
            "detection_head.head_channels=8"]


def tiny_network(*extra: str):
    from hoi_perception.models.config import load_model_config
    from hoi_perception.models.network import HOINet

    torch.manual_seed(0)
    return HOINet(load_model_config("models/hfl_r18.yaml", [*TINY_NET, *extra]))


def test_mask_head_is_off_by_default_and_adds_only_its_own_weights(decoder):
    with torch.no_grad():
        plain = decoder(torch.randn(2, CHANNELS, 32, 32))
    assert plain.mask_logits is None and decoder.mask_decoder is None
    torch.manual_seed(0)
    masked = HandDecoder(LinearHand(), channels=CHANNELS, mask_head=True).eval()
    with torch.no_grad():
        out = masked(torch.randn(2, CHANNELS, 32, 32))
    assert out.mask_logits.shape == (2, 1, 32, 32) and torch.isfinite(out.mask_logits).all()
    extra = set(masked.state_dict()) - set(decoder.state_dict())
    assert set(decoder.state_dict()) < set(masked.state_dict())
    assert extra and all(k.startswith("mask_decoder.") for k in extra)
    # Two convs (3x3 to C/2, 1x1 to 1) and a BatchNorm: a small fraction of the decoder.
    mask_params = sum(p.numel() for p in masked.mask_decoder.parameters())
    assert mask_params == (CHANNELS * 9 + 1) * (CHANNELS // 2) + 2 * (CHANNELS // 2) + (CHANNELS // 2 + 1)


def test_network_with_the_head_off_keeps_outputs_names_and_state_dict_keys():
    from hoi_perception.models.network import MASK_OUTPUT_NAME, OUTPUT_NAMES, CropNetworkExport, crop_output_names

    plain, masked = tiny_network(), tiny_network("hand_head.mask_head=true")
    crop, boxes = torch.rand(2, 3, 32, 32), torch.tensor([[4.0, 4.0, 20.0, 28.0], [8.0, 2.0, 30.0, 24.0]])
    with torch.no_grad():
        plain_out, masked_out = plain.eval()(crop, boxes, boxes), masked.eval()(crop, boxes, boxes)
    assert tuple(plain_out.flat()) == OUTPUT_NAMES == CropNetworkExport(plain).output_names
    names = crop_output_names(masked.config)
    assert tuple(masked_out.flat()) == names == CropNetworkExport(masked).output_names
    assert [n for n in names if n != MASK_OUTPUT_NAME] == list(OUTPUT_NAMES)
    assert masked_out.hand.mask_logits.shape == (2, 1, 8, 8)
    # An old state dict (no mask head) loads strictly into the default network ...
    old = plain.state_dict()
    assert not any("mask_decoder" in k for k in old)
    assert not tiny_network().load_state_dict(old).missing_keys
    # ... and a mask-head network names exactly what it lacks.
    with pytest.raises(RuntimeError, match="mask_decoder"):
        tiny_network("hand_head.mask_head=true").load_state_dict(old)


def test_checkpoint_config_from_before_the_option_matches_the_default_model():
    from hoi_perception.config import to_dict
    from hoi_training.training.state import CheckpointMismatchError, check_model_config

    network = tiny_network()
    saved = to_dict(network.config)
    del saved["hand_head"]["mask_head"]  # a checkpoint written before the option existed
    check_model_config({"model_config": saved}, "old.pt", network.config, "test")
    with pytest.raises(CheckpointMismatchError, match="hand_head.mask_head"):
        check_model_config({"model_config": saved}, "old.pt", tiny_network("hand_head.mask_head=true").config,
                           "test")


def test_mask_head_exports_to_onnx_with_its_extra_output(tmp_path):
    pytest.importorskip("onnxruntime")
    from hoi_perception.engines.export import export_onnx
    from hoi_perception.engines.onnx_engine import OnnxRuntimeEngine
    from hoi_perception.models.network import crop_output_names

    network = tiny_network("hand_head.mask_head=true").eval()
    for m in network.modules():  # O(1) gains, so the logits vary visibly (HFL's init keeps them near zero)
        if isinstance(m, (nn.Conv2d, nn.Linear)) and m.weight.requires_grad:
            nn.init.normal_(m.weight, std=m.weight[0].numel() ** -0.5)
    crop = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    boxes = torch.tensor([[4.0, 4.0, 20.0, 28.0], [8.0, 2.0, 30.0, 24.0]])
    inputs = {"crop": crop, "hand_box": boxes, "object_box": boxes}
    with torch.no_grad():
        expected = network(**inputs).hand.mask_logits.numpy()
    assert expected.std() > 0.05
    path = export_onnx(network, inputs, tmp_path / "crop.onnx")
    engine = OnnxRuntimeEngine(path, threads=1)
    assert engine.output_names == crop_output_names(network.config)
    got = engine.run({k: v.numpy() for k, v in inputs.items()})["hand_mask_logits"]
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_mask_loss_trains_the_head_on_a_synthetic_batch(tiny_set, tmp_path):
    from hoi_perception.config import load_config
    from hoi_training.losses import HandObjectTargets, hand_object_loss
    from hoi_training.train_config import TrainConfig
    from hoi_training.trainer import Trainer, build_hand_object_targets, collate_examples

    config = load_config(TrainConfig, "train/tiny_test.yaml", [f"datasets.synthetic.config.root={tiny_set}",
                                                               f"output_dir={tmp_path / 'run'}"])
    config.model_overrides.append("hand_head.mask_head=true")
    trainer = Trainer(config)
    examples = trainer.dataset.parts[0]
    batch = collate_examples([examples[0], examples[1]])
    network = trainer.network.train()
    targets, hand_box, object_box = build_hand_object_targets(batch.crop, batch.object_loss,
                                                              network.hand_decoder.hand_model,
                                                              trainer.model_config.roi.output_size)
    assert targets.has_hand_mask.tolist() == [1.0, 1.0] and targets.hand_mask.shape == (2, 8, 8)
    mask_only = HandObjectTargets(hand_mask=targets.hand_mask, has_hand_mask=targets.has_hand_mask)
    fraction = float(targets.hand_mask.float().mean())
    best_constant = -(fraction * np.log(fraction) + (1 - fraction) * np.log(1 - fraction))
    optimizer = torch.optim.Adam(network.parameters(), lr=0.01)
    losses = []
    for _ in range(25):
        loss = hand_object_loss(network(batch.crop["image"], hand_box, object_box).hand, None, mask_only)
        optimizer.zero_grad()
        loss.total.backward()
        optimizer.step()
        losses.append(loss.terms["hand_mask"].item())
    # BCE of a fresh head is log 2 (logits start at zero); on one batch it soon drops below the
    # best constant prediction, so the head has learnt where the hand is, not just how much of it.
    assert losses[0] == pytest.approx(np.log(2.0), abs=0.05)
    assert losses[-1] < min(0.6 * losses[0], best_constant)


def test_side_head_adds_one_logit_per_crop_and_only_its_own_weights(decoder):
    from hoi_perception.models.network import MASK_OUTPUT_NAME, OUTPUT_NAMES, SIDE_OUTPUT_NAME, crop_output_names

    torch.manual_seed(0)
    sided = HandDecoder(LinearHand(), channels=CHANNELS, side_head=True).eval()
    with torch.no_grad():
        out = sided(torch.randn(3, CHANNELS, 32, 32))
    assert out.side_logit.shape == (3,) and torch.isfinite(out.side_logit).all()
    extra = set(sided.state_dict()) - set(decoder.state_dict())
    assert extra and all(k.startswith("side_classifier.") for k in extra)
    assert set(decoder.state_dict()) < set(sided.state_dict())
    # A BatchNorm over the 21 x C per-joint features, a 21 C -> 64 layer and a 64 -> 1 layer.
    params = sum(p.numel() for p in sided.side_classifier.parameters())
    assert params == 2 * 21 * CHANNELS + (21 * CHANNELS + 1) * 64 + 65
    network = tiny_network("hand_head.side_head=true", "hand_head.mask_head=true")
    crop, boxes = torch.rand(2, 3, 32, 32), torch.tensor([[4.0, 4.0, 20.0, 28.0], [8.0, 2.0, 30.0, 24.0]])
    with torch.no_grad():
        names = tuple(network.eval()(crop, boxes, boxes).flat())
    assert names == crop_output_names(network.config)
    assert [n for n in names if n not in (MASK_OUTPUT_NAME, SIDE_OUTPUT_NAME)] == list(OUTPUT_NAMES)
    assert names.index(SIDE_OUTPUT_NAME) == names.index(MASK_OUTPUT_NAME) + 1 == names.index("object_votes") - 1


def test_side_head_reads_the_features_under_each_joint():
    from hoi_perception.models.hand_head import SideClassifier

    torch.manual_seed(0)
    head = SideClassifier(CHANNELS).eval()
    features = torch.randn(1, CHANNELS, 8, 8)
    cells = torch.randperm(64)[:21]
    heatmaps = torch.zeros(1, 21, 64)
    heatmaps[0, torch.arange(21), cells] = 1.0
    swapped = heatmaps.clone()
    swapped[0, [0, 4]] = heatmaps[0, [4, 0]]  # the wrist where the thumb tip was, and back
    with torch.no_grad():
        logit = head(features, heatmaps.view(1, 21, 8, 8))
        moved = head(features, swapped.view(1, 21, 8, 8))
        same = head(features, heatmaps.view(1, 21, 8, 8))
    # Pooled per joint, the same cells under other joints are another hand (a global mean is not).
    assert torch.equal(logit, same) and abs(float(logit - moved)) > 1e-3
