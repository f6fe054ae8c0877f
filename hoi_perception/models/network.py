"""HOINet: the assembled hand-object network (HFL-Net or Semi-Hand-Object, by config).

Two entry points share one backbone:

* :meth:`HOINet.forward` - a square crop around the hand and the object plus both
  boxes in crop pixels -> hand heatmaps, 2D joints, MANO pose/shape, root-relative
  mesh and joints, and dense object control-point votes (:class:`NetworkOutput`).
* :meth:`HOINet.detect` - the letterboxed full camera frame -> CenterNet outputs for
  right hand, left hand and object, which give the boxes for the crop.

With ``refine: dma`` the network also holds the DMA refiner (:attr:`HOINet.refiner`) and
``forward`` adds the refiner's image features to its output; the refiner itself runs
after the camera-frame geometry, as a graph of its own (see
:mod:`hoi_perception.models.refinement`).

Images are raw RGB in [0, 1]; the backbone normalises them. Everything in both paths
is static-shape (except batch) and free of data-dependent Python branches, so it
exports to ONNX opset 17 (see :class:`CropNetworkExport`, :class:`DetectionExport`).
Geometry after the network (PnP, camera-frame hand translation) runs outside it.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

import torch
from torch import nn

from hoi_perception.hand_model.mano import HandModel
from hoi_perception.models.backbones import (
    Backbone,
    BackboneFeatures,
    DetectorTrunk,
    HarmoniousBackbone,
    SingleStreamBackbone,
    shared_c2,
)
from hoi_perception.models.config import ModelConfig
from hoi_perception.models.detection_head import DetectionHead, DetectionHeadOutput, Detections, decode_detections
from hoi_perception.models.hand_head import HandDecoder, HandDecoderOutput
from hoi_perception.models.interaction import ContextualReasoning, EnhancedRoIs, HarmoniousInteraction
from hoi_perception.models.object_head import ObjectHead, ObjectHeadOutput
from hoi_perception.models.refinement import RefinementFeatures, build_refiner, refinement_features
from hoi_perception.models.roi_align import RoIAlign, intersection_boxes

# P2 is the stride-4 level of the FPN.
P2_STRIDE = 4


@dataclass
class NetworkOutput:
    """Per-crop outputs: the hand decoder's and the object head's, and with ``refine: dma``
    the image features the refinement stage samples (None otherwise)."""

    hand: HandDecoderOutput
    object: ObjectHeadOutput
    refinement: RefinementFeatures | None = None

    def flat(self) -> dict[str, torch.Tensor]:
        """Named tensors as the exporter names them (``flatten_outputs``): :func:`crop_output_names`
        order, then ``refinement_*`` if present."""
        out = {f"hand_{f.name}": getattr(self.hand, f.name) for f in fields(self.hand)
               if getattr(self.hand, f.name) is not None}
        out.update({f"object_{f.name}": getattr(self.object, f.name) for f in fields(self.object)})
        if self.refinement is not None:
            out.update({f"refinement_{f.name}": getattr(self.refinement, f.name) for f in fields(self.refinement)
                        if getattr(self.refinement, f.name) is not None})
        return out


@dataclass
class HandHeatmaps:
    """The hand decoder's first step alone: heatmaps (B, 21, R, R) and soft-argmax joints2d (B, 21, 2)
    in hand-box units (:meth:`HOINet.hand_heatmaps`, the heatmap training stage)."""

    heatmaps: torch.Tensor
    joints2d: torch.Tensor


# The hand-mask logits exist only with ``hand_head.mask_head``, the side logit only with
# ``hand_head.side_head``; OUTPUT_NAMES are the outputs every model has.
MASK_OUTPUT_NAME = "hand_mask_logits"
SIDE_OUTPUT_NAME = "hand_side_logit"
OUTPUT_NAMES: tuple[str, ...] = (tuple(f"hand_{f.name}" for f in fields(HandDecoderOutput)
                                       if f"hand_{f.name}" not in (MASK_OUTPUT_NAME, SIDE_OUTPUT_NAME))
                                 + tuple(f"object_{f.name}" for f in fields(ObjectHeadOutput)))
DETECTION_OUTPUT_NAMES: tuple[str, ...] = tuple(f.name for f in fields(Detections))


def init_new_layers(module: nn.Module) -> None:
    """HFL-Net's init for layers trained from scratch: convs N(0, 0.001), linears N(0, 0.01), zero biases."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, std=0.001)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.01)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def build_backbone(config: ModelConfig) -> Backbone:
    b = config.backbone
    cls = HarmoniousBackbone if b.streams == "harmonious" else SingleStreamBackbone
    return cls(b.depth, b.fpn_channels, b.activation)


