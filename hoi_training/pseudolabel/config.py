"""Configuration of a pseudo-labelling job (config/pseudolabel.yaml)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from hoi_perception.config import ConfigError, load_config
from hoi_training.pseudolabel.constraints import ConstraintConfig
from hoi_training.pseudolabel.teacher import TeacherConfig
from hoi_training.pseudolabel.tta import TTAConfig

DEFAULT_PSEUDOLABEL_CONFIG = "pseudolabel.yaml"


@dataclass
class SourceConfig:
    """How unlabelled frames are read (hoi_training.data.frames); the path itself is given per job.

    kind: ``bag`` (ROS 2 bag), ``video`` (a video file), ``something_else`` (Something-Something
        v2 videos with Something-Else hand boxes, the kind of source SHO labelled).
    image_topic / camera_info_topic: the bag's topics; camera_info_topic "" reads no intrinsics.
    max_stamp_difference_s: largest image-to-CameraInfo stamp difference when pairing them in a bag.
    video_stride: decode every n-th frame of a video. Frame ids keep counting every frame, so
        set constraints.frame_step to the same value.
    annotation_files: the Something-Else JSON files (kind something_else).
    """

    kind: Literal["bag", "video", "something_else"] = "bag"
    image_topic: str = "/camera/color/image_raw"
    camera_info_topic: str = "/camera/color/camera_info"
    max_stamp_difference_s: float = 0.005
    video_stride: int = 1
    annotation_files: tuple[str, ...] = ()

    def validate(self) -> None:
        if self.kind == "bag" and not self.image_topic:
            raise ConfigError("source.image_topic: expected a topic name for kind 'bag'")
        if not (self.max_stamp_difference_s >= 0 and math.isfinite(self.max_stamp_difference_s)):
            raise ConfigError(f"source.max_stamp_difference_s: expected >= 0, got {self.max_stamp_difference_s}")
        if self.video_stride < 1:
            raise ConfigError(f"source.video_stride: expected an integer >= 1, got {self.video_stride}")
        if self.kind == "something_else" and not self.annotation_files:
            raise ConfigError("source.annotation_files: kind 'something_else' needs the Something-Else JSON files")


@dataclass
class ShardingConfig:
    """How the job is cut into resumable shards (hoi_training.pseudolabel.shards).

    units_per_shard: work units (sequences or frame ranges) per shard file.
    max_frames_per_unit: sequences longer than this are split into frame ranges; 0 never
        splits. Splitting cuts the temporal constraints and the shape filter at the range
        boundaries, so keep it well above typical sequence lengths.
    wait_for_ranks_s: how long rank 0 waits for the other ranks before leaving the manifest
        to the finalize step.
    """

    units_per_shard: int = 8
    max_frames_per_unit: int = 0
    wait_for_ranks_s: float = 0.0

    def validate(self) -> None:
        if self.units_per_shard < 1:
            raise ConfigError(f"sharding.units_per_shard: expected an integer >= 1, got {self.units_per_shard}")
        if self.max_frames_per_unit < 0:
            raise ConfigError(f"sharding.max_frames_per_unit: expected >= 0, got {self.max_frames_per_unit}")
        if not (self.wait_for_ranks_s >= 0 and math.isfinite(self.wait_for_ranks_s)):
            raise ConfigError(f"sharding.wait_for_ranks_s: expected >= 0, got {self.wait_for_ranks_s}")


@dataclass
class PseudoLabelConfig:
    """Everything a pseudo-labelling job needs besides the model, the source path and the output folder.

    teacher: the real-image teacher (``--teacher mediapipe``) that the ``teacher_2d``
        constraint scores each pseudo-label against; off (``kind: none``) by default.
    batch_size: crops per network call (each crop counts once per TTA copy).
    """

    source: SourceConfig = field(default_factory=SourceConfig)
    tta: TTAConfig = field(default_factory=TTAConfig)
    constraints: ConstraintConfig = field(default_factory=ConstraintConfig)
    sharding: ShardingConfig = field(default_factory=ShardingConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    batch_size: int = 32

    def validate(self) -> None:
        if self.batch_size < 1:
            raise ConfigError(f"batch_size: expected an integer >= 1, got {self.batch_size}")
        self.teacher.validate()
        if self.source.kind == "video" and self.constraints.frame_step != self.source.video_stride:
            raise ConfigError(f"constraints.frame_step ({self.constraints.frame_step}) must equal "
                              f"source.video_stride ({self.source.video_stride}): video frame ids count every frame")


def load_pseudolabel_config(source: str | Path | dict[str, Any] | None = DEFAULT_PSEUDOLABEL_CONFIG,
                            overrides: Iterable[str] = ()) -> PseudoLabelConfig:
    """PseudoLabelConfig from a YAML file (default: the shipped config/pseudolabel.yaml), a dict, or None."""
    return load_config(PseudoLabelConfig, source, overrides)
