"""Write (and read back) an HO-3D CodaLab submission.

The HO-3D challenge (v2 and v3 share the format; see ``pred.py`` and ``eval.py`` in
the dataset's official scripts) expects a zip archive holding ``pred.json`` at its
root (``zip -j pred.zip pred.json``). The JSON is a list of two lists with one entry
per evaluation frame, in the order of the dataset's ``evaluation.txt``:

* ``[0]`` - 21 joints x 3 in HO-3D joint order (MANO's 16 joints, then the thumb,
  index, middle, ring and pinky tips);
* ``[1]`` - 778 MANO vertices x 3.

Coordinates are metres in HO-3D's **OpenGL** camera frame (x right, y up, hand at
negative z). This package works in OpenCV coordinates (y down, z forward), so the
writer applies ``diag(1, -1, -1)``. As in the official ``pred.py``, a frame whose
joints or vertices would all lie at positive z (i.e. behind an OpenGL camera) is
rejected, because that means the input was not OpenCV camera coordinates.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hoi_perception.atomic import atomic_open
from hoi_perception.geometry.metrics import NUM_HAND_JOINTS, NUM_MANO_VERTICES
from hoi_training.evaluation.report import Hand3D

PREDICTION_FILE_NAME = "pred.json"
# Maps OpenCV camera coordinates to OpenGL ones and back (it is its own inverse).
OPENCV_TO_OPENGL = np.diag([1.0, -1.0, -1.0])
# Number of frames in the official evaluation split, per dataset version (HO-3D ``db_size``).
EVALUATION_SPLIT_SIZES = {"v2": 11524, "v3": 20137}


def opencv_to_opengl(points: np.ndarray) -> np.ndarray:
    """Flip y and z: OpenCV camera coordinates to OpenGL camera coordinates (and vice versa)."""
    return np.asarray(points, dtype=np.float64) @ OPENCV_TO_OPENGL.T


def read_evaluation_list(path: str | Path) -> list[str]:
    """Frame names (``SEQ/frame_id``) from the dataset's ``evaluation.txt``, in submission order."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"evaluation list '{p}' not found (expected HO-3D's evaluation.txt)")
    names = [line.strip() for line in p.read_text().splitlines() if line.strip()]
    if not names:
        raise ValueError(f"evaluation list '{p}' is empty")
    return names


def write_ho3d_submission(out_zip: str | Path, predictions: Mapping[str, Hand3D], evaluation_list: Sequence[str],
                          version: str | None = None, decimals: int = 5) -> Path:
    """Write the challenge archive ``out_zip`` (containing ``pred.json``) atomically; returns its path.

    ``predictions`` maps each evaluation frame name to a :class:`Hand3D` with joints
    (HO-3D order) and vertices in OpenCV camera coordinates, metres. Every frame of
    ``evaluation_list`` needs a prediction with vertices; names not in the list are
    an error too, since they usually mean a key mismatch. ``version`` ("v2"/"v3"),
    when given, checks the list length against the official split size.
    ``decimals`` rounds coordinates (5 = 10 micrometres) to keep the file small.
    """
    if version is not None:
        if version not in EVALUATION_SPLIT_SIZES:
            raise ValueError(f"version: expected one of {sorted(EVALUATION_SPLIT_SIZES)}, got {version!r}")
        if len(evaluation_list) != EVALUATION_SPLIT_SIZES[version]:
            raise ValueError(f"evaluation_list has {len(evaluation_list)} frames; the HO-3D {version} "
                             f"evaluation split has {EVALUATION_SPLIT_SIZES[version]}")
    if len(evaluation_list) == 0:
        raise ValueError("evaluation_list is empty")
    if len(set(evaluation_list)) != len(evaluation_list):
        raise ValueError("evaluation_list contains duplicate frame names")
    if not 0 <= decimals <= 10:
        raise ValueError(f"decimals: expected 0..10, got {decimals}")
    missing = [name for name in evaluation_list if name not in predictions]
    if missing:
        raise ValueError(f"{len(missing)} evaluation frame(s) have no prediction, e.g. {missing[:3]}")
    extra = sorted(set(predictions) - set(evaluation_list))
    if extra:
        raise ValueError(f"{len(extra)} prediction(s) are not evaluation frames, e.g. {extra[:3]}")

    for name in evaluation_list:
        hand = predictions[name]
        if not isinstance(hand, Hand3D):
            raise TypeError(f"prediction for '{name}': expected Hand3D, got {type(hand).__name__}")
        if hand.vertices is None:
            raise ValueError(f"prediction for '{name}': the submission needs the 778 mesh vertices")
        if hand.root_relative:
            raise ValueError(f"prediction for '{name}': the hand is wrist-relative (its translation fit failed); "
                             "the submission needs camera-frame coordinates")
        if np.all(hand.joints[:, 2] < 0) or np.all(hand.vertices[:, 2] < 0):
            raise ValueError(f"prediction for '{name}': the hand would lie behind the OpenGL camera; "
                             "give OpenCV camera coordinates (hand at positive z)")

    def frame_json(points: np.ndarray) -> bytes:
        return json.dumps(np.round(opencv_to_opengl(points), decimals).tolist(), separators=(",", ":")).encode()

    # Streamed frame by frame: a full v3 submission is several hundred MB of JSON.
    out = Path(out_zip)
    with atomic_open(out) as handle, zipfile.ZipFile(handle, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        with archive.open(PREDICTION_FILE_NAME, "w", force_zip64=True) as entry:
            for part, field_name in ((b"[[", "joints"), (b"],[", "vertices")):
                entry.write(part)
                for i, name in enumerate(evaluation_list):
                    if i:
                        entry.write(b",")
                    entry.write(frame_json(getattr(predictions[name], field_name)))
            entry.write(b"]]")
    return out


@dataclass(frozen=True, eq=False)
class HO3DSubmission:
    """Contents of a submission archive, converted back to OpenCV camera coordinates (metres)."""

    joints: np.ndarray  # (F, 21, 3)
    vertices: np.ndarray  # (F, 778, 3)


def read_ho3d_submission(path: str | Path) -> HO3DSubmission:
    """Read a submission archive and check it has the layout the HO-3D evaluation script asserts."""
    p = Path(path)
    with zipfile.ZipFile(p) as archive:
        if PREDICTION_FILE_NAME not in archive.namelist():
            raise ValueError(f"'{p}': no {PREDICTION_FILE_NAME} at the archive root; found {archive.namelist()}")
        data = json.loads(archive.read(PREDICTION_FILE_NAME))
    if not isinstance(data, list) or len(data) != 2 or len(data[0]) != len(data[1]):
        raise ValueError(f"'{p}': expected [joints_list, vertices_list] of equal length")
    joints = np.asarray(data[0], dtype=np.float64)
    vertices = np.asarray(data[1], dtype=np.float64)
    if joints.shape[1:] != (NUM_HAND_JOINTS, 3) or vertices.shape[1:] != (NUM_MANO_VERTICES, 3):
        raise ValueError(f"'{p}': expected (F, {NUM_HAND_JOINTS}, 3) joints and (F, {NUM_MANO_VERTICES}, 3) "
                         f"vertices, got {joints.shape} and {vertices.shape}")
    return HO3DSubmission(joints=opencv_to_opengl(joints), vertices=opencv_to_opengl(vertices))
