"""The sweep's search space: every mistake named before any trial starts, the samplers Tune gets,
each trial's config, and the trials a sweep runs at once."""

import re

import pytest
from ray.tune.schedulers import ASHAScheduler

from orchestrator.cli import main
from orchestrator.config import load_config
from orchestrator.config.sweep_space import check_space, count_trials, trial_config
from orchestrator.distributed import tune as sweep
from orchestrator.distributed.tune import tune_space
from orchestrator.errors import MoaError
from orchestrator.recipes.sweep import check_sweep

SWEEPABLE = ["eval.every=2", "checkpoint.every=4"]


def config(space: str, *extra: str):
    return load_config(None, [f"tune.space={space}", *SWEEPABLE, *extra])


@pytest.mark.parametrize(
    ("space", "message"),
    [
        ("{}", "tune.space is empty: name at least one field to sweep"),
        ("{train.betta: {grid: [0.1]}}", "tune.space.train.betta: train has no field 'betta'"),
        ("{eval.num_prompts: {grid: [4]}}", "tune.space.eval.num_prompts: a sweep varies fields"),
        ("{train: {grid: [1]}}", "tune.space.train: a sweep varies fields of model, adapter"),
        ("{train.beta: {grid: [0.1, -1.0]}}", "tune.space.train.beta: the value -1.0 is refused"),
        ("{train.aggregation: {choice: [ls, max]}}", "the value 'max' is refused"),
        ("{train.aggregation: {uniform: [0, 1]}}", "uniform and loguniform need a numeric field"),
        ("{adapter.rank: {uniform: [2.5, 8]}}", "an integer field needs integer bounds"),
    ],
)
def test_a_bad_space_is_refused_naming_the_field(space, message):
    with pytest.raises(MoaError, match=re.escape(message)):
        check_space(load_config(None, [f"tune.space={space}"]))


@pytest.mark.parametrize(
    ("dimension", "message"),
    [
        ("{grid: []}", "grid needs at least one value"),
        ("{grid: [0.1], choice: [0.2]}", "give exactly one of grid, choice, uniform, loguniform"),
        ("{}", "give exactly one of"),
        ("{uniform: [0.5, 0.1]}", "uniform needs [low, high] with low < high"),
        ("{loguniform: [0.0, 0.1]}", "loguniform needs low > 0"),
        ("{normal: [0, 1]}", "normal"),
    ],
)
def test_a_bad_dimension_is_refused_when_the_config_loads(dimension, message):
    with pytest.raises(MoaError, match=r"tune\.space\.train\.beta") as err:
        load_config(None, [f"tune.space={{train.beta: {dimension}}}"])
    assert message in str(err.value)


def test_sweep_settings_are_checked_before_any_trial():
    space = "{train.beta: {grid: [0.1]}}"
    with pytest.raises(MoaError, match=r"eval\.every > 0"):
        check_sweep(load_config(None, [f"tune.space={space}"]))
    with pytest.raises(MoaError, match=r"checkpoint.every \(3\) must be a multiple of eval.every"):
        check_sweep(load_config(None, [f"tune.space={space}", "eval.every=2",
                                             "checkpoint.every=3"]))  # fmt: skip


def test_moa_tune_refuses_a_bad_sweep_and_writes_nothing(tmp_path, capsys):
    path = tmp_path / "sweep.yaml"
    out = tmp_path / "out"
    path.write_text(
        f"output_dir: {out}\ntune:\n  space:\n    train.learning_rat: {{grid: [0.1]}}\n"
    )
    assert main(["tune", str(path)]) == 2
    assert "moa tune: error: tune.space.train.learning_rat: train has no field" in (
        capsys.readouterr().err
    )
    assert not out.exists()


def test_tune_gets_a_sampler_per_dimension_with_integers_for_integer_fields():
    cfg = config(
        "{train.aggregation: {grid: [ls, tche]}, adapter.rank: {uniform: [2, 4]},"
        " train.beta: {loguniform: [0.05, 0.5]}, train.stch_mu: {choice: [0.1, 0.3]},"
        " train.max_steps: {loguniform: [10, 100]}}"
    )
    check_space(cfg)
    space = tune_space(cfg)
    assert space["train.aggregation"] == {"grid_search": ["ls", "tche"]}
    ranks = {space["adapter.rank"].sample() for _ in range(200)}
    assert ranks == {2, 3, 4}  # both bounds included
    steps = [space["train.max_steps"].sample() for _ in range(200)]
    assert all(isinstance(s, int) and 10 <= s <= 100 for s in steps)
    betas = [space["train.beta"].sample() for _ in range(200)]
    assert all(0.05 <= b <= 0.5 for b in betas) and min(betas) < 0.1 < max(betas)
    assert {space["train.stch_mu"].sample() for _ in range(100)} == {0.1, 0.3}


