"""benchmarks/experiment_runs.py: the output-folder claim, the stage log and runner, the commands a report shows,
the driver exit codes and the latency summary; and that each driver's stage lines carry its own logger name."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest

from benchmarks import experiment_runs as runs
from hoi_perception.config import ConfigError

SETTINGS = {"scale": "tiny", "seeds": {"lab": 1, "wild": 2}}


def test_output_folder_is_claimed_by_one_set_of_settings(tmp_path):
    out = tmp_path / "new" / "out"
    runs.claim_output_folder(out, Path("given/out"), SETTINGS)
    assert json.loads((out / runs.EXPERIMENT_FILE).read_text()) == SETTINGS
    runs.claim_output_folder(out, Path("given/out"), json.loads(json.dumps(SETTINGS)))  # the same run resumes
    with pytest.raises(ConfigError, match=r"--out 'given/out' holds an experiment run with other settings "
                                          r"\(differing: seeds\)"):
        runs.claim_output_folder(out, Path("given/out"), {**SETTINGS, "seeds": {"lab": 1, "wild": 3}})
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "notes.txt").write_text("x")
    with pytest.raises(FileExistsError, match="holds other files and no experiment.json"):
        runs.claim_output_folder(tmp_path / "used", tmp_path / "used", SETTINGS)
    with pytest.raises(NotADirectoryError, match="exists and is not a folder"):
        runs.claim_output_folder(tmp_path / "used" / "notes.txt", tmp_path / "used" / "notes.txt", SETTINGS)
    assert sorted(p.name for p in (tmp_path / "used").iterdir()) == ["notes.txt"]


def test_stage_log_skips_finished_steps_keeps_their_wall_time_and_logs_as_its_driver(tmp_path, caplog):
    driver = logging.getLogger("some_driver")
    path = tmp_path / runs.STAGE_LOG_FILE
    calls = []
    with caplog.at_level(logging.INFO, logger="some_driver"):
        log = runs.StageLog(path, driver)
        log.run("data/lab", "hoi-train synth", lambda: False, lambda: calls.append("data"))
        log.note("train/semi", "not trained", "filter 'all' keeps no pseudo-label")
    assert calls == ["data"] and log.this_run == {"data/lab": "ran", "train/semi": "not trained"}
    first = json.loads(path.read_text())["steps"]
    assert first["data/lab"]["status"] == "done" and first["data/lab"]["wall_s"] >= 0
    assert first["train/semi"] == {"status": "not trained", "wall_s": None, "command": None,
                                   "reason": "filter 'all' keeps no pseudo-label"}
    assert [(r.name, r.getMessage()) for r in caplog.records] == [("some_driver", "data/lab: running")]

    again = runs.StageLog(path, driver)  # a rerun reads what the first invocation recorded
    assert again.done("data/lab") and not again.done("train/semi") and again.this_run == {}
    again.run("data/lab", "hoi-train synth", lambda: True, lambda: calls.append("again"))
    again.run("eval/x", None, lambda: True, lambda: calls.append("eval"))  # finished by hand, before any log
    assert calls == ["data"] and again.this_run == {"data/lab": "skipped", "eval/x": "skipped"}
    steps = json.loads(path.read_text())["steps"]
    assert steps["data/lab"] == first["data/lab"] and steps["eval/x"] == {"status": "done", "wall_s": None,
                                                                          "command": None}


def test_stages_run_in_pipeline_order_and_unknown_ones_are_named():
    order = []
    actions = {name: (lambda name=name: order.append(name)) for name in ("data", "train", "report")}
    runs.run_stages(["report", "data"], actions)
    assert order == ["data", "report"]
    with pytest.raises(ValueError, match=r"unknown stage\(s\) \['fit'\]; expected some of \['data', 'train', "
                                         r"'report'\]"):
        runs.run_stages(["data", "fit"], actions)
    assert order == ["data", "report"]  # nothing ran
    with pytest.raises(runs.StageError, match=r"stage 'train' needs .*manifest\.json, which the 'data' stage "
                                              r"writes; run it first \(--stages data\)"):
        runs.require(Path("/nonexistent/manifest.json"), "train", "data")


def test_commands_show_paths_from_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    command = runs.command_line("hoi-train", "fit", "--out", tmp_path / "runs" / "a b", "--seed", 3,
                                Path("/elsewhere/x.pt"), *runs.repeated_flag("--set", ["a=1", "b=c d"]))
    assert command == "hoi-train fit --out 'runs/a b' --seed 3 /elsewhere/x.pt --set a=1 --set 'b=c d'"
    results = {"config": "experiments/x.yaml", "scale": "smoke",
               "steps": {"train/b": {"wall_s": 12.345, "command": "hoi-train fit"},
                         "data/a": {"wall_s": None, "command": None}}}
    lines = runs.commands_section("benchmarks/x.py", results, tmp_path / "out", ("data/a", "train/b"), "Steps:",
                                  lambda entry: entry["command"] or "in the script")
    assert lines[5] == "PYTHONPATH=. python benchmarks/x.py --config experiments/x.yaml --out out --scale smoke"
    assert lines[-3:] == ["| --- | --- | --- |", "| data/a | n/a | in the script |",
                          "| train/b | 12.35 | hoi-train fit |"]


def test_outputs_are_stale_when_their_source_is_newer(tmp_path):
    source, output = tmp_path / "last.pt", tmp_path / "metrics.json"
    assert not runs.written_after(output, source)
    source.write_text("model")
    output.write_text("{}")
    os.utime(source, (1000, 1000))
    os.utime(output, (1000, 1000))
    assert runs.written_after(output, source)  # the same second counts as after
    os.utime(source, (1001, 1001))  # retrained
    assert not runs.written_after(output, source)


def test_driver_exit_codes_and_log_lines(caplog):
    driver = logging.getLogger("some_driver")
    with caplog.at_level(logging.INFO, logger="some_driver"):
        assert runs.run_driver(driver, lambda: {"data/a": "ran", "eval/b": "skipped"}) == 0

        def broken() -> dict[str, str]:
            raise runs.StageError("stage 'semi' needs x")

        assert runs.run_driver(driver, broken) == 2
    assert [(r.name, r.levelname, r.getMessage()) for r in caplog.records] == [
        ("some_driver", "INFO", "steps: data/a ran, eval/b skipped"),
        ("some_driver", "ERROR", "stage 'semi' needs x")]


def test_timing_summarises_runs_in_milliseconds():
    timing = runs.Timing.of([k / 1000 for k in range(10, 0, -1)])  # 1..10 ms, in any order
    assert (timing.median_ms, timing.p10_ms, timing.p90_ms) == pytest.approx((5.5, 1.9, 9.1))
    assert runs.cpu_name()


@pytest.mark.parametrize("driver", ["dma_refinement", "semi_supervised"])
def test_each_driver_logs_its_stages_under_its_own_name(driver, tmp_path, caplog):
    import importlib

    module = importlib.import_module(f"benchmarks.{driver}")
    config = f"experiments/{driver}.yaml"
    experiment = module.Experiment(module.load_experiment_config(config), "smoke", tmp_path / "out", config)
    with caplog.at_level(logging.INFO, logger=driver):
        experiment.log.run("data/x", None, lambda: True, lambda: None)
    assert [(r.name, r.getMessage()) for r in caplog.records] == [(driver, "data/x: output exists, skipped")]
