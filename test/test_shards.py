import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from hoi_training.pseudolabel.shards import (
    JobIdentity,
    ManifestIncompleteError,
    RankInfo,
    UnitResult,
    WorkUnit,
    finalize_job,
    load_shard,
    plan_shards,
    rank_from_environment,
    run_pseudolabel_job,
    shards_for_rank,
    units_from_sequences,
)

REPO = Path(__file__).resolve().parents[1]
IDENTITY = JobIdentity(config={"constraints": {"min_box_iou": 0.6}, "tta": {"scales": (1.0, 0.85)}},
                       source="/data/videos", checkpoint_hash="abc123")
UNITS = [WorkUnit(f"seq_{i:02d}") for i in range(9)] + [WorkUnit("long", 0, 100), WorkUnit("long", 100, 150)]
UNITS_PER_SHARD = 3  # 11 units -> 4 shards


class Worker:
    """Deterministic stand-in for the model + filter: rows and counts depend only on the unit."""

    def __init__(self, fail_on=(), interrupt_after=None):
        self.calls = []
        self.fail_on = set(fail_on)
        self.interrupt_after = interrupt_after

    def __call__(self, unit):
        if self.interrupt_after is not None and len(self.calls) == self.interrupt_after:
            raise KeyboardInterrupt  # the job is killed mid-shard
        self.calls.append(unit.key)
        if unit.key in self.fail_on:
            raise ValueError(f"cannot decode {unit.key}")
        rows = 2 + sum(map(ord, unit.key)) % 5
        frames = np.arange(unit.start_frame, unit.start_frame + rows)
        joints_2d = np.sin(frames[:, None, None] * np.ones((1, 21, 2)))
        return UnitResult(arrays={"frame_ids": frames, "joints_2d": joints_2d},
                          counts={"frames": rows + 1, "kept": rows, "rejected_by.box_iou": 1})


SINGLE_PROCESS = RankInfo()


def run(out_dir, worker, rank=SINGLE_PROCESS, identity=IDENTITY, **kwargs):
    return run_pseudolabel_job(UNITS, worker, out_dir, identity, UNITS_PER_SHARD, rank=rank, progress=False, **kwargs)


