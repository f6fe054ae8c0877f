"""Neural network of the package: backbones, RoIAlign, interaction modules and heads.

``network.HOINet`` assembles them from a ``config.ModelConfig`` (``config/models/*.yaml``):

* ``resnet`` / ``fpn`` / ``backbones`` - torchvision-compatible ResNets, the P2-only FPN,
  SHO's single-stream and HFL's harmonious two-stream backbones;
* ``roi_align`` - exportable RoIAlign (grid_sample) and the hand-object intersection box;
* ``interaction`` - SHO's contextual reasoning and HFL's object-to-hand / hand-to-object attention;
* ``hand_head``, ``object_head``, ``detection_head`` - the decoders.

Submodules are imported explicitly (``from hoi_perception.models.network import HOINet``)
so that importing one part does not pull in the others.
"""
