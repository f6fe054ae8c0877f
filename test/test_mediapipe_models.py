"""The MediaPipe model install step: a fake wheel with known files stands in for the real one."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import zipfile
from pathlib import Path

import pytest

from hoi_perception.cli import main
from hoi_perception.frontends import mediapipe_models as mm

PALM_BYTES = b"palm detector bytes"
LANDMARK_BYTES = b"landmark model bytes"


@pytest.fixture
def pinned_to_fakes(monkeypatch):
    """Pin the hashes of the fake files instead of the real models'."""
    palm = dataclasses.replace(mm.PALM_DETECTOR, sha256=hashlib.sha256(PALM_BYTES).hexdigest())
    landmarks = dataclasses.replace(mm.HAND_LANDMARKS, sha256=hashlib.sha256(LANDMARK_BYTES).hexdigest())
    monkeypatch.setattr(mm, "PALM_DETECTOR", palm)
    monkeypatch.setattr(mm, "HAND_LANDMARKS", landmarks)
    monkeypatch.setattr(mm, "PINNED_MODELS", (palm, landmarks))
    return palm, landmarks


def fake_wheel(path: Path, palm: bytes = PALM_BYTES, landmarks: bytes = LANDMARK_BYTES) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(mm.PALM_DETECTOR.wheel_path, palm)
        archive.writestr(mm.HAND_LANDMARKS.wheel_path, landmarks)
        archive.writestr("mediapipe/__init__.py", "")
    return path


def test_the_pinned_hashes_are_full_sha256_digests():
    for model in mm.PINNED_MODELS:
        assert len(model.sha256) == 64 and int(model.sha256, 16) >= 0
    assert mm.PALM_DETECTOR.sha256.startswith("1b14e942") and mm.HAND_LANDMARKS.sha256.startswith("11c272b8")


def test_install_from_a_wheel_writes_both_files_and_the_runtime_finds_them(tmp_path, pinned_to_fakes):
    wheel = fake_wheel(tmp_path / "mediapipe-0.10.21-cp311-cp311-manylinux_2_28_x86_64.whl")
    dest = tmp_path / "models"
    assert main(["install-mediapipe-models", "--wheel", str(wheel), "--dest", str(dest)]) == 0
    assert (dest / "palm_detection_full.tflite").read_bytes() == PALM_BYTES
    assert (dest / "hand_landmark_full.tflite").read_bytes() == LANDMARK_BYTES
    assert mm.model_path(mm.PALM_DETECTOR, dest) == dest / "palm_detection_full.tflite"
    assert wheel.is_file()  # the input is left alone
    # A second run finds them in place and rewrites nothing.
    mtime = os.stat(dest / "palm_detection_full.tflite").st_mtime_ns
    assert mm.extract_models(wheel, dest) == {"palm_detection_full.tflite": "present",
                                              "hand_landmark_full.tflite": "present"}
    assert os.stat(dest / "palm_detection_full.tflite").st_mtime_ns == mtime


def test_a_wheel_with_a_wrong_file_is_refused_and_nothing_is_written(tmp_path, pinned_to_fakes):
    wheel = fake_wheel(tmp_path / "m.whl", landmarks=b"tampered")
    dest = tmp_path / "models"
    with pytest.raises(ValueError, match="hand_landmark_full.tflite has sha256 .* not the pinned"):
        mm.extract_models(wheel, dest)
    assert not dest.exists()
    assert main(["install-mediapipe-models", "--wheel", str(wheel), "--dest", str(dest)]) == 2


def test_a_corrupt_installed_file_is_replaced(tmp_path, pinned_to_fakes):
    dest = tmp_path / "models"
    dest.mkdir()
    (dest / "palm_detection_full.tflite").write_bytes(b"truncated")
    status = mm.extract_models(fake_wheel(tmp_path / "m.whl"), dest)
    assert status["palm_detection_full.tflite"] == "installed"
    assert (dest / "palm_detection_full.tflite").read_bytes() == PALM_BYTES


def test_not_a_wheel_and_a_wheel_without_the_models_are_refused(tmp_path, pinned_to_fakes):
    text = tmp_path / "notes.whl"
    text.write_text("not a zip")
    with pytest.raises(ValueError, match="not a wheel"):
        mm.extract_models(text, tmp_path / "models")
    empty = tmp_path / "empty.whl"
    with zipfile.ZipFile(empty, "w") as archive:
        archive.writestr("mediapipe/__init__.py", "")
    with pytest.raises(ValueError, match="has no mediapipe/modules/palm_detection/palm_detection_full.tflite"):
        mm.extract_models(empty, tmp_path / "models")
    with pytest.raises(FileNotFoundError, match="not found"):
        mm.extract_models(tmp_path / "absent.whl", tmp_path / "models")


def test_missing_or_mismatched_files_name_the_install_command(tmp_path, pinned_to_fakes):
    with pytest.raises(mm.MediaPipeModelError, match="install-mediapipe-models"):
        mm.model_path(mm.PALM_DETECTOR, tmp_path)
    (tmp_path / "palm_detection_full.tflite").write_bytes(b"other")
    with pytest.raises(mm.MediaPipeModelError, match="is not the pinned .*rerun `hoi-perception install-mediapipe"):
        mm.model_path(mm.PALM_DETECTOR, tmp_path)


