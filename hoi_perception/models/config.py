"""Architecture configuration of :class:`~hoi_perception.models.network.HOINet`.

Loaded from ``config/models/*.yaml`` with :func:`load_model_config`. The shipped files:

* ``hfl_r50.yaml`` - HFL-Net: harmonious two-stream ResNet-50 FPN, 256 px crops.
* ``sho_r50.yaml`` - Semi-Hand-Object: single-stream ResNet-50 FPN with LeakyReLU and
  the CR transformer (object query), 512 px crops.
* ``hfl_r18.yaml`` - HFL-Net's structure on ResNet-18 with 64-channel features and
  128 px crops, for CPUs and Jetson-class robots (the shipped checkpoint's model).
* ``hfl_r18_dma.yaml`` - ``hfl_r18`` with the Dense Mutual Attention refinement stage
  (``refine: dma``, see :mod:`hoi_perception.models.refinement`).

Only architecture lives here; weights, the MANO files and training settings are
configured elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from hoi_perception.config import ConfigError, load_config
from hoi_perception.models.dma.refiner import DMAConfig

# Levels the refiner can sample, by stride in crop pixels: 1 is the crop image itself
# (DMA's per-vertex colour), 4 is P2 (both streams' P2 side by side for HFL's backbone).
REFINEMENT_STRIDES: tuple[int, ...] = (1, 4)


@dataclass
class BackboneConfig:
    """ResNet-FPN feature extractor producing P2 (stride 4)."""

    depth: Literal[18, 34, 50] = 50
    # "harmonious": HFL's two streams (shared stem/layer1/layer4, own layer2/3 and FPN);
    # "single": SHO's one ResNet-FPN for hand and object.
    streams: Literal["harmonious", "single"] = "harmonious"
    fpn_channels: int = 256
    activation: Literal["relu", "leaky_relu"] = "relu"

    def validate(self) -> None:
        if self.fpn_channels < 2 or self.fpn_channels % 2:
            raise ConfigError(f"fpn_channels must be an even number >= 2, got {self.fpn_channels}")


@dataclass
class RoIConfig:
    """RoIAlign on P2 (spatial scale 1/4) for the hand, object and intersection boxes."""

    output_size: int = 32
    sampling_ratio: int = 2
    aligned: bool = True

    def validate(self) -> None:
        if self.output_size < 1:
            raise ConfigError(f"output_size must be >= 1, got {self.output_size}")
        if self.sampling_ratio < 1:
            raise ConfigError(f"sampling_ratio must be >= 1 (adaptive sampling cannot be exported), "
                              f"got {self.sampling_ratio}")


@dataclass
class InteractionConfig:
    """Attention between the hand and object RoIs.

    ``harmonious``: HFL's object-to-hand (self-attention over 2C channels) and
    hand-to-object (cross-attention) modules. ``contextual_reasoning``: SHO's CR block,
    whose ``query`` (object, hand or both) attends over the intersection RoI.
    """

    kind: Literal["harmonious", "contextual_reasoning"] = "harmonious"
    num_heads: int = 4
    depth: int = 1
    mlp_ratio: float = 4.0
    query: Literal["object", "hand", "both"] | None = None

    def validate(self) -> None:
        if self.num_heads < 1 or self.depth < 1 or self.mlp_ratio <= 0:
            raise ConfigError(f"need num_heads >= 1, depth >= 1 and mlp_ratio > 0, got "
                              f"{self.num_heads}, {self.depth}, {self.mlp_ratio}")
        if self.kind == "contextual_reasoning" and self.query is None:
            raise ConfigError("contextual_reasoning needs query: object, hand or both")
        if self.kind == "harmonious" and self.query is not None:
            raise ConfigError("query applies to contextual_reasoning only; HFL's queries are fixed")


@dataclass
class HandHeadConfig:
    """SHO's hand decoder; its channel count is the backbone's ``fpn_channels``.

    ``mask_head`` adds a hand-mask output on the hand-box grid (the RoI size), which
    SemiHand's mask consistency terms need; off (the default) the network, its state
    dict and its exported graphs are those of a model without the option.
    ``side_head`` adds the ``side_logit`` output (``hand_head.SideClassifier``): whether a
    crop shows a right hand, which the runtime asks of each new hand's crop as it is and
    mirrored; off, as mask_head.
    """

    hourglass_depth: int = 4
    encoder_rounds: int = 4
    encoder_blocks: int = 2
    regressor_hidden: int = 512
    confidence_radius: float = 2.0
    mask_head: bool = False
    side_head: bool = False

    def validate(self) -> None:
        if min(self.hourglass_depth, self.encoder_rounds, self.encoder_blocks, self.regressor_hidden) < 1:
            raise ConfigError("hourglass_depth, encoder_rounds, encoder_blocks and regressor_hidden must be >= 1")
        if self.confidence_radius <= 0:
            raise ConfigError(f"confidence_radius must be > 0 cells, got {self.confidence_radius}")


@dataclass
class ObjectHeadConfig:
    """SHO's control-point voting head."""

    num_blocks: int = 3
    offset_scale: float = 0.1
    # Append each cell's position in the box as two input channels (see ObjectHead).
    coord_channels: bool = False

    def validate(self) -> None:
        if self.num_blocks < 1 or self.offset_scale <= 0:
            raise ConfigError(f"need num_blocks >= 1 and offset_scale > 0, got {self.num_blocks}, {self.offset_scale}")


