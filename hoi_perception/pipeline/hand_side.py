"""Which side a detected hand is, asked of the crop network instead of the detector.

The crop network models right hands: a left hand's crop is mirrored before it, so every
hand it was trained on looks like a right hand. The crop of a right hand as it is, or of a
left hand mirrored, looks like its training data, and the other way round does not. A
network with the side head (``hand_head.side_head``) was trained to say exactly that
(``hand_side_logit``); without it, its mean joint confidence says it more weakly, as a
mirrored hand seen from the other side projects to nearly the same joints. The detector
decides the side from a few cells of a downscaled frame, which show too little of the
hand to tell.

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
from hoi_perception.models.network import SIDE_OUTPUT_NAME
from hoi_perception.pipeline.crops import crop_geometry, extract_crop, network_images

# Runs the crop network: {"crop", "hand_box", "object_box"} -> outputs with "hand_joint_confidence" (N, 21),
# and "hand_side_logit" (N,) when the network has the side head.
CropRunner = Callable[[Mapping[str, np.ndarray]], Mapping[str, np.ndarray]]


def network_crop_runner(network: torch.nn.Module, device: torch.device | str = "cpu") -> CropRunner:
    """A :data:`CropRunner` over a PyTorch HOINet (the offline tools'; the runtime runs its engines)."""

    def run(inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        tensors = [torch.from_numpy(np.ascontiguousarray(inputs[name])).to(device)
                   for name in ("crop", "hand_box", "object_box")]
        with torch.inference_mode():
            output = network(*tensors)
        outputs = {"hand_joint_confidence": output.hand.joint_confidence.float().cpu().numpy()}
        if output.hand.side_logit is not None:
            outputs[SIDE_OUTPUT_NAME] = output.hand.side_logit.float().cpu().numpy()
        return outputs

    return run


@dataclass(frozen=True)
class SideVote:
    """How much the crop network believes one hand is a right hand (its crop as it is) and a
    left hand (mirrored), in [0, 1]: the side head's probability, else the mean joint confidence."""

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
    name = SIDE_OUTPUT_NAME if SIDE_OUTPUT_NAME in outputs else "hand_joint_confidence"
    scores = np.asarray(outputs[name], dtype=np.float64)
    if scores.shape[0] != len(geometries):
        raise ValueError(f"{name}: expected {len(geometries)} rows (2 crops per hand), got {scores.shape}")
    if name == SIDE_OUTPUT_NAME:
        scores = 1.0 / (1.0 + np.exp(-scores.reshape(-1, 1)))
    means = scores.reshape(len(hand_boxes), 2, -1).mean(-1)
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