def default_hand_model() -> HandModel:
    """The right-hand MANO layer from the default hand-model config (the shipped stand-in
    unless real MANO files are configured)."""
    return HandModel("right")


# The MANO layer's arrays are buffers of the hand decoder, but they are data of the hand
# model files, not learnt weights: MANO's licence forbids redistributing them inside a
# checkpoint, and a checkpoint must not replace the MANO files a user configured.
HAND_MODEL_KEY = "hand_decoder.hand_model."


def _remove_hand_model_keys(state_dict: dict, prefix: str) -> None:
    for key in [k for k in state_dict if k.startswith(prefix + HAND_MODEL_KEY)]:
        del state_dict[key]


def _drop_hand_model_from_state_dict(module: nn.Module, state_dict: dict, prefix: str, local_metadata: dict) -> None:
    _remove_hand_model_keys(state_dict, prefix)


def _skip_hand_model_on_load(module: nn.Module, state_dict: dict, prefix: str, local_metadata: dict, strict: bool,
                             missing_keys: list, unexpected_keys: list, error_msgs: list) -> None:
    _remove_hand_model_keys(state_dict, prefix)


def _hand_model_is_not_missing(module: nn.Module, incompatible_keys) -> None:
    incompatible_keys.missing_keys[:] = [k for k in incompatible_keys.missing_keys if HAND_MODEL_KEY not in k]


