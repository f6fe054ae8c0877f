"""Which side a detected hand is, asked of the crop network instead of the detector.

The crop network models right hands: a left hand's crop is mirrored before it, so every
hand it was trained on looks like a right hand. Its own joint confidence therefore says
which side a hand is: the crop of a right hand as it is, or of a left hand mirrored,
looks like its training data, and the other way round does not. The detector decides the
side from a few cells of a downscaled frame, and a detector whose backbone was trained
on those mirrored crops has little to tell the sides apart with.

:func:`vote_hand_sides` runs both crops of every detected hand in one batch;
:func:`with_voted_sides` puts the detections under the sides the network chose. It runs
when the detector runs (new tracks), not on tracked frames.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from hoi_perception.models.detection_head import Detection, FrameDetections
from hoi_perception.pipeline.crops import crop_geometry, extract_crop, network_images

# Runs the crop network: {"crop", "hand_box", "object_box"} -> outputs with "hand_joint_confidence" (N, 21).
CropRunner = Callable[[Mapping[str, np.ndarray]], Mapping[str, np.ndarray]]


def network_crop_runner(network: torch.nn.Module, device: torch.device | str = "cpu") -> CropRunner:
    """A :data:`CropRunner` over a PyTorch HOINet (the offline tools'; the runtime runs its engines)."""

    def run(inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        tensors = [torch.from_numpy(np.ascontiguousarray(inputs[name])).to(device)
                   for name in ("crop", "hand_box", "object_box")]
        with torch.inference_mode():
            output = network(*tensors)
        return {"hand_joint_confidence": output.hand.joint_confidence.float().cpu().numpy()}

    return run


@dataclass(frozen=True)
class SideVote:
    """The crop network's mean joint confidence for one hand taken as a right hand (its crop as
    it is) and as a left hand (mirrored)."""

    right_confidence: float
    left_confidence: float

    @property
    def side(self) -> str:
        return "right" if self.right_confidence >= self.left_confidence else "left"

    def confidence(self, side: str) -> float:
        return self.right_confidence if side == "right" else self.left_confidence


def vote_hand_sides(image: np.ndarray, hand_boxes: Sequence[np.ndarray], object_box: np.ndarray | None,
                    run: CropRunner, crop_size: int, box_expansion: float) -> list[SideVote]:
    """One :class:`SideVote` per hand box (full-image pixels), from one batch of 2 crops per hand."""
    if not hand_boxes:
        return []
    width = image.shape[1]
    geometries = [crop_geometry(box, box if object_box is None else object_box, width, crop_size, mirrored,
                                box_expansion)
                  for box in hand_boxes for mirrored in (False, True)]
    outputs = run({"crop": network_images([extract_crop(image, g) for g in geometries]),
                   "hand_box": np.stack([g.hand_box for g in geometries]).astype(np.float32),
                   "object_box": np.stack([g.object_box for g in geometries]).astype(np.float32)})
    confidence = np.asarray(outputs["hand_joint_confidence"], dtype=np.float64)
    if confidence.shape[0] != len(geometries):
        raise ValueError(f"hand_joint_confidence: expected {len(geometries)} rows (2 crops per hand), got "
                         f"{confidence.shape}")
    means = confidence.reshape(len(hand_boxes), 2, -1).mean(-1)
    return [SideVote(float(right), float(left)) for right, left in means]


def with_voted_sides(detections: FrameDetections, image: np.ndarray, run: CropRunner, crop_size: int,
                     box_expansion: float) -> FrameDetections:
    """``detections`` with each hand under the side the crop network chose. Two hands take the
    pair of different sides the network is the more confident in together."""
    hands = [d for d in (detections.right_hand, detections.left_hand) if d is not None]
    if not hands:
        return detections
    object_box = None if detections.object is None else detections.object.box
    votes = vote_hand_sides(image, [d.box for d in hands], object_box, run, crop_size, box_expansion)
    if len(hands) == 1:
        placed = {votes[0].side: hands[0]}
    else:
        as_is = votes[0].right_confidence + votes[1].left_confidence
        swapped = votes[0].left_confidence + votes[1].right_confidence
        placed = ({"right": hands[0], "left": hands[1]} if as_is >= swapped
                  else {"right": hands[1], "left": hands[0]})

    def labelled(detection: Detection | None, side: str) -> Detection | None:
        return None if detection is None else Detection(f"{side}_hand", detection.box, detection.score)

    return FrameDetections(right_hand=labelled(placed.get("right"), "right"),
                           left_hand=labelled(placed.get("left"), "left"), object=detections.object)
