"""Temporal filtering of per-track hand and object estimates.

The gates come from Semi-Hand-Object's pseudo-label constraints (section 5.1), the
smoothing from the One Euro filter, with rotations filtered on SO(3). Settings load
from config/filter.yaml::

    config = load_filter_config()                  # shipped defaults
    hand_filter = HandTrackFilter(config.hand)      # one per hand track
    object_filter = ObjectTrackFilter(config.object)  # one per object track
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hoi_perception.config import load_config
from hoi_perception.tracking.hand_filter import (
    FilteredHand,
    FilterState,
    FrameStatus,
    HandFilterConfig,
    HandFrame,
    HandTrackFilter,
    RejectionReason,
)
from hoi_perception.tracking.object_filter import (
    FilteredObject,
    ObjectFilterConfig,
    ObjectFilterState,
    ObjectFrame,
    ObjectTrackFilter,
)
from hoi_perception.tracking.one_euro import OneEuroConfig, OneEuroFilter
from hoi_perception.tracking.rotation_filter import SE3OneEuroFilter, SO3OneEuroFilter

DEFAULT_FILTER_CONFIG = "filter.yaml"


@dataclass
class FilterConfig:
    """The temporal filter's settings: one section per kind of track."""

    hand: HandFilterConfig = field(default_factory=HandFilterConfig)
    object: ObjectFilterConfig = field(default_factory=ObjectFilterConfig)


def load_filter_config(source: str | Path | dict[str, Any] | None = DEFAULT_FILTER_CONFIG,
                       overrides: Iterable[str] = ()) -> FilterConfig:
    """Load FilterConfig from a YAML file (default: the shipped config/filter.yaml), a dict, or None for defaults."""
    return load_config(FilterConfig, source, overrides)


__all__ = [
    "DEFAULT_FILTER_CONFIG", "FilterConfig", "FilterState", "FilteredHand", "FilteredObject", "FrameStatus",
    "HandFilterConfig", "HandFrame", "HandTrackFilter", "ObjectFilterConfig", "ObjectFilterState", "ObjectFrame",
    "ObjectTrackFilter", "OneEuroConfig", "OneEuroFilter", "RejectionReason", "SE3OneEuroFilter",
    "SO3OneEuroFilter", "load_filter_config",
]
