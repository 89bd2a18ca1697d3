"""`moa tune` end to end on the shared Ray instance, on the real path's data (a PKU-SafeRLHF
file) with its reward models as the scorers (conftest's `real_path`): one 3-trial sweep of a few
steps each, interrupted (SIGUSR1, as Ctrl+C) in its second trial and finished by the same call,
its third trial stopped by Tune at step 2; its table, Pareto sets, best config and the chosen
model's test front; the best config trained by `moa train`; the stopped trial gives its workers
back."""

import contextlib
import dataclasses
import io
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
from orchestrator.evaluation.run_front import evaluate_on_grid
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
    "tune.space={train.aggregation: {grid: [ls, tche, stch]}, "
    "train.beta: {loguniform: [0.05, 0.5]}}",
    "tune.num_samples=1",
    "tune.max_concurrent_trials=1",
]


def interrupt_after(finished: int, trials_dir, stop: threading.Event) -> dict:
    """Send this process SIGUSR1 (Tune stops as on Ctrl+C) once `finished` trials are done and
    the next one has saved its first checkpoint. (Interrupted before its workers are up, Ray
    Train's controller can die before it has handed its placement group to its cleaner; the
    group then holds its CPUs until the driver exits, as `moa tune`'s does at once.) Returns what
    the trials were when it was sent, once it is: {"done": {trial: (train.json's mtime,
    metrics)}, "cut_short": {trial: metrics}}."""
    seen: dict = {}

    def watch():
        while not stop.is_set():
            done = {path.parent for path in trials_dir.glob("*/train.json")}
            saved = {path.parents[1] for path in trials_dir.glob("*/checkpoints/checkpoint_*")}
            if len(done) >= finished and saved - done:
                seen["done"] = {
                    run.name: ((run / "train.json").stat().st_mtime_ns, read_metrics(run))
                    for run in done
                }
                seen["cut_short"] = {run.name: read_metrics(run) for run in saved - done}
                os.kill(os.getpid(), signal.SIGUSR1)
                return
            time.sleep(0.1)

    threading.Thread(target=watch, daemon=True).start()
    return seen


class StopTheLastTrialAtStep2(FIFOScheduler):
    """Stops a trial as ASHA stops one that trails at a milestone; on the tiny model every trial's
    front is alike, so ASHA itself would stop none."""

    def on_trial_result(self, tune_controller, trial, result):
        if trial.trial_id.endswith("_00002") and result["step"] >= 2:
            return self.STOP
        return self.CONTINUE


@pytest.fixture(scope="module")
def sweep(tiny_config, real_path, tmp_path_factory):
    """A 3-trial sweep interrupted in its second trial and finished by the same call; Tune stops
    its third trial at step 2. (the config, {trial: (train.json's mtime, metrics)} of the trial
    done before the interrupt, the trials the interrupt cut short, the result, what the second
    call printed, the cluster's free CPUs before and after)."""
    out = tmp_path_factory.mktemp("tune") / "sweep"
    cfg = tiny_config(out, *SWEEP, *real_path.overrides)
    free_before = cpus_free_and_holders()  # no earlier test holds a CPU any more
    stop = threading.Event()
    seen = interrupt_after(1, out / "trials", stop)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tune_module, "tune_config", stopping_tune_config)
        try:
            with pytest.raises(MoaError, match=r"the sweep stopped with [12] of 3 trials done"):
                run_sweep(cfg)
        finally:
            stop.set()
        first, cut_short = seen["done"], seen["cut_short"]
        cpus_free_within(60)  # what the interrupt left running has ended or been stopped
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            result = run_sweep(cfg)
    # Tune killed the third trial mid-run; Ray Train frees its worker group once it sees that.
    free_after = cpus_free_and_holders()
    return Sweep(cfg, first, cut_short, result, printed.getvalue(), free_before, free_after)


@dataclasses.dataclass
class Sweep:
    cfg: object
    first: dict
    cut_short: dict  # trial: its metrics at the interrupt
    result: object
    printed: str
    free_before: tuple
    free_after: tuple


def stopping_tune_config(cfg):
    return dataclasses.replace(tune_config(cfg), scheduler=StopTheLastTrialAtStep2())


def test_a_restored_sweep_runs_only_the_trials_left(sweep):
    result = sweep.result
    assert len(sweep.first) == 1 and len(sweep.cut_short) == 1
    assert [(row["status"], row["step"]) for row in result.trials] == [
        ("finished", 4),
        ("finished", 4),
        ("stopped early", 2),
    ]
    for trial, (mtime, metrics) in sweep.first.items():
        run_dir = result.out_dir / "trials" / trial
        assert (run_dir / "train.json").stat().st_mtime_ns == mtime  # not trained again
        assert read_metrics(run_dir) == metrics
    assert not (result.out_dir / result.trials[2]["run_dir"] / "train.json").exists()
    # The trial the interrupt cut short went on from its checkpoint: its steps logged once each.
    ((trial, before),) = sweep.cut_short.items()
    steps = [m["step"] for m in read_metrics(result.out_dir / "trials" / trial) if "loss" in m]
    assert steps == sorted(set(steps)) and steps[-1] == 4
    assert [m for m in before if m["step"] <= 2] == [
        m for m in read_metrics(result.out_dir / "trials" / trial) if m["step"] <= 2
    ]
    params = [row["params"] for row in result.trials]
    assert sorted(p["train.aggregation"] for p in params) == ["ls", "stch", "tche"]
    assert all(0.05 <= p["train.beta"] <= 0.5 for p in params)
    assert len({p["train.beta"] for p in params}) == 3  # drawn per trial