def tree_bytes(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(Path(folder).rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted single-process run."""
    out = tmp_path_factory.mktemp("reference")
    report = run(out, Worker())
    assert report.processed == [0, 1, 2, 3] and not report.failed
    return out


def test_plan_is_deterministic_and_rejects_duplicates():
    shuffled = list(reversed(UNITS))
    assert plan_shards(shuffled, 3) == plan_shards(UNITS, 3)
    shards = plan_shards(UNITS, 3)
    assert [len(s.units) for s in shards] == [3, 3, 3, 2]
    assert [u.key for u in shards[0].units] == ["long[00000000:00000100]", "long[00000100:00000150]", "seq_00"]
    with pytest.raises(ValueError, match="duplicate"):
        plan_shards([WorkUnit("a"), WorkUnit("a")], 2)
    assert units_from_sequences({"a": 250, "b": 40, "c": None}, 100) == [
        WorkUnit("a", 0, 100), WorkUnit("a", 100, 200), WorkUnit("a", 200, 250), WorkUnit("b"), WorkUnit("c")]


def test_rank_from_environment():
    assert rank_from_environment({}) == RankInfo(0, 1, 0)
    assert rank_from_environment({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}) == RankInfo(3, 4, 1)
    with pytest.raises(ValueError, match="WORLD_SIZE"):
        rank_from_environment({"RANK": "0", "WORLD_SIZE": "two"})
    with pytest.raises(ValueError, match="rank 2 of world size 2"):
        rank_from_environment({"RANK": "2", "WORLD_SIZE": "2"})


def test_reference_output_and_manifest(reference):
    manifest = json.loads((reference / "manifest.json").read_text())
    assert manifest["complete"] and manifest["num_shards"] == 4 and manifest["num_units"] == 11
    assert manifest["checkpoint_hash"] == "abc123" and manifest["source"] == "/data/videos"
    assert manifest["config"]["tta"]["scales"] == [1.0, 0.85]
    worker = Worker()
    expected_rows = {u.key: len(worker(u).arrays["frame_ids"]) for u in UNITS}
    assert manifest["counts"] == {"frames": sum(expected_rows.values()) + 11, "kept": sum(expected_rows.values()),
                                  "rejected_by.box_iou": 11}
    arrays = load_shard(reference / manifest["shards"][1]["file"])
    assert sorted(arrays) == ["frame_ids", "joints_2d", "unit_index"]
    units = manifest["shards"][1]["units"]
    np.testing.assert_array_equal(np.bincount(arrays["unit_index"]), [expected_rows[k] for k in units])
    assert arrays["joints_2d"].shape == (sum(expected_rows[k] for k in units), 21, 2)


def test_killed_job_resumes_to_byte_identical_output(reference, tmp_path):
    interrupted = Worker(interrupt_after=7)  # two shards finished, the third half done
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, interrupted)
    assert sorted(p.name for p in (tmp_path / "shards").iterdir()) == [
        "shard_00000.json", "shard_00000.npz", "shard_00001.json", "shard_00001.npz"]
    assert not (tmp_path / "manifest.json").exists()
    resumed = Worker()
    report = run(tmp_path, resumed)
    assert report.skipped == [0, 1] and report.processed == [2, 3]
    assert len(resumed.calls) == 5  # only the units of the unfinished shards
    assert tree_bytes(tmp_path) == tree_bytes(reference)


def test_hard_killed_process_resumes_to_byte_identical_output(reference, tmp_path):
    """SIGKILL in the middle of the fourth unit: no cleanup runs, as when a node dies."""
    script = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {str(REPO)!r})
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_shards import UNITS, Worker, run
        worker = Worker()
        def dying(unit):
            if len(worker.calls) == 4:
                os.kill(os.getpid(), signal.SIGKILL)
            return worker(unit)
        run({str(tmp_path)!r}, dying)
    """)
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120,
                               env={**os.environ, "RANK": "", "WORLD_SIZE": ""})
    assert completed.returncode == -9, completed.stderr.decode()[-2000:]
    assert (tmp_path / "shards" / "shard_00000.json").exists()
    assert not (tmp_path / "shards" / "shard_00001.json").exists()
    resumed = Worker()
    report = run(tmp_path, resumed)
    assert report.skipped == [0] and report.processed == [1, 2, 3]
    assert tree_bytes(tmp_path) == tree_bytes(reference)


def test_two_ranks_split_the_shards_and_finalize_merges(reference, tmp_path, monkeypatch):
    shards = plan_shards(UNITS, UNITS_PER_SHARD)
    assert [s.index for s in shards_for_rank(shards, RankInfo(0, 2))] == [0, 2]
    assert [s.index for s in shards_for_rank(shards, RankInfo(1, 2))] == [1, 3]
    rank0, rank1 = Worker(), Worker()
    report0 = run(tmp_path, rank0, rank=RankInfo(0, 2))
    assert report0.assigned == [0, 2] and report0.manifest_path is None  # rank 1 has not run yet
    with pytest.raises(ManifestIncompleteError, match="shard_00001, shard_00003"):
        finalize_job(tmp_path)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    report1 = run(tmp_path, rank1, rank=None)
    assert report1.rank == RankInfo(1, 2, 1) and report1.assigned == [1, 3] and report1.manifest_path is None
    assert not set(rank0.calls) & set(rank1.calls)
    assert sorted(rank0.calls + rank1.calls) == sorted(u.key for u in UNITS)
    assert finalize_job(tmp_path) == tmp_path / "manifest.json"
    assert tree_bytes(tmp_path) == tree_bytes(reference)


def test_rank_zero_writes_the_manifest_when_it_finishes_last(reference, tmp_path):
    run(tmp_path, Worker(), rank=RankInfo(1, 2))
    report = run(tmp_path, Worker(), rank=RankInfo(0, 2), wait_for_ranks_s=0.1)
    assert report.manifest_path == tmp_path / "manifest.json"
    assert tree_bytes(tmp_path) == tree_bytes(reference)


