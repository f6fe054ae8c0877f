"""Sharded, resumable pseudo-label jobs that any number of ranks can share without talking.

A job turns a list of work units (sequences, or frame ranges of long sequences) into
pseudo-label files. The units are sorted by key and cut into fixed-size shards, so
the same inputs always give the same shards. Rank r of a world of size w processes
the shards whose index i satisfies i % w == r; ranks come from torchrun's
environment (RANK, WORLD_SIZE, LOCAL_RANK) or from arguments, and no process group
is needed: ranks coordinate only through files.

Layout of the output folder::

    plan.json                  the job: identity (config, source, checkpoint hash) and shards
    shards/shard_00012.npz     one shard's arrays, units concatenated (written atomically)
    shards/shard_00012.json    its sidecar: status, units, rows, counts, sha256 of the .npz
    manifest.json              merged sidecars, written once every shard has settled

A shard is finished when its sidecar says ``done``, carries the shard's fingerprint
(a hash of the job identity and the shard's unit keys) and the .npz on disk still
hashes to the recorded sha256. The .npz is written before the sidecar, each
atomically, so a job killed at any point leaves either a finished shard or one that
a rerun redoes, and a rerun produces files byte-identical to an uninterrupted run:
the .npz is written with fixed zip timestamps and nothing time-dependent goes into
sidecars or the manifest. An exception raised while processing a unit fails its
shard (the reason and traceback go into the sidecar) and the job carries on; a rerun
retries failed shards. KeyboardInterrupt and other BaseExceptions stop the job.

Rank 0 writes the manifest when, after its own shards, every shard has settled (done
or failed), optionally polling for the other ranks for ``wait_for_ranks_s`` seconds.
Otherwise :func:`finalize_job` merges the sidecars later.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import time
import traceback
import zipfile
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from hoi_perception.atomic import atomic_write_bytes, atomic_write_json
from hoi_training.pseudolabel.constraints import sum_counts

log = logging.getLogger(__name__)

PLAN_FILE = "plan.json"
MANIFEST_FILE = "manifest.json"
SHARD_DIR = "shards"
MANIFEST_FORMAT = "hoi_pseudolabel_manifest/1"
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


@dataclass(frozen=True)
class WorkUnit:
    """One independently processable piece of the source.

    sequence: the sequence's name in the source (a video, a bag, a dataset sequence).
    start_frame / stop_frame: a frame range [start, stop) of it; stop None = to the end.
        Temporal constraints and the per-sequence shape filter see only the unit's
        frames, so split at sequence boundaries unless a sequence is too long for one unit.
    """

    sequence: str
    start_frame: int = 0
    stop_frame: int | None = None

    def __post_init__(self) -> None:
        if not self.sequence:
            raise ValueError("WorkUnit.sequence: expected a non-empty name")
        if self.start_frame < 0 or (self.stop_frame is not None and self.stop_frame <= self.start_frame):
            raise ValueError(f"WorkUnit({self.sequence!r}): expected 0 <= start_frame < stop_frame, got "
                             f"{self.start_frame}, {self.stop_frame}")

    @property
    def key(self) -> str:
        """Stable name of the unit: the sequence, with the frame range when it is not the whole sequence."""
        if self.start_frame == 0 and self.stop_frame is None:
            return self.sequence
        stop = "" if self.stop_frame is None else f"{self.stop_frame:08d}"
        return f"{self.sequence}[{self.start_frame:08d}:{stop}]"

    def sort_key(self) -> tuple[str, int]:
        return self.sequence, self.start_frame


@dataclass
class UnitResult:
    """What processing one unit produced.

    arrays: per-row arrays (rows = the unit's frames, or only the kept ones), all with the
        same length along axis 0; every unit of a job returns the same names with the same
        trailing shapes and dtypes. Object arrays are refused (they would need pickle).
    counts: numbers to add up over the job, e.g. FilterResult.counts().
    """

    arrays: dict[str, np.ndarray]
    counts: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Shard:
    index: int
    units: tuple[WorkUnit, ...]

    @property
    def name(self) -> str:
        return f"shard_{self.index:05d}"


@dataclass(frozen=True)
class RankInfo:
    """Which process this is: torchrun's RANK, WORLD_SIZE and LOCAL_RANK."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    def __post_init__(self) -> None:
        if self.world_size < 1 or not 0 <= self.rank < self.world_size or self.local_rank < 0:
            raise ValueError(f"rank {self.rank} of world size {self.world_size} (local rank {self.local_rank}): "
                             "expected 0 <= rank < world_size and local_rank >= 0")


@dataclass(frozen=True)
class JobIdentity:
    """What makes two runs the same job: a shard is reused only when all of this matches.

    config: the resolved configuration as plain data (``hoi_perception.config.to_dict``).
    source: what was labelled (a dataset folder, a bag path), as a string.
    checkpoint_hash: hash of the model weights that made the predictions, given by the caller.
    """

    config: Mapping[str, Any]
    source: str
    checkpoint_hash: str

    def as_dict(self) -> dict[str, Any]:
        return {"config": _plain(self.config), "source": self.source, "checkpoint_hash": self.checkpoint_hash}


@dataclass
class JobReport:
    """What one rank did in one run."""

    rank: RankInfo
    assigned: list[int]
    processed: list[int]
    skipped: list[int]
    failed: dict[int, str]
    manifest_path: Path | None


class ManifestIncompleteError(RuntimeError):
    """finalize_job was asked for a manifest while shards are still missing."""


def rank_from_environment(environ: Mapping[str, str] | None = None) -> RankInfo:
    """RankInfo from torchrun's RANK, WORLD_SIZE and LOCAL_RANK; a single process when unset."""
    environ = os.environ if environ is None else environ
    values = {}
    for name, default in (("RANK", 0), ("WORLD_SIZE", 1), ("LOCAL_RANK", None)):
        raw = environ.get(name)
        if raw is None or raw == "":
            values[name] = default
            continue
        try:
            values[name] = int(raw)
        except ValueError:
            raise ValueError(f"environment variable {name}={raw!r}: expected an integer") from None
    local = values["LOCAL_RANK"] if values["LOCAL_RANK"] is not None else values["RANK"]
    return RankInfo(rank=values["RANK"], world_size=values["WORLD_SIZE"], local_rank=local)


def units_from_sequences(frame_counts: Mapping[str, int | None], max_frames_per_unit: int = 0) -> list[WorkUnit]:
    """One unit per sequence, or consecutive frame ranges of at most ``max_frames_per_unit``
    frames for longer ones (0 never splits; a count of None, unknown length, never splits)."""
    if max_frames_per_unit < 0:
        raise ValueError(f"max_frames_per_unit: expected >= 0, got {max_frames_per_unit}")
    units = []
    for sequence, count in frame_counts.items():
        if count is not None and count < 0:
            raise ValueError(f"sequence {sequence!r}: frame count must be >= 0, got {count}")
        if count is None or max_frames_per_unit == 0 or count <= max_frames_per_unit:
            units.append(WorkUnit(sequence))
            continue
        for start in range(0, count, max_frames_per_unit):
            units.append(WorkUnit(sequence, start, min(start + max_frames_per_unit, count)))
    return units


def plan_shards(units: Iterable[WorkUnit], units_per_shard: int) -> list[Shard]:
    """Sort units by (sequence, start frame) and cut them into shards of ``units_per_shard``."""
    if units_per_shard < 1:
        raise ValueError(f"units_per_shard: expected a positive integer, got {units_per_shard}")
    ordered = sorted(units, key=WorkUnit.sort_key)
    duplicates = sorted(key for key, n in Counter(u.key for u in ordered).items() if n > 1)
    if duplicates:
        raise ValueError(f"work units: duplicate unit(s) {duplicates[:10]}")
    return [Shard(index=i, units=tuple(ordered[start:start + units_per_shard]))
            for i, start in enumerate(range(0, len(ordered), units_per_shard))]


def shards_for_rank(shards: Sequence[Shard], rank: RankInfo) -> list[Shard]:
    """The shards rank ``rank.rank`` processes: index % world_size == rank."""
    return [s for s in shards if s.index % rank.world_size == rank.rank]


def shard_fingerprint(identity: JobIdentity, shard: Shard) -> str:
    """sha256 of the job identity and the shard's unit keys."""
    return _sha256_json({"job": identity.as_dict(), "units": [u.key for u in shard.units]})


def run_pseudolabel_job(units: Iterable[WorkUnit], process_unit: Callable[[WorkUnit], UnitResult],
                        out_dir: str | Path, identity: JobIdentity, units_per_shard: int,
                        rank: RankInfo | None = None, progress: bool = True,
                        wait_for_ranks_s: float = 0.0) -> JobReport:
    """Process this rank's unfinished shards, then (rank 0) write the manifest if every shard has settled.

    rank: None reads torchrun's environment (a single process when it is unset).
    wait_for_ranks_s: how long rank 0 polls for the other ranks' shards before leaving
        the manifest to :func:`finalize_job`.
    """
    rank = rank if rank is not None else rank_from_environment()
    if wait_for_ranks_s < 0:
        raise ValueError(f"wait_for_ranks_s: expected >= 0, got {wait_for_ranks_s}")
    out_dir = Path(out_dir)
    shards = plan_shards(units, units_per_shard)
    _write_plan(out_dir, identity, units_per_shard, shards)
    mine = shards_for_rank(shards, rank)
    report = JobReport(rank=rank, assigned=[s.index for s in mine], processed=[], skipped=[], failed={},
                       manifest_path=None)
    bar = tqdm(total=len(mine), desc=f"pseudo-labels rank {rank.rank}/{rank.world_size}", unit="shard",
               position=rank.local_rank, disable=not progress, leave=rank.local_rank == 0)
    try:
        for shard in mine:
            fingerprint = shard_fingerprint(identity, shard)
            if _finished_sidecar(out_dir, shard, fingerprint) is not None:
                report.skipped.append(shard.index)
            else:
                error = _process_shard(out_dir, shard, fingerprint, process_unit)
                if error is None:
                    report.processed.append(shard.index)
                else:
                    report.failed[shard.index] = error
            bar.update(1)
            bar.set_postfix(failed=len(report.failed), skipped=len(report.skipped))
    finally:
        bar.close()
    if rank.rank == 0:
        deadline = time.monotonic() + wait_for_ranks_s
        while True:
            pending = _pending_shards(out_dir, identity, shards)
            if not pending or time.monotonic() >= deadline:
                break
            time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
        if pending:
            log.info("manifest not written: %d shard(s) of other ranks not finished (e.g. %s); run finalize_job "
                     "once they are", len(pending), ", ".join(s.name for s in pending[:5]))
        else:
            report.manifest_path = _write_manifest(out_dir, identity, units_per_shard, shards)
    return report


def finalize_job(out_dir: str | Path) -> Path:
    """Merge the shard sidecars of the job planned in ``out_dir`` into manifest.json.

    Raises ManifestIncompleteError, naming the shards, when some have not settled yet
    (no sidecar, a sidecar of another job, or a .npz that no longer matches its hash).
    """
    out_dir = Path(out_dir)
    plan_path = out_dir / PLAN_FILE
    if not plan_path.is_file():
        raise FileNotFoundError(f"{plan_path}: no job plan; run the job first")
    plan = json.loads(plan_path.read_text())
    identity = JobIdentity(config=plan["job"]["config"], source=plan["job"]["source"],
                           checkpoint_hash=plan["job"]["checkpoint_hash"])
    shards = [Shard(index=s["index"], units=tuple(WorkUnit(**u) for u in s["units"])) for s in plan["shards"]]
    pending = _pending_shards(out_dir, identity, shards)
    if pending:
        raise ManifestIncompleteError(f"{out_dir}: {len(pending)} shard(s) not finished: "
                                      f"{', '.join(s.name for s in pending[:10])}")
    return _write_manifest(out_dir, identity, plan["units_per_shard"], shards)


def load_shard(path: str | Path) -> dict[str, np.ndarray]:
    """The arrays of one shard file."""
    with np.load(Path(path), allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


# ---------------------------------------------------------------------------------------------


def _process_shard(out_dir: Path, shard: Shard, fingerprint: str,
                   process_unit: Callable[[WorkUnit], UnitResult]) -> str | None:
    """Run every unit of a shard and write its files; returns the failure reason, or None."""
    npz_path, sidecar_path = _shard_paths(out_dir, shard)
    sidecar: dict[str, Any] = {"shard": shard.index, "fingerprint": fingerprint,
                               "units": [u.key for u in shard.units]}
    try:
        results = []
        for unit in shard.units:
            result = process_unit(unit)
            if not isinstance(result, UnitResult):
                raise TypeError(f"process_unit({unit.key!r}) returned {type(result).__name__}, expected UnitResult")
            results.append(result)
        arrays, rows = _merge_results(shard, results)
        payload = _npz_bytes(arrays)
    except Exception as exc:  # one bad unit must not stop the other shards
        reason = f"{type(exc).__name__}: {exc}"
        log.warning("%s failed: %s", shard.name, reason)
        if npz_path.exists():
            npz_path.unlink()  # an older run's file must not pass for this run's output
        sidecar.update(status="failed", error=reason, traceback=traceback.format_exc())
        atomic_write_json(sidecar_path, sidecar)
        return reason
    atomic_write_bytes(npz_path, payload)
    sidecar.update(status="done", file=npz_path.name, sha256=hashlib.sha256(payload).hexdigest(),
                   rows=rows, counts=sum_counts([r.counts for r in results]))
    atomic_write_json(sidecar_path, sidecar)
    return None


def _merge_results(shard: Shard, results: Sequence[UnitResult]) -> tuple[dict[str, np.ndarray], list[int]]:
    """Concatenate the units' arrays; add ``unit_index`` (row -> position of its unit in the shard)."""
    keys = set(results[0].arrays) if results else set()
    rows = []
    for unit, result in zip(shard.units, results):
        if set(result.arrays) != keys:
            raise ValueError(f"unit {unit.key!r}: arrays {sorted(result.arrays)} differ from the shard's first "
                             f"unit's {sorted(keys)}")
        lengths = {name: np.shape(value)[0] if np.ndim(value) else None for name, value in result.arrays.items()}
        if len(set(lengths.values())) > 1 or None in lengths.values():
            raise ValueError(f"unit {unit.key!r}: arrays must share their first (row) axis, got lengths {lengths}")
        rows.append(next(iter(lengths.values())) if lengths else 0)
    arrays = {}
    for name in sorted(keys):
        parts = [np.asarray(r.arrays[name]) for r in results]
        if any(p.dtype == object for p in parts):
            raise TypeError(f"array {name!r}: object arrays cannot be stored without pickle")
        try:
            arrays[name] = np.concatenate(parts)
        except ValueError as exc:
            raise ValueError(f"array {name!r}: units disagree on its trailing shape: {exc}") from None
    if "unit_index" in arrays:
        raise ValueError("array name 'unit_index' is reserved for the shard's row-to-unit index")
    arrays["unit_index"] = np.repeat(np.arange(len(results), dtype=np.int32), rows)
    return arrays, [int(r) for r in rows]


def _npz_bytes(arrays: Mapping[str, np.ndarray]) -> bytes:
    """An .npz (numpy.load-compatible) whose bytes depend only on the arrays: fixed zip times, sorted names."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name in sorted(arrays):
            array_bytes = io.BytesIO()
            np.lib.format.write_array(array_bytes, np.ascontiguousarray(arrays[name]), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, array_bytes.getvalue())
    return buffer.getvalue()


def _shard_paths(out_dir: Path, shard: Shard) -> tuple[Path, Path]:
    folder = out_dir / SHARD_DIR
    return folder / f"{shard.name}.npz", folder / f"{shard.name}.json"


def _read_sidecar(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _finished_sidecar(out_dir: Path, shard: Shard, fingerprint: str) -> dict[str, Any] | None:
    """The shard's sidecar if the shard is done for this job and its file still matches its hash."""
    npz_path, sidecar_path = _shard_paths(out_dir, shard)
    sidecar = _read_sidecar(sidecar_path)
    if sidecar is None or sidecar.get("status") != "done" or sidecar.get("fingerprint") != fingerprint:
        return None
    try:
        digest = hashlib.sha256(npz_path.read_bytes()).hexdigest()
    except FileNotFoundError:
        return None
    return sidecar if digest == sidecar.get("sha256") else None


def _settled_sidecar(out_dir: Path, identity: JobIdentity, shard: Shard) -> dict[str, Any] | None:
    """Done (and verified) or failed sidecar of this job's shard; None while it is pending."""
    fingerprint = shard_fingerprint(identity, shard)
    finished = _finished_sidecar(out_dir, shard, fingerprint)
    if finished is not None:
        return finished
    sidecar = _read_sidecar(_shard_paths(out_dir, shard)[1])
    if sidecar is not None and sidecar.get("status") == "failed" and sidecar.get("fingerprint") == fingerprint:
        return sidecar
    return None


def _pending_shards(out_dir: Path, identity: JobIdentity, shards: Sequence[Shard]) -> list[Shard]:
    return [s for s in shards if _settled_sidecar(out_dir, identity, s) is None]


def _write_plan(out_dir: Path, identity: JobIdentity, units_per_shard: int, shards: Sequence[Shard]) -> None:
    plan = {
        "job": identity.as_dict(),
        "units_per_shard": units_per_shard,
        "shards": [{"index": s.index, "name": s.name,
                    "units": [{"sequence": u.sequence, "start_frame": u.start_frame, "stop_frame": u.stop_frame}
                              for u in s.units]} for s in shards],
    }
    path = out_dir / PLAN_FILE
    try:
        existing = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        existing = None
    if existing != plan:  # every rank writes the same plan; skip the rewrite when it is there
        atomic_write_json(path, plan)


def _write_manifest(out_dir: Path, identity: JobIdentity, units_per_shard: int, shards: Sequence[Shard]) -> Path:
    entries, failures, counts = [], [], []
    for shard in shards:
        sidecar = _settled_sidecar(out_dir, identity, shard)
        if sidecar is None:
            raise ManifestIncompleteError(f"{shard.name} is not finished")
        entry = {"index": shard.index, "status": sidecar["status"], "units": sidecar["units"]}
        if sidecar["status"] == "done":
            entry.update(file=f"{SHARD_DIR}/{sidecar['file']}", sha256=sidecar["sha256"], rows=sidecar["rows"],
                         counts=sidecar["counts"])
            counts.append(sidecar["counts"])
        else:
            entry["error"] = sidecar["error"]
            failures.append({"shard": shard.index, "units": sidecar["units"], "error": sidecar["error"]})
        entries.append(entry)
    manifest = {
        "format": MANIFEST_FORMAT,
        **identity.as_dict(),
        "units_per_shard": units_per_shard,
        "num_shards": len(shards),
        "num_units": sum(len(s.units) for s in shards),
        "complete": not failures,
        "counts": sum_counts(counts),
        "failures": failures,
        "shards": entries,
    }
    path = out_dir / MANIFEST_FILE
    atomic_write_json(path, manifest)
    return path


def _plain(value: Any) -> Any:
    """JSON round trip, so tuples and lists (and numpy scalars) compare and hash alike."""
    try:
        return json.loads(json.dumps(value, sort_keys=True, default=_json_scalar))
    except TypeError as exc:
        raise ValueError(f"JobIdentity.config: not representable as JSON: {exc}") from None


def _json_scalar(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _sha256_json(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
