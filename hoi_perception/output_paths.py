"""One rule for every command that writes: never replace an input or something that is not our output.

Each command names its output's *kind* (a rosbag2 folder, an MP4 video, a released
checkpoint...) and its inputs; :func:`check_output` then refuses, with one line:

* an output path that is one of the inputs, holds an input (a folder above it) or lies
  inside an input folder;
* an existing output without ``--overwrite``;
* an existing output, even with ``--overwrite``, that is not of the command's kind
  (a dataset folder, a notes folder, a training checkpoint): ``--overwrite`` replaces
  an earlier result of the same command, nothing else.

The writes themselves stay atomic (:mod:`hoi_perception.atomic`, :func:`hoi_perception.bag_io.open_bag_writer`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

ROSBAG_FILE_SUFFIXES = (".mcap", ".db3", ".db3-shm", ".db3-wal", ".zstd")


class UnsafeOutputError(FileExistsError):
    """The output path would replace an input or something that is not this command's output."""


@dataclass(frozen=True)
class OutputKind:
    """What a command writes: a name for messages and a test that an existing path is one of those."""

    name: str
    is_kind: Callable[[Path], bool]


def is_rosbag_folder(path: Path) -> bool:
    """A rosbag2 folder: metadata.yaml plus storage files, nothing else (a dataset or notes folder is not)."""
    if not path.is_dir() or not (path / "metadata.yaml").is_file():
        return False
    return all(child.is_file() and (child.name == "metadata.yaml" or child.name.endswith(ROSBAG_FILE_SUFFIXES))
               for child in path.iterdir())


def is_suffixed_file(*suffixes: str) -> Callable[[Path], bool]:
    return lambda path: path.is_file() and path.suffix.lower() in suffixes


ROSBAG = OutputKind("rosbag2 folder", is_rosbag_folder)
MP4_VIDEO = OutputKind("MP4 video", is_suffixed_file(".mp4"))


def _resolved(path: str | Path) -> Path:
    return Path(path).expanduser().resolve()


def _is_within(inner: Path, outer: Path) -> bool:
    return inner == outer or outer in inner.parents


def check_output(out: str | Path, *, kind: OutputKind, inputs: Iterable[str | Path] = (), overwrite: bool = False,
                 option: str = "output") -> Path:
    """``out`` as a Path when writing it is safe (module docstring); else raise :class:`UnsafeOutputError`."""
    path = Path(out).expanduser()
    target = _resolved(path)
    for given in inputs:
        source = _resolved(given)
        if target == source:
            raise UnsafeOutputError(f"{option} '{path}' is the input '{given}'; choose another path (inputs are "
                                    "never overwritten)")
        if _is_within(source, target):
            raise UnsafeOutputError(f"{option} '{path}' holds the input '{given}'; choose another path (inputs are "
                                    "never overwritten)")
        if source.is_dir() and _is_within(target, source):
            raise UnsafeOutputError(f"{option} '{path}' lies inside the input folder '{given}'; choose a path "
                                    "outside it")
    if path.exists() or path.is_symlink():
        if not overwrite:
            raise UnsafeOutputError(f"{option} '{path}' already exists; pass --overwrite to replace it, or choose "
                                    "another path")
        if not kind.is_kind(path):
            raise UnsafeOutputError(f"{option} '{path}' exists and is not a {kind.name}; refusing to replace it "
                                    "even with --overwrite")
    return path