class HOINet(nn.Module):
    """Backbone + RoIAlign + interaction + hand decoder + object head + detection head.

    Args:
        config: the architecture (see :mod:`hoi_perception.models.config`).
        hand_model: right-hand MANO layer for the hand decoder; ``None`` builds the
            default :class:`~hoi_perception.hand_model.mano.HandModel`. Left hands are
            mirrored before the network.

    ``state_dict()`` leaves the MANO layer out and ``load_state_dict`` keeps the one the
    network was built with (see ``HAND_MODEL_KEY``).
    """

    def __init__(self, config: ModelConfig, hand_model: HandModel | None = None) -> None:
        super().__init__()
        self.config = config
        channels = config.backbone.fpn_channels
        self.backbone = build_backbone(config)
        self.roi_align = RoIAlign(config.roi.output_size, 1.0 / P2_STRIDE, config.roi.sampling_ratio,
                                  config.roi.aligned)
        inter = config.interaction
        if inter.kind == "harmonious":
            self.interaction: nn.Module = HarmoniousInteraction(channels, inter.num_heads, inter.depth,
                                                                inter.mlp_ratio)
        else:
            assert inter.query is not None  # InteractionConfig refuses contextual_reasoning without a query
            self.interaction = ContextualReasoning(channels, inter.query, inter.num_heads, inter.depth,
                                                   inter.mlp_ratio)
        hh = config.hand_head
        self.hand_decoder = HandDecoder(default_hand_model() if hand_model is None else hand_model, channels,
                                        config.roi.output_size, hh.hourglass_depth, hh.encoder_rounds,
                                        hh.encoder_blocks, hh.regressor_hidden, hh.confidence_radius,
                                        hh.mask_head, hh.side_head)
        self.object_head = ObjectHead(channels, config.roi.output_size, config.object_head.num_blocks,
                                      config.object_head.offset_scale, config.object_head.coord_channels)
        # The detection head sees both streams' P2 side by side (hands from the hand stream,
        # objects from the object stream); the single-stream backbone has one P2, and the
        # detector's own trunk (detection_head.trunk: own) its own P2.
        dh = config.detection_head
        self.detector_trunk = (DetectorTrunk(config.backbone.depth, channels, config.backbone.activation)
                               if dh.trunk == "own" else None)
        detection_channels = channels * (2 if config.backbone.streams == "harmonious" and dh.trunk == "shared"
                                         else 1)
        self.detection_head = DetectionHead(detection_channels, dh.head_channels)
        # The refiner's output layers start at zero (an untrained refiner returns its input);
        # its other layers keep PyTorch's init, as in DMA.
        self.refiner = build_refiner(config, self.hand_decoder.hand_model) if config.refine == "dma" else None
        # New layers start from HFL's init. The ResNet keeps its own (an ImageNet checkpoint
        # replaces it); output layers with a purposeful init (MANO regressor at the identity
        # rotation, detection prior bias) are left as their heads set them.
        fpns = ([self.backbone.hand_fpn, self.backbone.object_fpn] if isinstance(self.backbone, HarmoniousBackbone)
                else [self.backbone.fpn])
        if config.new_layer_init == "hfl":
            mask_decoder = self.hand_decoder.mask_decoder
            for module in (*fpns, self.interaction, self.hand_decoder.heatmap_net, self.hand_decoder.encoder,
                           self.object_head.trunk, *([] if mask_decoder is None else [mask_decoder])):
                init_new_layers(module)
        if self.detector_trunk is not None:
            self.detector_trunk.copy_from(self.backbone)
        self.register_state_dict_post_hook(_drop_hand_model_from_state_dict)
        self.register_load_state_dict_pre_hook(_skip_hand_model_on_load)
        self.register_load_state_dict_post_hook(_hand_model_is_not_missing)

    def load_imagenet_weights(self, path: str | Path) -> list[str]:
        """Initialise the backbone's ResNet(s) (and the detector's own trunk, as a copy) from a
        torchvision ImageNet checkpoint file."""
        skipped = self.backbone.load_imagenet_weights(path)
        if self.detector_trunk is not None:
            self.detector_trunk.copy_from(self.backbone)
        return skipped

    def _check_inputs(self, crop: torch.Tensor, *boxes: tuple[str, torch.Tensor], size: int | None = None) -> None:
        """``size``: the expected image side (default: the crop's input_size)."""
        if torch.jit.is_tracing():
            return
        size = size or self.config.input_size
        if crop.dim() != 4 or crop.shape[1:] != (3, size, size):
            raise ValueError(f"image: expected (B, 3, {size}, {size}) RGB in [0, 1] for model "
                             f"'{self.config.name}', got {tuple(crop.shape)}")
        for name, box in boxes:
            if box.shape != (crop.shape[0], 4):
                raise ValueError(f"{name}: expected ({crop.shape[0]}, 4) boxes (x0, y0, x1, y1) in crop pixels, "
                                 f"got {tuple(box.shape)}")

    def roi_features(self, crop: torch.Tensor, hand_box: torch.Tensor, object_box: torch.Tensor) -> EnhancedRoIs:
        """Backbone, RoIAlign and interaction: the enhanced hand and object RoIs.

        Hand and intersection RoIs come from the hand stream's P2, the object RoI from the
        object stream's (one and the same map for the single-stream backbone).
        """
        self._check_inputs(crop, ("hand_box", hand_box), ("object_box", object_box))
        return self._enhanced_rois(self.backbone(crop), hand_box, object_box)

    def _enhanced_rois(self, features: BackboneFeatures, hand_box: torch.Tensor, object_box: torch.Tensor
                       ) -> EnhancedRoIs:
        hand_roi = self.roi_align(features.hand, hand_box)
        object_roi = self.roi_align(features.object, object_box)
        overlap_box, overlaps = intersection_boxes(hand_box, object_box)
        # Zero features when the boxes do not overlap (a mask, not a branch).
        intersection_roi = self.roi_align(features.hand, overlap_box) * overlaps.view(-1, 1, 1, 1)
        if isinstance(self.interaction, HarmoniousInteraction):
            hand_roi_from_object = (hand_roi if features.object is features.hand
                                    else self.roi_align(features.object, hand_box))
            return self.interaction(hand_roi, hand_roi_from_object, object_roi, intersection_roi)
        return self.interaction(hand_roi, object_roi, intersection_roi)

    def forward(self, crop: torch.Tensor, hand_box: torch.Tensor, object_box: torch.Tensor) -> NetworkOutput:
        """Crop (B, 3, S, S) in [0, 1] and (B, 4) hand/object boxes in crop pixels -> :class:`NetworkOutput`."""
        self._check_inputs(crop, ("hand_box", hand_box), ("object_box", object_box))
        features = self.backbone(crop)
        rois = self._enhanced_rois(features, hand_box, object_box)
        refinement = (None if self.refiner is None
                      else refinement_features(self.config, features.hand, features.object))
        return NetworkOutput(hand=self.hand_decoder(rois.hand), object=self.object_head(rois.object),
                             refinement=refinement)

    def hand_heatmaps(self, crop: torch.Tensor, hand_box: torch.Tensor) -> HandHeatmaps:
        """Backbone, hand RoI and heatmaps only: what the 2D stage trains, at a fraction of
        :meth:`forward`'s cost (no interaction, no 3D or object head)."""
        self._check_inputs(crop, ("hand_box", hand_box))
        features = self.backbone(crop)
        heatmaps, joints2d, _, _ = self.hand_decoder.heatmap_net(self.roi_align(features.hand, hand_box))
        return HandHeatmaps(heatmaps=heatmaps, joints2d=joints2d)

    def detect(self, frame: torch.Tensor) -> DetectionHeadOutput:
        """Letterboxed full frame (B, 3, S, S) in [0, 1] -> detection head outputs (boxes in its pixels)."""
        self._check_inputs(frame, size=self.config.detector_input_size)
        if self.detector_trunk is not None:
            return self.detection_head(self.detector_trunk(shared_c2(self.backbone, frame)))
        features = self.backbone(frame)
        p2 = features.hand if features.hand is features.object else torch.cat((features.hand, features.object), 1)
        return self.detection_head(p2)

    def detect_top_k(self, frame: torch.Tensor) -> Detections:
        """:meth:`detect` followed by the fixed-size top-k decode (``detection_head.max_detections`` peaks)."""
        return decode_detections(self.detect(frame), self.config.detection_head.max_detections, P2_STRIDE)


