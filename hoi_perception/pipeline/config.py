"""Configuration of the runtime estimator: the ``estimator:`` section of ``config/perception.yaml``.

Which network files run in which engine, which object the object head reports (the
network estimates one object; its identity and 3D model come from the object library),
which hands to track, and the settings of detection, tracking, geometry and filtering.
Other sections of the same file (the ROS node's) are read by their own loaders.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from hoi_perception.config import (
    ConfigError,
    apply_overrides,
    check_override_keys,
    from_dict,
    read_yaml,
    resolve_config_path,
)
from hoi_perception.engines.base import EngineConfig
from hoi_perception.frontends.mano_fit import ManoFitConfig
from hoi_perception.frontends.mediapipe_hands import MediaPipeHandsConfig
from hoi_perception.geometry.hand_translation import HandTranslationConfig
from hoi_perception.geometry.object_depth import ObjectDepthConfig
from hoi_perception.geometry.pnp import PnPConfig
from hoi_perception.models.detection_head import DetectionSelectionConfig
from hoi_perception.pipeline.gates import GateConfig
from hoi_perception.pipeline.tracking import TrackingConfig

DEFAULT_PERCEPTION_CONFIG = "perception.yaml"
ESTIMATOR_SECTION = "estimator"
HAND_FRONTENDS: tuple[str, ...] = ("network", "mediapipe")


# Who names a detected hand right or left (pipeline/hand_side.py).
HandSideSource = Literal["crop_network", "detector"]


@dataclass
class EstimatorConfig:
    """Everything :class:`~hoi_perception.pipeline.estimator.Estimator` needs to start.

    The networks: ``engine.kind: torch`` runs ``checkpoint`` (a training checkpoint) in
    PyTorch; ``onnxruntime`` and ``tensorrt`` run ``crop_model`` and ``detector_model``,
    the two ONNX files ``hoi-perception export`` writes (TensorRT builds and caches its
    plans from them). ``engine.model_path`` is not used here: the two graphs have their
    own paths.

    ``hand_frontend: mediapipe`` takes the hands from MediaPipe Hands (landmarks, a MANO fit,
    :mod:`hoi_perception.pipeline.mediapipe_frontend`) instead of the network; the network
    is then optional and, when configured, estimates the object on crops around those hands.
    """

    engine: EngineConfig = field(default_factory=EngineConfig)
    checkpoint: Path | None = None
    crop_model: Path | None = None
    detector_model: Path | None = None
    # Object library YAML (None: the shipped config/objects.yaml) and the object the
    # object head reports; None tracks hands only.
    objects: Path | None = None
    object_name: str | None = None
    hand_sides: list[Literal["right", "left"]] = field(default_factory=lambda: ["right", "left"])
    # MANO files for the mesh of the filtered hand; must be those the network was exported
    # with. None: $HOI_MANO_DIR, else the shipped stand-in (as the network's default).
    mano_dir: Path | None = None
    # Temporal filter settings (hoi_perception.tracking.FilterConfig), a YAML path.
    filter_config: Path = Path("filter.yaml")
    # Each of the hand and object boxes grows by this factor before their union is squared
    # into the crop. null: as the model was trained (its checkpoint or exported graphs
    # record it); a value that contradicts the model's record is refused.
    crop_box_expansion: float | None = None
    detection: DetectionSelectionConfig = field(default_factory=DetectionSelectionConfig)
    # Who says whether a detected hand is right or left: the crop network's joint confidence on
    # the hand's crop as it is and mirrored (pipeline/hand_side.py, one extra crop per hand when
    # the detector runs), or the detector's class alone.
    hand_side_from: HandSideSource = "crop_network"
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    pnp: PnPConfig = field(default_factory=PnPConfig)
    # The object's depth from its detected box instead of from its votes' spread
    # (geometry/object_depth.py).
    object_depth: ObjectDepthConfig = field(default_factory=ObjectDepthConfig)
    hand_translation: HandTranslationConfig = field(default_factory=HandTranslationConfig)
    gates: GateConfig = field(default_factory=GateConfig)
    # Where the hands come from: the network, or MediaPipe Hands' models with a MANO fit.
    hand_frontend: Literal["network", "mediapipe"] = "network"
    # With hand_frontend mediapipe, what estimates each hand: "landmarks" (a MANO fit to
    # MediaPipe's landmarks) or "network" (the crop network on MediaPipe's hand boxes, for a
    # network trained on real hands).
    mediapipe_hands_from: Literal["landmarks", "network"] = "landmarks"
    mediapipe: MediaPipeHandsConfig = field(default_factory=MediaPipeHandsConfig)
    mano_fit: ManoFitConfig = field(default_factory=ManoFitConfig)

    @property
    def has_network(self) -> bool:
        """Whether any network model file is configured."""
        return any(getattr(self, name) is not None for name in ("checkpoint", "crop_model", "detector_model"))

    @property
    def needs_network(self) -> bool:
        """Whether these settings need a network: for the hands, or (with the MediaPipe front-end) for an object."""
        return self.hand_frontend == "network" or self.object_name is not None \
            or self.mediapipe_hands_from == "network"

    def validate(self) -> None:
        if self.hand_frontend not in HAND_FRONTENDS:
            raise ConfigError(f"hand_frontend: expected one of {list(HAND_FRONTENDS)}, got {self.hand_frontend!r}")
        if self.hand_frontend == "mediapipe":
            self.mediapipe.validate()
            self.mano_fit.validate()
        if self.mediapipe_hands_from not in ("landmarks", "network"):
            raise ConfigError(f"mediapipe_hands_from: expected landmarks or network, got {self.mediapipe_hands_from!r}")
        if not self.hand_sides:
            raise ConfigError("hand_sides: list at least one of 'right', 'left'")
        if len(set(self.hand_sides)) != len(self.hand_sides):
            raise ConfigError(f"hand_sides: each side at most once, got {self.hand_sides}")
        if self.crop_box_expansion is not None and self.crop_box_expansion < 1.0:
            raise ConfigError(f"crop_box_expansion must be >= 1, got {self.crop_box_expansion}")
        if self.object_name == "":
            raise ConfigError("object_name: give an object library name, or null to track hands only")
        if self.engine.model_path is not None:
            raise ConfigError("engine.model_path is not used by the estimator; set crop_model and detector_model")

    def check_model_files(self) -> None:
        """The model settings ``engine.kind`` needs are set (checked when the engines are built)."""
        if self.engine.kind == "torch":
            if self.checkpoint is None:
                raise ConfigError("engine.kind torch runs a training checkpoint: set checkpoint")
            if self.crop_model is not None or self.detector_model is not None:
                raise ConfigError("crop_model/detector_model are ONNX files for engine.kind onnxruntime or "
                                  "tensorrt; engine.kind torch runs checkpoint")
        else:
            missing = [name for name in ("crop_model", "detector_model") if getattr(self, name) is None]
            if missing:
                raise ConfigError(f"engine.kind {self.engine.kind} needs {missing}: the .onnx files written by "
                                  "hoi-perception export (<model>_crop.onnx, <model>_detector.onnx)")
            if self.checkpoint is not None:
                raise ConfigError(f"checkpoint is for engine.kind torch; engine.kind {self.engine.kind} runs "
                                  "crop_model and detector_model")


def load_estimator_config(source: str | Path | dict[str, Any] | None = DEFAULT_PERCEPTION_CONFIG,
                          overrides: Iterable[str] = ()) -> EstimatorConfig:
    """The ``estimator:`` section of a perception YAML (default: the shipped ``perception.yaml``).

    ``source`` may also be a dict holding that section's content, or None for the
    defaults. ``overrides`` are ``key=value`` strings relative to the section, e.g.
    ``engine.kind=torch`` or ``tracking.redetect_interval=10``.
    """
    if source is None:
        data: dict[str, Any] = {}
        where = "EstimatorConfig:"
    elif isinstance(source, dict):
        data = dict(source)
        where = "EstimatorConfig:"
    else:
        path = resolve_config_path(source)
        document = read_yaml(path)
        if ESTIMATOR_SECTION not in document:
            raise ConfigError(f"{path}: no '{ESTIMATOR_SECTION}:' section (found {sorted(document)})")
        data = document[ESTIMATOR_SECTION] or {}
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: '{ESTIMATOR_SECTION}' must be a mapping, got {type(data).__name__}")
        where = f"{path}: {ESTIMATOR_SECTION}"
    overrides = list(overrides)
    check_override_keys(EstimatorConfig, overrides)
    data = apply_overrides(data, overrides)
    return from_dict(EstimatorConfig, data, where)
