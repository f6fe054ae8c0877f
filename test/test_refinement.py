"""DMA refinement in the network, export, runtime and training (``refine: dma``)."""

from __future__ import annotations

import copy

import numpy as np
import onnx
import pytest
import torch
from helpers import tiny_model  # test/ is on sys.path under pytest
from scipy.spatial.transform import Rotation

from hoi_perception.config import ConfigError, load_config, to_dict
from hoi_perception.engines.export import OBJECT_NAME_KEY, export_main, network_graphs, read_onnx_metadata
from hoi_perception.engines.torch_engine import TorchEngine
from hoi_perception.geometry.camera import project
from hoi_perception.hand_model.mano import HandModel
from hoi_perception.models.checkpoint import load_network_checkpoint
from hoi_perception.models.config import load_model_config
from hoi_perception.models.dma.graph import hand_graph
from hoi_perception.models.dma.refiner import DMAConfig, DMARefiner
from hoi_perception.models.network import OUTPUT_NAMES, HOINet
from hoi_perception.models.refinement import (
    REFINED_OUTPUT_NAMES,
    ObjectGraphCache,
    RefinementGraph,
    crop_camera_matrix,
    mirror_graph,
    mirror_pose,
    placeholder_object_graph,
    refine_crops,
    refinement_example_inputs,
)
from hoi_perception.objects.models import load_object_model
from hoi_perception.pipeline.config import EstimatorConfig
from hoi_perception.pipeline.estimator import Estimator
from hoi_training.train_config import TrainConfig
from hoi_training.trainer import Trainer

TINY_MODEL = tiny_model(32)
TINY_DMA = ["refine=dma", "dma.object_nodes=64", "dma.hidden_dim=16", "dma.attention_dim=16", "dma.num_blocks=1",
            "dma.gcn_layers=1", "dma.feature_strides=[1,4]"]
OBJECT = "sugar_box"


def tiny_network(refine: bool = True) -> HOINet:
    torch.manual_seed(0)
    return HOINet(load_model_config("models/hfl_r18.yaml", TINY_MODEL + (TINY_DMA if refine else []))).eval()


@pytest.fixture(scope="module")
def network() -> HOINet:
    return tiny_network()


@pytest.fixture(scope="module")
def sugar_box():
    return load_object_model(OBJECT, None)


# ----------------------------------------------------------------------------- config and network


def test_config_switch_builds_the_refiner_and_adds_its_features(network):
    plain = tiny_network(refine=False)
    assert plain.refiner is None and plain.config.refine == "none"
    crop = torch.rand(2, 3, 32, 32)
    boxes = torch.tensor([[2.0, 2.0, 20.0, 20.0]] * 2), torch.tensor([[10.0, 8.0, 30.0, 30.0]] * 2)
    assert tuple(plain(crop, *boxes).flat()) == OUTPUT_NAMES

    assert isinstance(network.refiner, DMARefiner)
    assert network.refiner.num_object_nodes == 64 and network.refiner.config.feature_strides == [1, 4]
    # Both streams' P2 side by side (2 x 16 channels); the RGB crop is the stride-1 level.
    assert network.refiner.feature_channels == (3, 32) and network.refiner.global_feature_dim == 32
    flat = network(crop, *boxes).flat()
    assert tuple(flat)[:len(OUTPUT_NAMES)] == OUTPUT_NAMES
    assert flat["refinement_p2"].shape == (2, 32, 8, 8) and flat["refinement_global_feature"].shape == (2, 32)
    torch.testing.assert_close(flat["refinement_global_feature"], flat["refinement_p2"].mean((2, 3)))
    # The refiner's weights are in the checkpoint, its graphs are not.
    keys = network.state_dict().keys()
    assert any(k.startswith("refiner.blocks.") for k in keys)
    assert not any("template" in k or "neighbour" in k for k in keys)


def test_shipped_dma_config_and_bad_strides():
    config = load_model_config("models/hfl_r18_dma.yaml")
    assert config.refine == "dma" and config.dma.feature_strides == [1, 4] and config.dma.object_nodes == 1000
    assert config.dma.losses.object_pose == 10.0
    with pytest.raises(ConfigError, match=r"HOINet offers the refiner strides \[1, 4\].*got \[8\]"):
        load_model_config("models/hfl_r18.yaml", ["refine=dma", "dma.feature_strides=[4,8]"])
    with pytest.raises(ConfigError, match="not one of"):
        load_model_config("models/hfl_r18.yaml", ["refine=lixel"])


