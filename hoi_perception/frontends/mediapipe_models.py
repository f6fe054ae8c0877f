"""MediaPipe Hands' two model files: where they live, how they are installed, how they are checked.

The files ship inside the ``mediapipe==0.10.21`` wheel on PyPI (Apache-2.0; later versions
carry none). ``hoi-perception install-mediapipe-models`` downloads that wheel once at install
time (``pip download --no-deps``: none of mediapipe's own pins enter the environment), takes
the two files out of it, checks their pinned sha256 and writes them atomically to the model
folder. The runtime never downloads: it only finds and checks the files, and names the
install command when they are missing or differ.

``hoi-perception convert-mediapipe-models`` adds ONNX copies for the ``onnxruntime`` and
``tensorrt`` engines (``estimator.mediapipe.engine``): tf2onnx, run in an interpreter that has
it and TensorFlow, converts each file, and a copy is kept only if ONNX Runtime gives LiteRT's
outputs on random images (recorded with both hashes in ``onnx_conversion.json``).

Model folder, first that is set: the ``--dest``/config value, ``$HOI_MEDIAPIPE_DIR``, else
``$XDG_DATA_HOME/hoi_perception/mediapipe`` (``~/.local/share/hoi_perception/mediapipe``).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from hoi_perception.atomic import atomic_write_bytes, atomic_write_json

MEDIAPIPE_VERSION = "0.10.21"
MEDIAPIPE_DIR_ENV = "HOI_MEDIAPIPE_DIR"
INSTALL_COMMAND = "hoi-perception install-mediapipe-models"


@dataclass(frozen=True)
class PinnedModel:
    """One model file: its name in the model folder, its path inside the wheel, its sha256."""

    name: str
    wheel_path: str
    sha256: str


PALM_DETECTOR = PinnedModel(
    "palm_detection_full.tflite", "mediapipe/modules/palm_detection/palm_detection_full.tflite",
    "1b14e9422c6ad006cde6581a46c8b90dd573c07ab7f3934b5589e7cea3f89a54")
HAND_LANDMARKS = PinnedModel(
    "hand_landmark_full.tflite", "mediapipe/modules/hand_landmark/hand_landmark_full.tflite",
    "11c272b891e1a99ab034208e23937a8008388cf11ed2a9d776ed3d01d0ba00e3")
PINNED_MODELS: tuple[PinnedModel, ...] = (PALM_DETECTOR, HAND_LANDMARKS)

# The model files are the same in every platform's wheel; ask pip for one fixed wheel so the
# step works on any machine (aarch64 robots, other Python versions) without building anything.
PIP_PLATFORM_ARGS = ("--platform", "manylinux_2_28_x86_64", "--python-version", "3.11", "--implementation", "cp",
                     "--abi", "cp311")


class MediaPipeModelError(FileNotFoundError):
    """A MediaPipe model file is missing or is not the pinned file."""


class WheelDownloadError(ValueError):
    """``pip download`` could not fetch the pinned mediapipe wheel."""


def default_model_dir() -> Path:
    """``$HOI_MEDIAPIPE_DIR``, else ``$XDG_DATA_HOME/hoi_perception/mediapipe`` (``~/.local/share/...``)."""
    override = os.environ.get(MEDIAPIPE_DIR_ENV)
    if override:
        return Path(override).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "hoi_perception" / "mediapipe"


def resolve_model_dir(model_dir: str | Path | None) -> Path:
    return Path(model_dir).expanduser() if model_dir is not None else default_model_dir()


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def model_path(model: PinnedModel, model_dir: str | Path | None = None) -> Path:
    """The checked path of ``model`` in the model folder; a clear error naming the install step otherwise."""
    folder = resolve_model_dir(model_dir)
    path = folder / model.name
    if not path.is_file():
        raise MediaPipeModelError(f"MediaPipe model '{path}' not found: run `{INSTALL_COMMAND}"
                                  f"{'' if model_dir is None else f' --dest {folder}'}` once (it takes the file "
                                  f"out of the mediapipe=={MEDIAPIPE_VERSION} wheel)")
    digest = sha256_of(path.read_bytes())
    if digest != model.sha256:
        raise MediaPipeModelError(f"MediaPipe model '{path}': sha256 {digest[:12]}... is not the pinned "
                                  f"{model.sha256[:12]}... (mediapipe=={MEDIAPIPE_VERSION}); rerun `{INSTALL_COMMAND}`")
    return path


def download_wheel(folder: Path) -> Path:
    """``pip download`` the pinned mediapipe wheel (no dependencies) into ``folder``; its path."""
    command = [sys.executable, "-m", "pip", "download", f"mediapipe=={MEDIAPIPE_VERSION}", "--no-deps",
               "--only-binary=:all:", *PIP_PLATFORM_ARGS, "-d", str(folder)]
    completed = subprocess.run(command, capture_output=True, text=True)
    if completed.returncode != 0:
        tail = (completed.stderr or completed.stdout).strip().splitlines()[-3:]
        raise WheelDownloadError(f"pip download mediapipe=={MEDIAPIPE_VERSION} failed (exit {completed.returncode}): "
                           + " | ".join(tail) + "; download the wheel elsewhere and pass --wheel FILE")
    wheels = sorted(folder.glob(f"mediapipe-{MEDIAPIPE_VERSION}-*.whl"))
    if not wheels:
        raise WheelDownloadError(f"pip download wrote no mediapipe-{MEDIAPIPE_VERSION}-*.whl into {folder}")
    return wheels[0]


def extract_models(wheel: str | Path, dest: str | Path) -> dict[str, str]:
    """Take the pinned model files out of ``wheel`` (a zip) into ``dest``; name -> 'installed'/'present'.

    Every file is checked against its pinned sha256 before anything is written, so a wrong
    wheel leaves the folder as it was. A file already in ``dest`` with the pinned hash is
    left alone; one with another hash is replaced.
    """
    wheel = Path(wheel).expanduser()
    if not wheel.is_file():
        raise FileNotFoundError(f"--wheel: '{wheel}' not found (expected the mediapipe=={MEDIAPIPE_VERSION} .whl)")
    try:
        archive = zipfile.ZipFile(wheel)
    except zipfile.BadZipFile:
        raise ValueError(f"--wheel: '{wheel}' is not a wheel (zip) file") from None
    contents: dict[str, bytes] = {}
    with archive:
        names = set(archive.namelist())
        for model in PINNED_MODELS:
            if model.wheel_path not in names:
                raise ValueError(f"--wheel: '{wheel}' has no {model.wheel_path} (expected the "
                                 f"mediapipe=={MEDIAPIPE_VERSION} wheel)")
            data = archive.read(model.wheel_path)
            digest = sha256_of(data)
            if digest != model.sha256:
                raise ValueError(f"--wheel: '{wheel}': {model.wheel_path} has sha256 {digest[:12]}..., not the "
                                 f"pinned {model.sha256[:12]}... (mediapipe=={MEDIAPIPE_VERSION})")
            contents[model.name] = data
    dest = Path(dest).expanduser()
    status = {}
    for name, data in contents.items():
        target = dest / name
        if target.is_file() and sha256_of(target.read_bytes()) == sha256_of(data):
            status[name] = "present"
            continue
        atomic_write_bytes(target, data)
        status[name] = "installed"
    return status


def install_models(wheel: str | Path | None, dest: str | Path | None) -> tuple[Path, dict[str, str]]:
    """The install step: the given wheel, or one ``pip download`` fetches into a temporary folder."""
    folder = resolve_model_dir(dest)
    if wheel is not None:
        return folder, extract_models(wheel, folder)
    with tempfile.TemporaryDirectory(prefix="hoi_mediapipe_") as tmp:
        return folder, extract_models(download_wheel(Path(tmp)), folder)


# ----------------------------------------------------------------------------- ONNX copies (for TensorRT)

CONVERT_COMMAND = "hoi-perception convert-mediapipe-models"
ONNX_MANIFEST = "onnx_conversion.json"
# The converted graph must give LiteRT's outputs to this fraction of each output's largest value.
ONNX_TOLERANCE = 1e-4
VERIFY_INPUTS = 4


def onnx_name(model: PinnedModel) -> str:
    return model.name.removesuffix(".tflite") + ".onnx"


def conversion_error(tflite: Path, onnx: Path, inputs: int = VERIFY_INPUTS, seed: int = 0) -> float:
    """Largest difference between LiteRT on ``tflite`` and ONNX Runtime on ``onnx``, over ``inputs``
    random images and every output, as a fraction of that output's largest LiteRT value."""
    import numpy as np

    from hoi_perception.engines.litert_engine import LiteRTEngine
    from hoi_perception.engines.onnx_engine import OnnxRuntimeEngine

    reference, candidate = LiteRTEngine(tflite), OnnxRuntimeEngine(onnx)
    spec = reference.inputs[0]
    if [(s.name, s.shape) for s in candidate.inputs] != [(spec.name, spec.shape)] or \
            [s.name for s in candidate.outputs] != [s.name for s in reference.outputs]:
        raise ValueError(f"'{onnx}': inputs {[(s.name, s.shape) for s in candidate.inputs]} and outputs "
                         f"{[s.name for s in candidate.outputs]} are not those of '{tflite}' "
                         f"({[(spec.name, spec.shape)]}, {[s.name for s in reference.outputs]})")
    if not all(isinstance(d, int) for d in spec.shape):
        raise ValueError(f"'{tflite}': expected a fixed input shape, got {spec.shape}")
    shape = tuple(int(d) for d in spec.shape)
    rng = np.random.default_rng(seed)
    worst = 0.0
    for _ in range(inputs):
        image = rng.random(shape, dtype=np.float32)
        expected, actual = reference.run({spec.name: image}), candidate.run({spec.name: image})
        for name, value in expected.items():
            scale = max(float(np.abs(value).max()), 1e-12)
            worst = max(worst, float(np.abs(actual[name] - value).max()) / scale)
    return worst


