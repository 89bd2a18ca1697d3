"""`moa tune` end to end on the shared Ray instance: a 4-trial sweep of a few steps each,
interrupted (SIGUSR1, as Ctrl+C) in its third trial and finished by the same call; its
table, Pareto sets and best config; the best config trained by `moa train`; a trial Tune stops
gives its workers back."""

import dataclasses
import json
import os
import re
import signal
import threading
import time

import pytest
import ray
from ray.tune.schedulers import FIFOScheduler

from orchestrator.cli import main
from orchestrator.config import load_config
from orchestrator.distributed import tune as tune_module
from orchestrator.distributed.tune import tune_config
from orchestrator.errors import MoaError
from orchestrator.evaluation.sweep_report import best_trial, mark_pareto_sets
from orchestrator.recipes import run_folder
from orchestrator.recipes.sweep import run_sweep
from orchestrator.training.metrics_log import read_metrics

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.usefixtures("ray_session")]


SWEEP = [
    "train.max_steps=4",
    "eval.every=2",
    "eval.coarse_grid_divisions=2",
    "eval.coarse_num_prompts=4",
    "eval.max_new_tokens=8",
    "eval.grid_divisions=2",
    "eval.num_prompts=4",
    "checkpoint.every=2",
    "tune.space={train.aggregation: {grid: [ls, tche]}, train.beta: {loguniform: [0.05, 0.5]}}",
    "tune.num_samples=2",
    "tune.max_concurrent_trials=1",
]


def interrupt_after(finished: int, trials_dir, stop: threading.Event) -> None:
    """Send this process SIGUSR1 (Tune stops as on Ctrl+C) once `finished` trials are done and
    the next one has started its run."""

    def watch():
        while not stop.is_set():
            done = len(list(trials_dir.glob("*/train.json")))
            started = len(list(trials_dir.glob("*/config.yaml")))
            if done >= finished and started > finished:
                os.kill(os.getpid(), signal.SIGUSR1)
                return
            time.sleep(0.1)

    threading.Thread(target=watch, daemon=True).start()


@pytest.fixture(scope="module")
def sweep(tiny_config, tmp_path_factory):
    out = tmp_path_factory.mktemp("tune") / "sweep"
    cfg = tiny_config(out, *SWEEP)
    stop = threading.Event()
    interrupt_after(2, out / "trials", stop)
    try:
        with pytest.raises(MoaError, match=r"the sweep stopped with 2 of 4 trials done"):
            run_sweep(cfg)
    finally:
        stop.set()
    first = {
        path.parent.name: (path.stat().st_mtime_ns, read_metrics(path.parent))
        for path in (out / "trials").glob("*/train.json")
    }
    cut_short = [path.name for path in (out / "trials").iterdir() if path.name not in first]
    return cfg, first, cut_short, run_sweep(cfg)


def test_a_restored_sweep_runs_only_the_trials_left(sweep):
    _, first, cut_short, result = sweep
    assert len(first) == 2 and len(cut_short) == 1
    assert len(result.trials) == 4
    assert all(row["status"] == "finished" and row["step"] == 4 for row in result.trials)
    for trial, (mtime, metrics) in first.items():
        run_dir = result.out_dir / "trials" / trial
        assert (run_dir / "train.json").stat().st_mtime_ns == mtime  # not trained again
        assert read_metrics(run_dir) == metrics
    assert len(list((result.out_dir / "trials").glob("*/train.json"))) == 4
    grid = sorted((row["params"]["train.aggregation"], row["params"]["train.beta"]) for row in
                  result.trials)  # fmt: skip
    assert [a for a, _ in grid] == ["ls", "ls", "tche", "tche"]
    assert all(0.05 <= beta <= 0.5 for _, beta in grid)
    assert len({beta for _, beta in grid}) == 4  # drawn per trial


def test_each_trial_reports_the_metrics_its_run_logged(sweep):
    _, _, _, result = sweep
    for row in result.trials:
        run_dir = result.out_dir / row["run_dir"]
        trial_cfg = load_config(run_dir / "config.yaml")
        assert trial_cfg.train.aggregation == row["params"]["train.aggregation"]
        assert trial_cfg.train.beta == row["params"]["train.beta"]
        last = [m for m in read_metrics(run_dir) if "hypervolume" in m][-1]
        assert last["step"] == 4
        assert row["hypervolume"] == pytest.approx(last["hypervolume"])
        assert row["inner_product"] == pytest.approx(last["inner_product"])
        assert row["hypervolume"] >= 0 and row["compute"] > 0
        # Rank 0 of the trial's Ray Train workers evaluated during training and kept the best.
        evaluated = {
            m["step"]: m["hypervolume"] for m in read_metrics(run_dir) if "hypervolume" in m
        }
        best = json.loads((run_dir / "best" / "best.json").read_text())
        assert sorted(evaluated) == [2, 4] and best["hypervolume"] == max(evaluated.values())
        assert (run_dir / "best" / "adapter" / "adapter.safetensors").is_file()