def test_placeholder_and_mirrored_graphs(sugar_box):
    sphere = placeholder_object_graph(64)
    assert sphere.num_nodes == 64 and len(sphere.faces) == 2 * 64 - 4  # a closed triangulated sphere
    graphs = ObjectGraphCache(64).get(sugar_box)
    assert ObjectGraphCache(64).get(sugar_box).graph.template.tolist() == graphs.graph.template.tolist()
    mirrored = graphs.mirrored
    np.testing.assert_array_equal(mirrored.template, graphs.graph.template * [-1.0, 1.0, 1.0])
    np.testing.assert_array_equal(mirrored.edges, graphs.graph.edges)
    # Re-wound faces keep the normals pointing outwards: mirrored normals are the mirrored originals.
    def normals(graph):
        tri = graph.template[graph.faces]
        return np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    np.testing.assert_allclose(normals(mirrored), normals(graphs.graph) * [-1.0, 1.0, 1.0], atol=1e-12)
    assert mirror_graph(mirrored).template.tolist() == graphs.graph.template.tolist()


def test_mirrored_crop_camera_sees_the_mirrored_scene_where_the_crop_shows_it():
    K = np.array([[300.0, 0.0, 127.5], [0.0, 310.0, 95.5], [0.0, 0.0, 1.0]])
    width = 256
    flip = np.array([[-1.0, 0.0, width - 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    crop_affine = np.array([[0.8, 0.0, -20.0], [0.0, 0.8, -10.0], [0.0, 0.0, 1.0]])
    image_to_crop = crop_affine @ flip  # the estimator's mirrored crop
    points = np.random.default_rng(0).normal([0.0, 0.0, 0.5], 0.05, (10, 3))
    in_crop = project(points, K) @ image_to_crop[:2, :2].T + image_to_crop[:2, 2]
    mirrored_camera = crop_camera_matrix(image_to_crop, K, mirrored=True)
    np.testing.assert_allclose(project(points * [-1.0, 1.0, 1.0], mirrored_camera), in_crop, atol=1e-9)
    assert mirrored_camera[0, 0] > 0  # a proper camera matrix, as the hand translation solver needs
    rotation = Rotation.from_rotvec([0.2, -0.4, 0.1]).as_matrix()
    r, t = mirror_pose(rotation, np.array([0.1, 0.0, 0.5]))
    assert np.isclose(np.linalg.det(r), 1.0)
    np.testing.assert_allclose(mirror_pose(r, t)[0], rotation)


def test_refine_crops_groups_objects_and_keeps_batch_order(network, sugar_box):
    graphs = ObjectGraphCache(64).get(sugar_box)
    crop = torch.rand(3, 3, 32, 32)
    boxes = torch.tensor([[2.0, 2.0, 20.0, 20.0]] * 3), torch.tensor([[10.0, 8.0, 30.0, 30.0]] * 3)
    with torch.no_grad():
        for p in network.refiner.hand_output.parameters():  # make the output depend on the inputs
            p.normal_(0.0, 0.1)
        output = network(crop, *boxes)
        camera = torch.tensor([[60.0, 0.0, 16.0], [0.0, 60.0, 16.0], [0.0, 0.0, 1.0]]).expand(3, 3, 3)
        hand = network.refiner.hand_template.expand(3, -1, -1) + torch.tensor([0.0, 0.0, 0.4])
        rotation = torch.eye(3).expand(3, 3, 3)
        translation = torch.tensor([[0.02, 0.0, 0.42], [0.0, 0.03, 0.41], [-0.02, 0.0, 0.43]])
        order = [graphs.graph, graphs.mirrored, graphs.graph]
        together = refine_crops(network, crop, output, camera, hand, rotation, translation, order)
        for i, graph in enumerate(order):
            single = type(output)(output.hand, output.object, type(output.refinement)(
                output.refinement.p2[i:i + 1], output.refinement.global_feature[i:i + 1]))
            alone = refine_crops(network, crop[i:i + 1], single, camera[i:i + 1], hand[i:i + 1],
                                 rotation[i:i + 1], translation[i:i + 1], [graph])
            torch.testing.assert_close(together.hand_vertices[i], alone.hand_vertices[0])
            torch.testing.assert_close(together.object_vertices[i], alone.object_vertices[0])
        torch.nn.init.zeros_(network.refiner.hand_output.weight)  # back to untrained for the other tests
        torch.nn.init.zeros_(network.refiner.hand_output.bias)
    # The untrained object branch returns the coarse pose: mirrored graph = mirrored template posed.
    expected = torch.as_tensor(graphs.mirrored.template, dtype=torch.float32) + translation[1]
    torch.testing.assert_close(together.object_vertices[1], expected, atol=1e-5, rtol=0)


# ----------------------------------------------------------------------------- export


def test_export_writes_refine_graphs_that_match_pytorch(tmp_path, network, sugar_box):
    checkpoint = tmp_path / "tiny_dma.pt"
    torch.save({"model_config": to_dict(network.config), "model": network.state_dict()}, checkpoint)
    with pytest.raises(ValueError, match="name the object"):
        export_main(checkpoint, "onnx", tmp_path / "none")
    written = export_main(checkpoint, "onnx", tmp_path / "out", object_name=OBJECT)  # verifies each (< 1e-4)
    assert set(written) == {"crop", "detector", "refine", "refine_mirrored"}
    for name in ("refine", "refine_mirrored"):
        meta = read_onnx_metadata(written[name])
        assert meta[OBJECT_NAME_KEY] == OBJECT and meta["hoi_perception.graph"] == name
        model = onnx.load(str(written[name]))
        assert [i.name for i in model.graph.input] == ["crop", "p2", "camera_matrix", "coarse_hand_vertices",
                                                     "coarse_object_rotation", "coarse_object_translation",
                                                     "global_feature"]
        assert [o.name for o in model.graph.output] == list(REFINED_OUTPUT_NAMES)
    crop_outputs = [o.name for o in onnx.load(str(written["crop"])).graph.output]
    assert crop_outputs[-2:] == ["refinement_p2", "refinement_global_feature"]

    # The ONNX refine graph against the PyTorch refiner at a batch size other than the traced one.
    from hoi_perception.engines.onnx_engine import OnnxRuntimeEngine

    loaded = load_network_checkpoint(checkpoint)
    with torch.no_grad():
        for p in loaded.refiner.parameters():  # non-trivial output layers, so the comparison means something
            p.add_(torch.randn_like(p) * 0.05)
    refiner = loaded.refiner
    refiner.set_object_graph(ObjectGraphCache(64).get(sugar_box).graph)
    graph = RefinementGraph(refiner).eval()
    inputs = refinement_example_inputs(loaded, refiner, batch=3)
    path = tmp_path / "refine_perturbed.onnx"
    from hoi_perception.engines.export import export_onnx, verify_onnx

    export_onnx(graph, refinement_example_inputs(loaded, refiner, batch=2), path)
    errors = verify_onnx(graph, inputs, path)
    assert max(errors.values()) < 1e-4
    reference = TorchEngine(graph, inputs).run({k: v.numpy() for k, v in inputs.items()})
    candidate = OnnxRuntimeEngine(path).run({k: v.numpy() for k, v in inputs.items()})
    moved = np.abs(reference["refined_hand_vertices"] - inputs["coarse_hand_vertices"].numpy()).max()
    assert moved > 1e-3  # the perturbed refiner really refines
    for name in REFINED_OUTPUT_NAMES:
        np.testing.assert_allclose(candidate[name], reference[name], atol=1e-4 * np.abs(reference[name]).max())


def test_plain_model_export_is_unchanged_and_refuses_an_object(tmp_path):
    plain = tiny_network(refine=False)
    assert set(network_graphs(plain)) == {"crop", "detector"}
    checkpoint = tmp_path / "plain.pt"
    torch.save({"model_config": to_dict(plain.config), "model": plain.state_dict()}, checkpoint)
    with pytest.raises(ValueError, match="has no refinement stage"):
        export_main(checkpoint, "onnx", tmp_path / "out", object_name=OBJECT)


# ----------------------------------------------------------------------------- estimator


def _refine_engines(sugar_box, hand_shift=(0.0, 0.0, 0.0), object_shift=(0.0, 0.0, 0.0)):
    """Refine engines of a tiny refiner that moves every hand vertex and object node by fixed offsets
    (network frame); with zero offsets it is the untrained refiner, which returns its input."""
    torch.manual_seed(0)
    config = DMAConfig(hidden_dim=16, attention_dim=16, num_blocks=1, gcn_layers=1, feature_strides=[1],
                       object_nodes=64)
    refiner = DMARefiner(config, hand_graph(HandModel("right")), placeholder_object_graph(64), [3], 4)
    with torch.no_grad():
        refiner.hand_output.bias.copy_(torch.tensor(hand_shift) / config.position_scale)
        refiner.object_output.bias[6:].copy_(torch.tensor(object_shift) / config.position_scale)
    graphs = ObjectGraphCache(64).get(sugar_box)
    engines = {}
    for name, graph in (("refine", graphs.graph), ("refine_mirrored", graphs.mirrored)):
        refiner.set_object_graph(graph)
        module = RefinementGraph(copy.deepcopy(refiner))
        example = {"crop": torch.rand(2, 3, 96, 96), "camera_matrix": torch.eye(3).expand(2, 3, 3).contiguous(),
                   "coarse_hand_vertices": torch.zeros(2, 778, 3) + torch.tensor([0.0, 0.0, 0.5]),
                   "coarse_object_rotation": torch.eye(3).expand(2, 3, 3).contiguous(),
                   "coarse_object_translation": torch.tensor([[0.0, 0.0, 0.5]] * 2), "global_feature": torch.rand(2, 4)}
        engines[name] = CountingEngine(TorchEngine(module, example))
    return engines


class CountingEngine:
    """An engine wrapper that counts runs and the crops they refined."""

    def __init__(self, engine):
        self.engine, self.crops = engine, 0
        self.input_names, self.output_names = engine.input_names, engine.output_names

    def describe(self):
        return self.engine.describe()

    def run(self, inputs):
        self.crops += inputs["camera_matrix"].shape[0]
        return self.engine.run(inputs)


@pytest.fixture(scope="module")
def scene_helpers():
    import scenes

    return scenes


def _refining_crop_network(helpers, scene):
    network = helpers.IdealCropNetwork(scene)
    network.outputs = network.outputs + helpers._specs({"refinement_global_feature": (4,)})
    return network


def test_estimator_runs_the_refinement_and_reports_its_latency(scene_helpers, sugar_box):
    h = scene_helpers
    scene = h.build_scene()
    engines = _refine_engines(sugar_box)
    estimator = Estimator(EstimatorConfig(object_name=OBJECT), crop_engine=_refining_crop_network(h, scene),
                          detector_engine=h.SceneDetector(scene), refine_engines=engines)
    result = estimator.process(h.coordinate_image(), h.K, 1.0)
    assert result.timings_ms["refine"] > 0
    assert engines["refine"].crops == 1 and engines["refine_mirrored"].crops == 1  # right and left hand
    h.check_scene(result, scene)  # the untrained refiner gives the coarse estimate back

    # A refiner that moves the hand by 1 cm in +x of the network frame: -x for the mirrored left hand.
    shift = np.array([0.01, 0.0, 0.0])
    estimator = Estimator(EstimatorConfig(object_name=OBJECT), crop_engine=_refining_crop_network(h, scene),
                          detector_engine=h.SceneDetector(scene),
                          refine_engines=_refine_engines(sugar_box, hand_shift=shift, object_shift=(0.0, 0.0, 0.02)))
    shifted = estimator.process(h.coordinate_image(), h.K, 1.0)
    # (Joints regressed from the mesh differ from MANO's kinematic joints by up to ~0.5 mm, hence
    # the comparison with the untrained refiner's result rather than with the scene.)
    coarse = {t.result.side: t.result for t in result.hands}
    for tracked in shifted.hands:
        expected = shift if tracked.result.side == "right" else -shift
        np.testing.assert_allclose(tracked.result.joints_cam, coarse[tracked.result.side].joints_cam + expected,
                                   atol=1e-5)
        np.testing.assert_allclose(tracked.result.vertices_cam, coarse[tracked.result.side].vertices_cam + expected,
                                   atol=1e-5)
    (tracked_object,) = shifted.objects
    np.testing.assert_allclose(tracked_object.result.translation, scene.object_translation + [0.0, 0.0, 0.02],
                               atol=1e-4)


def test_estimator_refuses_refine_engines_for_a_plain_model(scene_helpers, sugar_box):
    h = scene_helpers
    scene = h.build_scene()
    with pytest.raises(ValueError, match="has no refinement outputs"):
        Estimator(EstimatorConfig(object_name=OBJECT), crop_engine=h.IdealCropNetwork(scene),
                  detector_engine=h.SceneDetector(scene), refine_engines=_refine_engines(sugar_box))


# ----------------------------------------------------------------------------- training


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory):
    from hoi_perception.synth.config import SynthConfig
    from hoi_perception.synth.generator import generate_dataset

    out = tmp_path_factory.mktemp("synth") / "tiny"
    generate_dataset(load_config(SynthConfig, "synth.yaml", ["camera.width=64", "camera.height=64"]), out,
                     sequences=1, frames=4, seed=0)
    return out


def test_a_training_step_trains_the_refiner_with_the_dma_losses(tiny_set, tmp_path):
    config = load_config(TrainConfig, "train/tiny_test.yaml", [f"datasets.synthetic.config.root={tiny_set}",
                                                                f"output_dir={tmp_path / 'run'}"])
    config.model_overrides = [*config.model_overrides, *TINY_DMA]
    trainer = Trainer(config)
    refiner = trainer.network.refiner
    before = {name: p.detach().clone() for name, p in refiner.named_parameters()}
    batch = next(iter(trainer._loader()))
    first, _ = trainer.train_step(batch)
    second, _ = trainer.train_step(batch)
    for result in (first, second):
        assert {"dma_mesh", "dma_edge", "dma_normal", "dma_joints", "dma_object_pose"} <= set(result.terms)
        assert all(np.isfinite(v) for v in result.terms.values())
        assert result.terms["dma_mesh"] > 0 and result.terms["dma_object_pose"] > 0
    changed = {name for name, p in refiner.named_parameters() if not torch.equal(p, before[name])}
    # Output layers move on the first step; after it the hidden layers receive gradients too.
    assert {"hand_output.weight", "object_output.weight", "hand_input.weight"} <= changed
    assert any(name.startswith("blocks.0.attention") for name in changed)


def test_evaluator_refines_in_the_crop_frame(tiny_set, network):
    from hoi_perception.objects.models import load_object_library
    from hoi_training.data.synthetic import SyntheticConfig, SyntheticDataset
    from hoi_training.evaluate import EvaluationDataset, EvaluationRunConfig, Evaluator

    config = EvaluationRunConfig(dataset=EvaluationDataset(kind="synthetic", config={"root": str(tiny_set)}))
    evaluator = Evaluator(network, config, load_object_library(None), torch.device("cpu"))
    sample = SyntheticDataset(SyntheticConfig(root=tiny_set))[0]
    (frame,) = evaluator.prepare([sample])
    output = evaluator.run_network([frame])
    model = load_object_model(sample.object_name, None)
    hand = network.refiner.hand_template.double().numpy() + sample.joints_3d[0]
    rotation, translation = Rotation.from_rotvec([0.1, 0.2, 0.3]).as_matrix(), np.array([0.01, 0.02, 0.5])
    joints, vertices, refined_rotation, refined_translation = evaluator.refine(frame, output, 0, model, hand,
                                                                              rotation, translation)
    # The untrained refiner returns the coarse hand and pose, whatever the crop shows.
    np.testing.assert_allclose(vertices, hand, atol=1e-5)
    assert joints.shape == (21, 3)
    np.testing.assert_allclose(refined_rotation, rotation, atol=1e-4)
    np.testing.assert_allclose(refined_translation, translation, atol=1e-5)