def test_a_trial_config_is_the_sweep_config_with_the_trial_values(tmp_path):
    cfg = config("{train.beta: {grid: [0.1, 0.2]}, adapter.rank: {choice: [4, 8]}}")
    trial = trial_config(cfg, {"train.beta": 0.2, "adapter.rank": 4}, str(tmp_path / "t1"))
    assert (trial.train.beta, trial.adapter.rank, trial.output_dir) == (
        0.2,
        4,
        str(tmp_path / "t1"),
    )
    expected = cfg.model_dump()
    expected["train"]["beta"], expected["adapter"]["rank"] = 0.2, 4
    expected["output_dir"] = str(tmp_path / "t1")
    assert trial.model_dump() == expected


def test_trials_are_the_grid_combinations_times_the_samples():
    cfg = config(
        "{train.aggregation: {grid: [ls, tche, stch]}, adapter.rank: {grid: [4, 8]},"
        " train.beta: {uniform: [0.05, 0.5]}}",
        "tune.num_samples=2",
    )
    assert count_trials(cfg) == 12


def test_concurrent_trials_fit_the_largest_worker_group(monkeypatch):
    import ray

    cfg = config("{scaling.num_workers: {grid: [1, 2]}}", "scaling.cpus_per_worker=1.5")
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 13.0})
    assert sweep.concurrent_trials(cfg) == 4  # 13 // (2 × 1.5)
    gpu = config("{train.beta: {grid: [0.1]}}", "scaling.num_workers=2", "scaling.use_gpu=true")
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 16.0, "GPU": 5.0})
    assert sweep.concurrent_trials(gpu) == 2
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 16.0})
    with pytest.raises(MoaError, match="cannot hold one trial's 2 workers"):
        sweep.concurrent_trials(gpu)
    fixed = config("{train.beta: {grid: [0.1]}}", "tune.max_concurrent_trials=3")
    assert sweep.concurrent_trials(fixed) == 3


def test_asha_stops_on_the_metric_at_step_milestones():
    cfg = config(
        "{train.max_steps: {choice: [100, 300]}}",
        "tune.scheduler=asha",
        "tune.grace_period=20",
        "tune.reduction_factor=3",
        "tune.metric=inner_product",
        "tune.max_concurrent_trials=1",
    )
    tune_cfg = sweep.tune_config(cfg)
    scheduler = tune_cfg.scheduler
    assert isinstance(scheduler, ASHAScheduler)
    assert (tune_cfg.metric, tune_cfg.mode) == ("inner_product", "max")
    assert scheduler._time_attr == "step"
    assert scheduler._reduction_factor == 3
    # Milestones: grace × rf^k before the last step; a trial that reaches it is not stopped.
    assert sorted(milestone for milestone, _ in scheduler._brackets[0]._rungs) == [20, 60, 180]
    assert scheduler._stop_last_trials is False
    # 180 steps: no milestone at step 180, where the run saves its adapter.
    last = sweep.tune_config(config("{train.beta: {grid: [0.1]}}", "train.max_steps=180",
                                    "tune.scheduler=asha", "tune.grace_period=20",
                                    "tune.reduction_factor=3",
                                    "tune.max_concurrent_trials=1")).scheduler  # fmt: skip
    assert sorted(milestone for milestone, _ in last._brackets[0]._rungs) == [20, 60]


def test_asha_needs_a_milestone_before_the_last_step():
    cfg = config("{train.beta: {grid: [0.1]}}", "train.max_steps=50", "tune.scheduler=asha")
    with pytest.raises(MoaError, match=r"tune.grace_period \(50\) must be less than "
                                       r"train.max_steps \(50\)"):  # fmt: skip
        check_sweep(cfg)
    check_sweep(config("{train.beta: {grid: [0.1]}}", "train.max_steps=50"))  # fifo