def test_the_model_folder_comes_from_the_argument_the_environment_or_the_user_data_folder(tmp_path, monkeypatch):
    monkeypatch.delenv(mm.MEDIAPIPE_DIR_ENV, raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert mm.resolve_model_dir(None) == tmp_path / "data" / "hoi_perception" / "mediapipe"
    monkeypatch.setenv(mm.MEDIAPIPE_DIR_ENV, str(tmp_path / "env"))
    assert mm.resolve_model_dir(None) == tmp_path / "env"
    assert mm.resolve_model_dir(tmp_path / "given") == tmp_path / "given"


def test_without_a_wheel_pip_downloads_the_pinned_version_without_dependencies(tmp_path, pinned_to_fakes,
                                                                                monkeypatch):
    calls = []

    def fake_run(command, capture_output, text):
        calls.append(command)
        folder = Path(command[command.index("-d") + 1])
        fake_wheel(folder / "mediapipe-0.10.21-cp311-cp311-manylinux_2_28_x86_64.whl")

        class Done:
            returncode, stdout, stderr = 0, "", ""

        return Done()

    monkeypatch.setattr(mm.subprocess, "run", fake_run)
    folder, status = mm.install_models(None, tmp_path / "models")
    assert status == {"palm_detection_full.tflite": "installed", "hand_landmark_full.tflite": "installed"}
    (command,) = calls
    assert command[1:4] == ["-m", "pip", "download"]
    assert "mediapipe==0.10.21" in command and "--no-deps" in command and "--only-binary=:all:" in command


def test_a_failed_download_says_how_to_install_by_hand(tmp_path, monkeypatch):
    class Failed:
        returncode, stdout, stderr = 1, "", "ERROR: No matching distribution found for mediapipe==0.10.21"

    monkeypatch.setattr(mm.subprocess, "run", lambda command, capture_output, text: Failed())
    with pytest.raises(mm.WheelDownloadError, match="No matching distribution.*pass --wheel FILE"):
        mm.install_models(None, tmp_path / "models")
    assert not (tmp_path / "models").exists()


# ----------------------------------------------------------------------------- ONNX copies


def fake_converter(tmp_path: Path, exit_code: int = 0) -> str:
    """A stand-in for `python -m tf2onnx.convert --tflite SRC --output DST`: writes the source's bytes
    reversed to DST (so each copy differs from its source and from the other copy)."""
    script = tmp_path / "fake_python"
    script.write_text("#!/bin/sh\nwhile [ $# -gt 0 ]; do case $1 in --tflite) src=$2;; --output) dst=$2;; esac; "
                      f"shift; done\n[ {exit_code} -eq 0 ] || {{ echo 'No module named tf2onnx' >&2; exit "
                      f"{exit_code}; }}\nrev < \"$src\" > \"$dst\"\n")
    script.chmod(0o755)
    return str(script)


def installed_fakes(tmp_path: Path) -> Path:
    dest = tmp_path / "models"
    dest.mkdir()
    (dest / "palm_detection_full.tflite").write_bytes(PALM_BYTES)
    (dest / "hand_landmark_full.tflite").write_bytes(LANDMARK_BYTES)
    return dest


def test_convert_keeps_copies_that_match_litert_and_records_them(tmp_path, pinned_to_fakes, monkeypatch):
    dest = installed_fakes(tmp_path)
    monkeypatch.setattr(mm, "conversion_error", lambda tflite, onnx: 3e-6)
    assert main(["convert-mediapipe-models", "--converter-python", fake_converter(tmp_path),
                 "--dir", str(dest)]) == 0
    assert (dest / "palm_detection_full.onnx").read_bytes() == PALM_BYTES[::-1]
    assert mm.onnx_model_path(mm.HAND_LANDMARKS, dest) == dest / "hand_landmark_full.onnx"
    (dest / "hand_landmark_full.onnx").write_bytes(b"edited")
    with pytest.raises(mm.MediaPipeModelError, match="not the checked conversion"):
        mm.onnx_model_path(mm.HAND_LANDMARKS, dest)


def test_convert_refuses_an_inexact_copy_or_a_failed_converter_and_writes_nothing(tmp_path, pinned_to_fakes,
                                                                                 monkeypatch):
    dest = installed_fakes(tmp_path)
    monkeypatch.setattr(mm, "conversion_error", lambda tflite, onnx: 2e-3)
    with pytest.raises(ValueError, match="differs from LiteRT by 2.00e-03"):
        mm.convert_models(dest, fake_converter(tmp_path))
    with pytest.raises(RuntimeError, match="No module named tf2onnx.*--converter-python"):
        mm.convert_models(dest, fake_converter(tmp_path, exit_code=1))
    assert sorted(p.name for p in dest.iterdir()) == ["hand_landmark_full.tflite", "palm_detection_full.tflite"]
    with pytest.raises(mm.MediaPipeModelError, match="convert-mediapipe-models --converter-python"):
        mm.onnx_model_path(mm.PALM_DETECTOR, dest)
