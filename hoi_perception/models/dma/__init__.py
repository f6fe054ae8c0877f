"""Dense Mutual Attention refinement (Wang, Mao and Li, ICCV 2023) as an optional second stage.

Given coarse hand and object meshes in the camera frame and the backbone's feature maps,
:class:`~hoi_perception.models.dma.refiner.DMARefiner` returns a refined hand mesh (and
its 21 joints) and a refined object pose:

* ``graph`` - the hand graph (MANO faces) and the resampled, precomputable object graph,
  and the graph convolution;
* ``features`` - per-vertex image features sampled at the vertices' projections;
* ``attention`` - hand-to-object and object-to-hand attention over all node pairs;
* ``refiner`` - :class:`DMAConfig`, the network and its ONNX view.

Typical use::

    hand_g = hand_graph(HandModel("right"))
    object_g = object_graph(model.vertices, model.faces, config.object_nodes)
    refiner = DMARefiner(config, hand_g, object_g, feature_channels=[256], global_feature_dim=512)
    out = refiner([p2], [4], K_crop, coarse_hand_vertices, coarse_object_vertices, global_feature)

The training losses are in ``hoi_training.dma_losses``.
"""

from hoi_perception.models.dma.attention import AttentionMaps, MutualAttention
from hoi_perception.models.dma.graph import HandGraph, MeshGraph, hand_graph, object_graph
from hoi_perception.models.dma.refiner import DMAConfig, DMALossWeights, DMAOutput, DMARefiner, DMARefinerExport

__all__ = [
    "AttentionMaps",
    "DMAConfig",
    "DMALossWeights",
    "DMAOutput",
    "DMARefiner",
    "DMARefinerExport",
    "HandGraph",
    "MeshGraph",
    "MutualAttention",
    "hand_graph",
    "object_graph",
]