def crop_output_names(config: ModelConfig) -> tuple[str, ...]:
    """The crop network's output names in order: :data:`OUTPUT_NAMES`, with :data:`MASK_OUTPUT_NAME`
    and then :data:`SIDE_OUTPUT_NAME` after the other hand outputs when the model has those heads."""
    hand = [n for n in OUTPUT_NAMES if n.startswith("hand_")]
    optional = [name for name, present in ((MASK_OUTPUT_NAME, config.hand_head.mask_head),
                                           (SIDE_OUTPUT_NAME, config.hand_head.side_head)) if present]
    return (*hand, *optional, *OUTPUT_NAMES[len(hand):])


class CropNetworkExport(nn.Module):
    """ONNX view of :meth:`HOINet.forward`: inputs (crop, hand_box, object_box), outputs a
    tuple in :func:`crop_output_names` order."""

    input_names = ("crop", "hand_box", "object_box")

    def __init__(self, network: HOINet) -> None:
        super().__init__()
        self.network = network
        self.output_names = crop_output_names(network.config)

    def forward(self, crop: torch.Tensor, hand_box: torch.Tensor, object_box: torch.Tensor
                ) -> tuple[torch.Tensor, ...]:
        return tuple(self.network(crop, hand_box, object_box).flat().values())


class DetectionExport(nn.Module):
    """ONNX view of :meth:`HOINet.detect_top_k`: input frame, outputs (boxes, scores, classes)."""

    input_names = ("frame",)
    output_names = DETECTION_OUTPUT_NAMES

    def __init__(self, network: HOINet) -> None:
        super().__init__()
        self.network = network

    def forward(self, frame: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.network.detect_top_k(frame)
        return tuple(getattr(out, name) for name in DETECTION_OUTPUT_NAMES)