@dataclass
class DetectionHeadConfig:
    """CenterNet-style head on the full (letterboxed) frame's P2."""

    head_channels: int = 64
    max_detections: int = 20
    # Side of the letterboxed frame the detector sees, pixels; null: the crop's input_size.
    # A frame letterboxed to a 128 px crop size shrinks a hand to a few P2 cells; the
    # detector runs once per tracking re-detection, so a larger frame costs little per frame.
    input_size: int | None = None
    # Which features the head reads. shared: the crop backbone's P2, frozen while the head
    # trains (the crop network stays exactly as trained). own: the detector's own copies of
    # the ResNet's layer2-3 (on the crop backbone's stem and layer1) with a P2 FPN over
    # C2-C4, started from the crop backbone's weights and trained on full frames (the crop
    # backbone learnt mirrored hand crops at crop scale, which leave the head few cues for
    # whole frames and hand sides); it adds layer2-3's weights (2.6 M for ResNet-18) and
    # runs only when the detector does.
    trunk: Literal["shared", "own"] = "shared"

    def validate(self) -> None:
        if self.head_channels < 1 or self.max_detections < 1:
            raise ConfigError(f"need head_channels >= 1 and max_detections >= 1, got "
                              f"{self.head_channels}, {self.max_detections}")
        if self.input_size is not None and (self.input_size < 32 or self.input_size % 32):
            raise ConfigError(f"input_size must be null or a positive multiple of 32 (the ResNet's stride), "
                              f"got {self.input_size}")


@dataclass
class ModelConfig:
    """Everything that fixes the network's architecture and input size."""

    name: str = "hfl_r50"
    # Side of the square crop (and of the letterboxed frame for detection unless
    # detection_head.input_size says otherwise), pixels.
    input_size: int = 256
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    roi: RoIConfig = field(default_factory=RoIConfig)
    interaction: InteractionConfig = field(default_factory=InteractionConfig)
    hand_head: HandHeadConfig = field(default_factory=HandHeadConfig)
    object_head: ObjectHeadConfig = field(default_factory=ObjectHeadConfig)
    detection_head: DetectionHeadConfig = field(default_factory=DetectionHeadConfig)
    # Second stage after PnP and the hand translation: "dma" refines the camera-frame hand
    # mesh and object pose with Dense Mutual Attention (configured by ``dma``).
    refine: Literal["none", "dma"] = "none"
    dma: DMAConfig = field(default_factory=DMAConfig)
    # Init of the layers HFL adds to the ResNet (FPNs, interaction, hourglass, encoder,
    # object trunk). "hfl": N(0, 0.001) convs, N(0, 0.01) linears, the paper's choice
    # for a pretrained trunk; "pytorch": PyTorch's Kaiming-uniform defaults, which keep
    # activations alive when the whole network trains from scratch.
    new_layer_init: Literal["hfl", "pytorch"] = "hfl"

    @property
    def detector_input_size(self) -> int:
        """Side of the detector's letterboxed frame, pixels."""
        return self.detection_head.input_size or self.input_size

    def validate(self) -> None:
        if self.input_size < 32 or self.input_size % 32:
            raise ConfigError(f"input_size must be a positive multiple of 32 (the ResNet's stride), "
                              f"got {self.input_size}")
        divisor = 2 ** max(self.hand_head.hourglass_depth, self.hand_head.encoder_rounds)
        if self.roi.output_size % divisor:
            raise ConfigError(f"roi.output_size {self.roi.output_size} must be divisible by {divisor} "
                              f"(2 ** max(hand_head.hourglass_depth, hand_head.encoder_rounds))")
        if self.backbone.fpn_channels % self.interaction.num_heads:
            raise ConfigError(f"interaction.num_heads {self.interaction.num_heads} must divide the attention "
                              f"width backbone.fpn_channels {self.backbone.fpn_channels}")
        unknown = [s for s in self.dma.feature_strides if s not in REFINEMENT_STRIDES]
        if self.refine == "dma" and unknown:
            raise ConfigError(f"dma.feature_strides: HOINet offers the refiner strides {list(REFINEMENT_STRIDES)} "
                              f"(1: the crop image, 4: P2), got {unknown}")


def load_model_config(source: str | Path | dict[str, Any] | None = None, overrides: list[str] | tuple[str, ...] = ()
                      ) -> ModelConfig:
    """Load a :class:`ModelConfig` from a YAML path (absolute, or relative to ``config/``,
    e.g. ``models/hfl_r50.yaml``), a dict, or ``None`` for HFL-Net's defaults."""
    return load_config(ModelConfig, source, overrides)