def test_a_trial_tune_stops_gives_its_workers_back_and_each_ending_is_one_line(sweep):
    total = ray.cluster_resources()["CPU"]
    (free_before, holders_before), (free_after, holders_after) = sweep.free_before, sweep.free_after
    assert free_before == pytest.approx(total), holders_before
    assert free_after == pytest.approx(total), holders_after
    # One console line per trial that ends, instead of Tune's tables: the restored sweep ends the
    # trial Tune stopped, and the one the interrupt cut short unless its run ended meanwhile.
    stopped = sweep.result.trials[2]["trial"]
    lines = sweep.printed.splitlines()
    pattern = (
        r"trial \w+ ended at step \d: hypervolume \d+\.\d{4} \(coarse grid, validation prompts\)$"
    )
    assert lines and all(re.match(pattern, line) for line in lines), lines
    assert lines[-1].startswith(f"trial {stopped} ended at step 2:"), lines


def test_each_trial_reports_the_metrics_its_run_logged(sweep):
    result = sweep.result
    for row in result.trials:
        run_dir = result.out_dir / row["run_dir"]
        trial_cfg = load_config(run_dir / "config.yaml")
        assert trial_cfg.train.aggregation == row["params"]["train.aggregation"]
        assert trial_cfg.train.beta == row["params"]["train.beta"]
        # Tune's last result of the trial is what its run logged at that step (a trial Tune
        # stops may log a step or two more before its workers are gone).
        evaluated = {m["step"]: m for m in read_metrics(run_dir) if "hypervolume" in m}
        assert row["hypervolume"] == pytest.approx(evaluated[row["step"]]["hypervolume"])
        assert row["inner_product"] == pytest.approx(evaluated[row["step"]]["inner_product"])
        assert row["hypervolume"] >= 0 and row["compute"] > 0
        # Rank 0 of the trial's Ray Train workers evaluated during training and kept the best.
        assert sorted(evaluated)[: row["step"] // 2] == [2, 4][: row["step"] // 2]
        best = json.loads((run_dir / "best" / "best.json").read_text())
        assert best["hypervolume"] == max(m["hypervolume"] for m in evaluated.values())
        assert (run_dir / "best" / "adapter" / "adapter.safetensors").is_file()


def test_the_table_pareto_sets_and_best_config_are_written(sweep):
    cfg, result = sweep.cfg, sweep.result
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
        sum(line.startswith(f"| {r['trial']}") for r in saved for line in report.splitlines()) == 3
    )
    assert (out / "pareto.png").read_bytes().startswith(b"\x89PNG")

    best = load_config(result.best_config)
    trial = load_config(out / result.best["run_dir"] / "config.yaml").model_dump()
    trial["output_dir"] = f"{cfg.output_dir}-best"
    del trial["tune"]
    dumped = best.model_dump()
    del dumped["tune"]
    assert dumped == trial and best.tune.space == {}


def test_the_chosen_model_is_measured_on_the_test_prompts(sweep):
    """Trials are ranked on validation prompts; the best trial's best adapter is then measured on
    the test prompts, as an independent evaluation of that adapter here gives it."""
    result = sweep.result
    trial_cfg, tokenizer, model = run_folder.load_trained(
        result.out_dir / result.best["run_dir"], best=True
    )
    here = evaluate_on_grid(trial_cfg, model, tokenizer, with_base=False)
    assert result.test_front.points == pytest.approx(here.points, abs=1e-9)
    saved = json.loads((result.out_dir / "best_front" / "front.json").read_text())
    assert [p["preference"] for p in saved["points"]] == here.preferences.tolist()
    hypervolume = result.test_front.metrics()["hypervolume"]
    assert (
        f"measured on 4 test prompts over the λ grid of 3 points: hypervolume {hypervolume:.4f}"
        in (result.out_dir / "report.md").read_text()
    )


def test_the_best_config_trains_with_moa_train(sweep, capsys, monkeypatch, train_here):
    """moa train takes best.yaml as it is (trained in this process: Ray Train ran the trials)."""
    result = sweep.result
    monkeypatch.setattr(run_folder, "train", train_here)
    assert main(["train", str(result.best_config)]) == 0
    run_dir = load_config(result.best_config).output_dir
    assert "trained 4 steps" in capsys.readouterr().out
    assert (os.path.isdir(f"{run_dir}/adapter")) and os.path.isfile(f"{run_dir}/eval/front.json")


def cpus_free_within(seconds: float) -> float:
    """The cluster's free CPUs once every CPU is free again, or when `seconds` have passed."""
    deadline = time.monotonic() + seconds
    total = ray.cluster_resources()["CPU"]
    while ray.available_resources().get("CPU", 0) < total and time.monotonic() < deadline:
        time.sleep(0.5)
    return ray.available_resources().get("CPU", 0)


def cpus_free_and_holders() -> tuple[float, list[str]]:
    """(the free CPUs within 60 s, what holds the rest, for a failure's message)."""
    free = cpus_free_within(60)
    return free, live_actors() if free < ray.cluster_resources()["CPU"] else []


def live_actors() -> list[str]:
    """What holds the cluster's resources, for a failure's message."""
    from ray.util.state import list_actors

    address = ray.get_runtime_context().gcs_address
    alive = list_actors(address=address, filters=[("state", "=", "ALIVE")])
    groups = ray.util.placement_group_table().values()
    return [f"{a.class_name} ({a.pid})" for a in alive] + [
        f"placement group {g['name'] or g['placement_group_id']} {g['state']} {g['bundles']}"
        for g in groups
        if g["state"] != "REMOVED"
    ]