def test_the_table_pareto_sets_and_best_config_are_written(sweep):
    cfg, _, _, result = sweep
    out = result.out_dir
    saved = json.loads((out / "results.json").read_text())
    assert saved == result.trials
    expected = [dict(row) for row in saved]
    mark_pareto_sets(expected)
    assert [r["pareto_hv_ip"] for r in saved] == [r["pareto_hv_ip"] for r in expected]
    assert any(r["pareto_hv_ip"] for r in saved) and any(r["pareto_hv_compute"] for r in saved)
    assert result.best["trial"] == best_trial(saved, "hypervolume")["trial"]
    assert result.best["hypervolume"] == max(r["hypervolume"] for r in saved)
    report = (out / "report.md").read_text()
    assert (
        sum(line.startswith(f"| {r['trial']}") for r in saved for line in report.splitlines()) == 4
    )
    assert (out / "pareto.png").read_bytes().startswith(b"\x89PNG")

    best = load_config(result.best_config)
    trial = load_config(out / result.best["run_dir"] / "config.yaml").model_dump()
    trial["output_dir"] = f"{cfg.output_dir}-best"
    del trial["tune"]
    dumped = best.model_dump()
    del dumped["tune"]
    assert dumped == trial and best.tune.space == {}


def test_the_best_config_trains_with_moa_train(sweep, capsys, monkeypatch, train_here):
    """moa train takes best.yaml as it is (trained in this process: Ray Train ran the trials)."""
    _, _, _, result = sweep
    monkeypatch.setattr(run_folder, "train", train_here)
    assert main(["train", str(result.best_config)]) == 0
    run_dir = load_config(result.best_config).output_dir
    assert "trained 4 steps" in capsys.readouterr().out
    assert (os.path.isdir(f"{run_dir}/adapter")) and os.path.isfile(f"{run_dir}/eval/front.json")


class StopTheSecondTrialAtStep2(FIFOScheduler):
    """Stops a trial as ASHA stops one that trails at a milestone; on the tiny model every trial's
    front is alike, so ASHA itself would stop none."""

    def on_trial_result(self, tune_controller, trial, result):
        if trial.trial_id.endswith("_00001") and result["step"] >= 2:
            return self.STOP
        return self.CONTINUE


def test_a_trial_tune_stops_gives_its_workers_back(tiny_config, tmp_path, monkeypatch, capsys):
    cfg = tiny_config(tmp_path / "stopped", *SWEEP, "tune.num_samples=1")

    def stopping(cfg):
        return dataclasses.replace(tune_config(cfg), scheduler=StopTheSecondTrialAtStep2())

    monkeypatch.setattr(tune_module, "tune_config", stopping)
    total = ray.cluster_resources()["CPU"]
    assert cpus_free_within(60) == total, live_actors()  # no earlier test holds a CPU any more
    result = run_sweep(cfg)
    assert [(row["status"], row["step"]) for row in result.trials] == [
        ("finished", 4),
        ("stopped early", 2),
    ]
    assert not (result.out_dir / result.trials[1]["run_dir"] / "train.json").exists()
    # One console line per trial that ends, instead of Tune's status tables.
    printed = capsys.readouterr().out
    assert re.search(r"trial \w+_00000 ended at step 4: hypervolume \d\.\d{4} \(coarse", printed)
    assert re.search(r"trial \w+_00001 ended at step 2: hypervolume", printed)
    assert "Trial status" not in printed
    # Tune killed the second trial mid-run; Ray Train frees its worker group once it sees that.
    assert cpus_free_within(60) == pytest.approx(total), live_actors()


def cpus_free_within(seconds: float) -> float:
    """The cluster's free CPUs once every CPU is free again, or when `seconds` have passed."""
    deadline = time.monotonic() + seconds
    total = ray.cluster_resources()["CPU"]
    while ray.available_resources().get("CPU", 0) < total and time.monotonic() < deadline:
        time.sleep(0.5)
    return ray.available_resources().get("CPU", 0)


def live_actors() -> list[str]:
    """What holds the cluster's resources, for a failure's message."""
    from ray.util.state import list_actors

    return [f"{a.class_name} ({a.pid})" for a in list_actors(filters=[("state", "=", "ALIVE")])]