def test_failing_shard_is_recorded_and_the_others_finish(reference, tmp_path):
    worker = Worker(fail_on={"seq_03"})  # in shard 1
    report = run(tmp_path, worker)
    assert report.failed == {1: "ValueError: cannot decode seq_03"} and report.processed == [0, 2, 3]
    assert "seq_05" in worker.calls  # shard 2 ran after the failure
    sidecar = json.loads((tmp_path / "shards" / "shard_00001.json").read_text())
    assert sidecar["status"] == "failed" and "Traceback" in sidecar["traceback"]
    assert not (tmp_path / "shards" / "shard_00001.npz").exists()
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert not manifest["complete"]
    assert manifest["failures"] == [{"shard": 1, "units": ["seq_01", "seq_02", "seq_03"],
                                     "error": "ValueError: cannot decode seq_03"}]
    reference_manifest = json.loads((reference / "manifest.json").read_text())
    assert manifest["counts"]["kept"] < reference_manifest["counts"]["kept"]
    # A rerun retries only the failed shard and ends where an error-free run ends.
    retry = Worker()
    report = run(tmp_path, retry)
    assert report.processed == [1] and retry.calls == ["seq_01", "seq_02", "seq_03"]
    assert tree_bytes(tmp_path) == tree_bytes(reference)


def test_corrupted_or_foreign_shards_are_redone(reference, tmp_path):
    run(tmp_path, Worker())
    shard_file = tmp_path / "shards" / "shard_00002.npz"
    shard_file.write_bytes(shard_file.read_bytes()[:-10] + b"0123456789")
    worker = Worker()
    assert run(tmp_path, worker).processed == [2]
    assert tree_bytes(tmp_path) == tree_bytes(reference)
    # Another checkpoint makes every shard stale.
    other = JobIdentity(config=IDENTITY.config, source=IDENTITY.source, checkpoint_hash="def456")
    assert run(tmp_path, Worker(), identity=other).processed == [0, 1, 2, 3]
    assert json.loads((tmp_path / "manifest.json").read_text())["checkpoint_hash"] == "def456"


def test_inconsistent_unit_results_fail_the_shard(tmp_path):
    def ragged(unit):
        return UnitResult(arrays={"a": np.zeros(3), "b": np.zeros(4)})

    report = run_pseudolabel_job([WorkUnit("x")], ragged, tmp_path, IDENTITY, 1, rank=RankInfo(), progress=False)
    assert "share their first (row) axis" in report.failed[0]


def test_filter_results_round_trip_through_a_shard(tmp_path):
    from hoi_training.pseudolabel.constraints import ConstraintConfig, SequencePredictions, filter_sequence

    rng = np.random.default_rng(0)

    def predictions_of(unit):
        count = 6
        joints = rng.normal(scale=0.03, size=(count, 21, 3))
        return SequencePredictions(frame_ids=np.arange(count), joints_2d=800 * joints[..., :2] + 50,
                                   joints_3d=joints, vertices=rng.normal(scale=0.03, size=(count, 778, 3)),
                                   hand_pose=rng.normal(scale=0.1, size=(count, 48)), betas=np.zeros((count, 10)),
                                   hand_boxes=np.tile([10.0, 10.0, 90.0, 90.0], (count, 1)), sequence=unit.key)

    results = {}

    def process(unit):
        predictions = predictions_of(unit)
        result = filter_sequence(predictions, ConstraintConfig())
        results[unit.key] = result
        return UnitResult(arrays={**predictions.to_arrays(), **result.to_arrays()}, counts=result.counts())

    units = [WorkUnit("a"), WorkUnit("b")]
    run_pseudolabel_job(units, process, tmp_path, IDENTITY, 2, rank=RankInfo(), progress=False)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["counts"]["frames"] == 12
    assert manifest["counts"]["kept"] == sum(int(r.kept.sum()) for r in results.values())
    stored = load_shard(tmp_path / manifest["shards"][0]["file"])
    np.testing.assert_array_equal(stored["kept"], np.concatenate([results["a"].kept, results["b"].kept]))
    np.testing.assert_array_equal(stored["score.box_iou"],
                                  np.concatenate([results["a"].scores.box_iou, results["b"].scores.box_iou]))
    assert stored["vertices"].shape == (12, 778, 3)