def convert_models(model_dir: str | Path | None, converter_python: str) -> tuple[Path, dict[str, float]]:
    """ONNX copies of both models beside them, converted by tf2onnx in ``converter_python`` (an
    interpreter with ``tf2onnx`` and TensorFlow, e.g. a separate virtual environment) and kept
    only if they give LiteRT's outputs (:data:`ONNX_TOLERANCE`); ONNX file name -> relative error."""
    folder = resolve_model_dir(model_dir)
    errors: dict[str, float] = {}
    converted: dict[str, bytes] = {}
    manifest: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="hoi_mediapipe_onnx_") as tmp:
        for model in PINNED_MODELS:
            source, name = model_path(model, model_dir), onnx_name(model)
            target = Path(tmp) / name
            command = [converter_python, "-m", "tf2onnx.convert", "--tflite", str(source), "--output", str(target),
                       "--opset", "17"]
            completed = subprocess.run(command, capture_output=True, text=True)
            if completed.returncode != 0 or not target.is_file():
                tail = (completed.stderr or completed.stdout).strip().splitlines()[-3:]
                raise RuntimeError(f"tf2onnx could not convert '{source}' with {converter_python} (exit "
                                   f"{completed.returncode}): " + " | ".join(tail) + "; --converter-python must "
                                   "name a Python with tf2onnx and tensorflow installed")
            errors[name] = conversion_error(source, target)
            if errors[name] > ONNX_TOLERANCE:
                raise ValueError(f"the ONNX conversion of '{source}' differs from LiteRT by {errors[name]:.2e} of "
                                 f"the output range (at most {ONNX_TOLERANCE:.0e}); nothing was written")
            converted[name] = target.read_bytes()
            manifest[name] = {"source_sha256": model.sha256, "onnx_sha256": sha256_of(converted[name]),
                              "relative_error": errors[name]}
    for name, data in converted.items():
        atomic_write_bytes(folder / name, data)
    atomic_write_json(folder / ONNX_MANIFEST, manifest)
    return folder, errors


def onnx_model_path(model: PinnedModel, model_dir: str | Path | None = None) -> Path:
    """The checked ONNX copy of ``model`` (written by :func:`convert_models` from the pinned file)."""
    folder = resolve_model_dir(model_dir)
    path = folder / onnx_name(model)
    manifest_path = folder / ONNX_MANIFEST
    if not path.is_file() or not manifest_path.is_file():
        raise MediaPipeModelError(f"MediaPipe model '{path}' not found: the onnxruntime and tensorrt engines run "
                                  f"ONNX copies of the .tflite files; make them once with `{CONVERT_COMMAND} "
                                  "--converter-python PYTHON` (a Python with tf2onnx and tensorflow)")
    entry = json.loads(manifest_path.read_text()).get(path.name, {})
    if entry.get("source_sha256") != model.sha256 or entry.get("onnx_sha256") != sha256_of(path.read_bytes()):
        raise MediaPipeModelError(f"MediaPipe model '{path}' is not the checked conversion of the pinned "
                                  f"{model.name} recorded in {manifest_path}; rerun `{CONVERT_COMMAND}`")
    return path
